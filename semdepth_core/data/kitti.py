"""KITTI raw data layer: calibration, OXTS, timestamps, Velodyne, depth PNGs and the drive index.

Layout (Geiger et al., IJRR 2013)::

    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <root>/<date>/<date>_drive_XXXX_sync/
        image_0{2,3}/data/NNNNNNNNNN.png, image_0X/timestamps.txt
        oxts/data/NNNNNNNNNN.txt, oxts/timestamps.txt
        velodyne_points/data/NNNNNNNNNN.bin
        proj_depth/groundtruth/image_0X/NNNNNNNNNN.png   (optional dense GT, e.g. synthetic drives)
        semantic/image_0X/NNNNNNNNNN.png, dynamic/image_0X/NNNNNNNNNN.png (optional)

Conventions (docs/architecture.md): `T_a_b` maps points in frame b to frame a; camera frames are
the *rectified* optical frames (x right, y down, z forward); depth in metres, 0 = invalid.

Drives may be cut short: `timestamps.txt` can list more frames than exist on disk, so the frame
index is built from the image files present, and timestamps are looked up by frame number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from semdepth_core.geometry.camera import resize_intrinsics
from semdepth_core.geometry.se3 import euler_to_matrix_np, invert_se3_np
from semdepth_core.validation import intrinsics_problem

PathLike = str | Path

STEREO_PARTNER = {0: 1, 1: 0, 2: 3, 3: 2}  # rectified stereo pairs: grey 0/1, colour 2/3
GREY_CAMS = (0, 1)
EARTH_RADIUS = 6378137.0  # WGS84 equatorial radius used by the KITTI devkit (m)
DEPTH_PNG_SCALE = 256.0  # KITTI depth PNGs: uint16 = round(depth * 256), 0 = invalid
_FRAME_RE = re.compile(r"^(\d{10})\.(png|txt|bin|npz)$")


class KittiFormatError(ValueError):
    """A KITTI file is malformed or inconsistent; the message names the file and the problem."""


class KittiMissingFileError(KittiFormatError, FileNotFoundError):
    """A required KITTI file or folder does not exist (catchable as FileNotFoundError too)."""


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise KittiMissingFileError(f"{path}: missing {what}")
    return path


def read_text_file(path: PathLike, what: str) -> str:
    """The text of a KITTI text file; missing or not UTF-8/ASCII text -> KittiFormatError."""
    path = _require_file(Path(path), what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KittiFormatError(f"{path}: {what} is not text (byte {exc.start}: {exc.reason})") from None


def frame_name(frame: int, ext: str) -> str:
    """KITTI file name of a frame: 10-digit zero-padded index plus extension ('png', 'txt', 'bin')."""
    return f"{int(frame):010d}.{ext}"


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

def read_calib_file(path: PathLike) -> dict[str, np.ndarray | str]:
    """Parse a KITTI calibration file of `key: values` lines.

    Numeric values become float64 1-D arrays; values with no numeric token at all (such as
    `calib_time: 09-Jan-2012 13:57:47`) are kept as the stripped string. A line without a colon,
    with an empty key or value, a duplicate key, or mixing numbers and text raises KittiFormatError.
    """
    path = Path(path)
    text = read_text_file(path, "calibration file")
    out: dict[str, np.ndarray | str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or " " in key:
            raise KittiFormatError(f"{path}:{lineno}: expected 'key: values', got {raw!r}")
        if not value:
            raise KittiFormatError(f"{path}:{lineno}: key {key!r} has no value")
        if key in out:
            raise KittiFormatError(f"{path}:{lineno}: duplicate key {key!r}")
        tokens = value.split()
        numeric = []
        for tok in tokens:
            try:
                numeric.append(float(tok))
            except ValueError:
                numeric.append(None)
        n_num = sum(v is not None for v in numeric)
        if n_num == len(tokens):
            arr = np.asarray(numeric, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise KittiFormatError(f"{path}:{lineno}: key {key!r} has non-finite values")
            out[key] = arr
        elif n_num == 0:
            out[key] = value
        else:
            raise KittiFormatError(f"{path}:{lineno}: key {key!r} mixes numbers and text: {value!r}")
    return out


def _calib_array(calib: dict, key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if key not in calib:
        raise KittiFormatError(f"{path}: missing key {key!r}")
    val = calib[key]
    n = int(np.prod(shape))
    if isinstance(val, str) or val.size != n:
        got = "text" if isinstance(val, str) else f"{val.size} numbers"
        raise KittiFormatError(f"{path}: key {key!r} needs {n} numbers for shape {shape}, got {got}")
    return val.reshape(shape)


def _rt_to_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


@dataclass
class KittiCalib:
    """Calibration of one KITTI recording date.

    P_rect: {cam: 3x4} rectified projection matrices (cam 0..3); R_rect_00: 3x3 rectifying
    rotation of cam 0; S_rect: {cam: (W, H)} rectified image sizes; T_cam0_velo: 4x4 velodyne ->
    *unrectified* cam 0; T_velo_imu: 4x4 IMU/GPS -> velodyne (None when the file is absent).
    """

    P_rect_all: dict[int, np.ndarray]
    R_rect_00: np.ndarray
    S_rect: dict[int, tuple[int, int]]
    T_cam0_velo: np.ndarray
    T_velo_imu: np.ndarray | None = None
    source: Path | None = None

    @classmethod
    def from_date_dir(cls, date_dir: PathLike) -> "KittiCalib":
        date_dir = Path(date_dir)
        if not date_dir.is_dir():
            raise KittiMissingFileError(f"{date_dir}: calibration date folder does not exist")
        c2c_path = date_dir / "calib_cam_to_cam.txt"
        c2c = read_calib_file(c2c_path)
        P, S = {}, {}
        for cam in range(4):
            P[cam] = _calib_array(c2c, f"P_rect_0{cam}", (3, 4), c2c_path)
            w, h = _calib_array(c2c, f"S_rect_0{cam}", (2,), c2c_path)
            if w <= 0 or h <= 0 or w != int(w) or h != int(h):
                raise KittiFormatError(f"{c2c_path}: S_rect_0{cam} must be positive integers, got {w} {h}")
            S[cam] = (int(w), int(h))
            reason = intrinsics_problem(P[cam][:, :3], *S[cam], principal_point=False)
            if P[cam][0, 0] <= 0 or P[cam][1, 1] <= 0 or reason:  # the node's plausibility rule, shared
                raise KittiFormatError(f"{c2c_path}: P_rect_0{cam} is not a plausible camera for "
                                       f"{S[cam][0]}x{S[cam][1]} images ({reason or 'non-positive focal length'})")
        R_rect = _calib_array(c2c, "R_rect_00", (3, 3), c2c_path)

        v2c_path = date_dir / "calib_velo_to_cam.txt"
        v2c = read_calib_file(v2c_path)
        T_cam0_velo = _rt_to_T(_calib_array(v2c, "R", (3, 3), v2c_path), _calib_array(v2c, "T", (3,), v2c_path))

        i2v_path = date_dir / "calib_imu_to_velo.txt"
        T_velo_imu = None
        if i2v_path.exists():
            i2v = read_calib_file(i2v_path)
            T_velo_imu = _rt_to_T(_calib_array(i2v, "R", (3, 3), i2v_path), _calib_array(i2v, "T", (3,), i2v_path))
        return cls(P, R_rect, S, T_cam0_velo, T_velo_imu, date_dir)

    def _check_cam(self, cam: int) -> int:
        if cam not in self.P_rect_all:
            raise ValueError(f"camera index must be 0..3, got {cam!r}")
        return cam

    def image_size(self, cam: int = 2) -> tuple[int, int]:
        """Rectified image size (W, H) of camera `cam` (S_rect_0x)."""
        return self.S_rect[self._check_cam(cam)]

    def P_rect(self, cam: int = 2) -> np.ndarray:
        return self.P_rect_all[self._check_cam(cam)].copy()

    def K(self, cam: int = 2, size: tuple[int, int] | None = None) -> np.ndarray:
        """3x3 intrinsics of rectified camera `cam`; at `size=(W, H)` resized with the half-pixel rule."""
        K = self.P_rect(cam)[:, :3].copy()
        if size is not None and tuple(size) != self.image_size(cam):
            K = resize_intrinsics(K, self.image_size(cam), tuple(size))
        return K

    @property
    def baseline(self) -> float:
        """Stereo baseline between rectified cams 2 and 3 in metres: |tx2 - tx3| / fx."""
        P2, P3 = self.P_rect_all[2], self.P_rect_all[3]
        return float(abs(P2[0, 3] - P3[0, 3]) / P2[0, 0])

    def T_camrect_cam0rect(self, cam: int = 2) -> np.ndarray:
        """Rectified cam 0 -> rectified cam `cam`: pure translation t = K^-1 P_rect[:, 3].

        This is the exact decomposition P_rect = K [I | t]; its x component is ~P_rect[0,3]/fx
        (the small z offset of cams 2/3 is kept so that K @ T @ X reproduces P_rect @ X exactly).
        """
        P = self.P_rect(cam)
        T = np.eye(4)
        T[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
        return T

    @property
    def T_rect0_cam0(self) -> np.ndarray:
        """Unrectified cam 0 -> rectified cam 0 (R_rect_00)."""
        T = np.eye(4)
        T[:3, :3] = self.R_rect_00
        return T

    def T_cam_velo(self, cam: int = 2) -> np.ndarray:
        """Velodyne -> rectified camera `cam` (includes R_rect_00 and the P_rect offset)."""
        return self.T_camrect_cam0rect(cam) @ self.T_rect0_cam0 @ self.T_cam0_velo

    def T_cam_imu(self, cam: int = 2) -> np.ndarray:
        """IMU/GPS (OXTS) frame -> rectified camera `cam`."""
        if self.T_velo_imu is None:
            raise KittiMissingFileError(f"{self.source}: calib_imu_to_velo.txt is missing")
        return self.T_cam_velo(cam) @ self.T_velo_imu


# --------------------------------------------------------------------------------------------
# OXTS
# --------------------------------------------------------------------------------------------

OXTS_FIELDS: tuple[str, ...] = (
    "lat", "lon", "alt", "roll", "pitch", "yaw",
    "vn", "ve", "vf", "vl", "vu",
    "ax", "ay", "az", "af", "al", "au",
    "wx", "wy", "wz", "wf", "wl", "wu",
    "pos_accuracy", "vel_accuracy", "navstat", "numsats", "posmode", "velmode", "orimode",
)


@dataclass(frozen=True)
class OxtsPacket:
    """One OXTS record (the 30 fields of oxts/dataformat.txt, SI units, angles in rad / deg for lat-lon).

    Fields are attributes (`p.vf`) and also reachable by name (`p["vf"]`).
    """

    lat: float; lon: float; alt: float; roll: float; pitch: float; yaw: float  # noqa: E702
    vn: float; ve: float; vf: float; vl: float; vu: float  # noqa: E702
    ax: float; ay: float; az: float; af: float; al: float; au: float  # noqa: E702
    wx: float; wy: float; wz: float; wf: float; wl: float; wu: float  # noqa: E702
    pos_accuracy: float; vel_accuracy: float  # noqa: E702
    navstat: int; numsats: int; posmode: int; velmode: int; orimode: int  # noqa: E702

    def __getitem__(self, name: str):
        if name not in OXTS_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def as_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in OXTS_FIELDS}

    @property
    def speed(self) -> float:
        """Norm of the body-frame velocity (vf, vl, vu) in m/s."""
        return float(np.sqrt(self.vf ** 2 + self.vl ** 2 + self.vu ** 2))

    @property
    def yaw_rate(self) -> float:
        """Angular rate around the upward axis (wu), rad/s."""
        return self.wu


assert tuple(f.name for f in fields(OxtsPacket)) == OXTS_FIELDS
_OXTS_INT_FIELDS = {"navstat", "numsats", "posmode", "velmode", "orimode"}


def parse_oxts_line(line: str, source: str = "<oxts>") -> OxtsPacket:
    """Parse one OXTS line of exactly 30 whitespace-separated numbers."""
    tokens = line.split()
    if len(tokens) != len(OXTS_FIELDS):
        raise KittiFormatError(f"{source}: OXTS line needs {len(OXTS_FIELDS)} fields, got {len(tokens)}")
    values = {}
    for name, tok in zip(OXTS_FIELDS, tokens):
        try:
            v = float(tok)
        except ValueError:
            raise KittiFormatError(f"{source}: OXTS field {name!r} is not a number: {tok!r}") from None
        if not np.isfinite(v):
            raise KittiFormatError(f"{source}: OXTS field {name!r} is not finite: {tok!r}")
        if name in _OXTS_INT_FIELDS:
            if v != int(v):
                raise KittiFormatError(f"{source}: OXTS field {name!r} must be an integer, got {tok!r}")
            v = int(v)
        values[name] = v
    return OxtsPacket(**values)


def read_oxts(path: PathLike) -> OxtsPacket:
    """Read one OXTS file (a single line of 30 numbers)."""
    path = Path(path)
    lines = [ln for ln in read_text_file(path, "OXTS file").splitlines() if ln.strip()]
    if len(lines) != 1:
        raise KittiFormatError(f"{path}: expected exactly one OXTS line, found {len(lines)}")
    return parse_oxts_line(lines[0], str(path))


def read_oxts_dir(oxts_dir: PathLike, frames: list[int] | None = None) -> list[OxtsPacket]:
    """Read the OXTS packets of a drive's `oxts` (or `oxts/data`) folder, all files or `frames`."""
    d = Path(oxts_dir)
    if (d / "data").is_dir():
        d = d / "data"
    if not d.is_dir():
        raise KittiMissingFileError(f"{d}: OXTS data folder does not exist")
    if frames is None:
        frames = sorted(int(m.group(1)) for p in d.iterdir() if (m := _FRAME_RE.match(p.name)) and m.group(2) == "txt")
    return [read_oxts(d / frame_name(f, "txt")) for f in frames]


def oxts_poses(packets: list[OxtsPacket], lat0: float | None = None) -> np.ndarray:
    """[N,4,4] float64 poses T_world_imu from OXTS packets (KITTI devkit Mercator projection).

    Mercator scale s = cos(lat0) with lat0 the first packet's latitude (or `lat0` given, degrees);
    t = (s*r*lon*pi/180, s*r*ln(tan((90+lat)*pi/360)), alt), r = 6378137 m; R = Rz(yaw)Ry(pitch)Rx(roll).
    World frame: x east, y north, z up, **origin at the first packet's position, orientation
    absolute** (not rotated into the first frame). Relative poses inv(T_i) @ T_j are unaffected.
    """
    if len(packets) == 0:
        raise ValueError("oxts_poses needs at least one packet")
    a = np.array([[p.lat, p.lon, p.alt, p.roll, p.pitch, p.yaw] for p in packets], dtype=np.float64)
    lat, lon, alt, roll, pitch, yaw = a.T
    s = np.cos(np.deg2rad(lat[0] if lat0 is None else lat0))
    t = np.stack([
        s * EARTH_RADIUS * np.deg2rad(lon),
        s * EARTH_RADIUS * np.log(np.tan(np.deg2rad(90.0 + lat) / 2.0)),
        alt,
    ], axis=1)
    T = np.tile(np.eye(4), (len(packets), 1, 1))
    T[:, :3, :3] = euler_to_matrix_np(roll, pitch, yaw)
    T[:, :3, 3] = t - t[0]
    return T


def camera_poses(packets: list[OxtsPacket], calib: KittiCalib, cam: int = 2) -> np.ndarray:
    """[N,4,4] poses T_world_cam of rectified camera `cam` (world as in `oxts_poses`)."""
    return oxts_poses(packets) @ invert_se3_np(calib.T_cam_imu(cam))[None]


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------

_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})?$")


def read_timestamps(path: PathLike) -> np.ndarray:
    """float64 seconds since the Unix epoch, one per line (`2011-09-26 13:02:25.964389445`).

    Nanosecond strings are parsed exactly (datetime64[ns]) before conversion to float seconds.
    Trailing blank lines are ignored; any other malformed line raises KittiFormatError.
    """
    path = Path(path)
    lines = read_text_file(path, "timestamps file").rstrip("\n\r \t").splitlines()
    for lineno, ln in enumerate(lines, start=1):
        if not _TS_RE.match(ln.strip()):
            raise KittiFormatError(f"{path}:{lineno}: malformed timestamp {ln!r}")
    if not lines:
        return np.zeros(0, dtype=np.float64)
    try:
        ns = np.array([ln.strip() for ln in lines], dtype="datetime64[ns]").astype(np.int64)
    except ValueError as e:
        raise KittiFormatError(f"{path}: invalid timestamp ({e})") from None
    # split integer seconds and nanoseconds so the float conversion loses nothing avoidable
    return (ns // 1_000_000_000).astype(np.float64) + (ns % 1_000_000_000).astype(np.float64) * 1e-9


# --------------------------------------------------------------------------------------------
# Velodyne and depth maps
# --------------------------------------------------------------------------------------------

def load_velodyne(path: PathLike) -> np.ndarray:
    """[N,4] float32 (x, y, z, reflectance) from a KITTI Velodyne .bin file."""
    path = _require_file(Path(path), "Velodyne scan")
    size = path.stat().st_size
    if size % 16:
        raise KittiFormatError(f"{path}: size {size} bytes is not a multiple of 16 (4 float32 per point)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


# Where a LiDAR point lands on the pixel grid.
#   "kitti":   round(u) - 1, round(v) - 1: the published ground truth (the KITTI devkit's MATLAB indexing as
#              carried into monodepth2's `generate_depth_map` and every Eigen-split table since). Use it for
#              numbers that are compared with published ones. Defined at the native (S_rect) resolution.
#   "nearest": round(u), round(v): the pixel whose centre is nearest under this project's convention
#              (pixel centres at integer coordinates).
# A perfectly aligned prediction scores about 0.006 abs_rel apart between the two on KITTI frames.
GT_PLACEMENTS = ("kitti", "nearest")
DEFAULT_GT_PLACEMENT = "kitti"


def project_points_to_depth(points_cam: np.ndarray, K: np.ndarray, size: tuple[int, int],
                            placement: str = DEFAULT_GT_PLACEMENT) -> np.ndarray:
    """Sparse depth map [H,W] float32 from points [N,3] already in the camera frame.

    Points with z <= 0 are dropped; (u, v) = K X / z are placed by `placement` (GT_PLACEMENTS: "kitti",
    the published protocol's round-then-minus-one, or "nearest"); points outside the image are dropped;
    when several points land on one pixel the nearest wins.
    """
    if placement not in GT_PLACEMENTS:
        raise ValueError(f"placement must be one of {GT_PLACEMENTS}, got {placement!r}")
    W, H = int(size[0]), int(size[1])
    depth = np.zeros((H, W), dtype=np.float32)
    X = np.asarray(points_cam, dtype=np.float64)
    X = X[X[:, 2] > 0]
    if X.shape[0] == 0:
        return depth
    uvw = X @ np.asarray(K, dtype=np.float64).T
    z = uvw[:, 2]
    shift = 1 if placement == "kitti" else 0
    u = np.round(uvw[:, 0] / z).astype(np.int64) - shift
    v = np.round(uvw[:, 1] / z).astype(np.int64) - shift
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v, z = u[inside], v[inside], z[inside]
    lin = v * W + u
    order = np.lexsort((z, lin))  # by pixel, then nearest first
    lin_sorted = lin[order]
    first = np.ones(lin_sorted.shape, dtype=bool)
    first[1:] = lin_sorted[1:] != lin_sorted[:-1]
    depth.reshape(-1)[lin_sorted[first]] = z[order][first]
    return depth


def velodyne_depth(points: np.ndarray, calib: KittiCalib, cam: int = 2,
                   size: tuple[int, int] | None = None, placement: str = DEFAULT_GT_PLACEMENT) -> np.ndarray:
    """Project a Velodyne scan into rectified camera `cam`: depth [H,W] float32 metres, 0 = invalid.

    Equivalent to P_rect_0cam @ R_rect_00 @ Tr_velo_to_cam; depth is the z of the point in the
    rectified camera frame. At `size=(W, H)` (default S_rect) the intrinsics are resized with
    the half-pixel rule. See `project_points_to_depth` for the pixel placement and occlusions.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be [N,3] or [N,4], got shape {pts.shape}")
    size = calib.image_size(cam) if size is None else (int(size[0]), int(size[1]))
    T = calib.T_cam_velo(cam)
    X = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    return project_points_to_depth(X, calib.K(cam, size), size, placement)


PROJECTED_DEPTH_KEY = "velodyne_depth"


def read_projected_depth(path: PathLike, key: str = PROJECTED_DEPTH_KEY) -> np.ndarray:
    """LiDAR already projected into a camera (packnet-sfm's `proj_depth/velodyne/image_0X/*.npz`):
    float32 metres [H,W], 0 = no return. A missing key, another shape or bad values raise KittiFormatError."""
    path = _require_file(Path(path), "projected LiDAR depth")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise KittiFormatError(f"{path}: no array {key!r} in the npz (it holds {sorted(npz.files)})")
            depth = np.asarray(npz[key])
    except KittiFormatError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise KittiFormatError(f"{path}: cannot read the npz ({type(exc).__name__}: {exc})") from None
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise KittiFormatError(f"{path}: {key!r} must be a float [H,W] depth map, got {depth.dtype} {depth.shape}")
    depth = depth.astype(np.float32)
    if not np.all(np.isfinite(depth)) or depth.min(initial=0.0) < 0:
        raise KittiFormatError(f"{path}: {key!r} holds negative or non-finite depths")
    return depth


def _read_single_channel_png(path: PathLike, dtype, what: str) -> np.ndarray:
    """A single-channel PNG of exactly `dtype` -> [H,W]; anything else is a KittiFormatError."""
    path = _require_file(Path(path), what)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise KittiFormatError(f"{path}: cannot decode {what}")
    if img.dtype != dtype or img.ndim != 2:
        raise KittiFormatError(f"{path}: {what} must be single-channel {np.dtype(dtype)}, got {img.dtype} {img.shape}")
    return img


def read_depth_png(path: PathLike) -> np.ndarray:
    """KITTI depth PNG (uint16 = depth*256, 0 = invalid) -> float32 metres [H,W]."""
    return _read_single_channel_png(path, np.uint16, "depth PNG").astype(np.float32) / DEPTH_PNG_SCALE


def write_depth_png(path: PathLike, depth: np.ndarray) -> None:
    """Write depth [H,W] metres as a KITTI depth PNG; non-finite or <= 0 become 0 (invalid).

    Values are rounded to 1/256 m; depths above 65535/256 (~256 m) raise ValueError.
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H,W], got shape {d.shape}")
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
    if d.max(initial=0.0) > 65535 / DEPTH_PNG_SCALE:
        raise ValueError(f"depth up to {d.max():.1f} m exceeds the depth PNG range (255.99 m)")
    q = np.round(d * DEPTH_PNG_SCALE).astype(np.uint16)
    if not cv2.imwrite(str(path), q):
        raise OSError(f"{path}: could not write depth PNG")


def read_rgb(path: PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB image."""
    path = _require_file(Path(path), "image")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise KittiFormatError(f"{path}: cannot decode image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image_as_rgb(path: PathLike, expect: str | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB from a colour or greyscale 8-bit PNG (grey is replicated to three channels).

    expect: "grey" or "colour" to refuse the other kind with a KittiFormatError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise KittiMissingFileError(f"{path}: missing image")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise KittiFormatError(f"{path}: cannot decode image")
    if img.dtype != np.uint8:
        raise KittiFormatError(f"{path}: expected an 8-bit image, got {img.dtype}")
    grey = img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)
    if expect is not None and expect not in ("grey", "colour"):
        raise ValueError(f"expect must be 'grey', 'colour' or None, got {expect!r}")
    if expect == "grey" and not grey:
        raise KittiFormatError(f"{path}: a colour image in a greyscale camera folder (mixed greyscale and colour "
                               "inputs in one sequence)")
    if expect == "colour" and grey:
        raise KittiFormatError(f"{path}: a greyscale image in a colour camera folder (mixed greyscale and colour "
                               "inputs in one sequence)")
    if grey:
        return np.ascontiguousarray(np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label_png(path: PathLike) -> np.ndarray:
    """Single-channel uint8 PNG (semantic trainIds or dynamic mask) -> HxW uint8."""
    return _read_single_channel_png(path, np.uint8, "label PNG")


# --------------------------------------------------------------------------------------------
# Drive index
# --------------------------------------------------------------------------------------------

def _frames_in(folder: Path, ext: str) -> set[int]:
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := _FRAME_RE.match(p.name)) and m.group(2) == ext}


class CameraFrames:
    """Frame numbers of a recording with several cameras (a raw drive, an odometry sequence): per camera, and
    `frames`, those every camera has."""

    def _index_frames(self, per_cam: dict[int, set[int]]) -> None:
        """Keep each camera's frame numbers; `frames` are the ones all of them have, sorted."""
        self._cam_frames = per_cam
        self.frames: list[int] = sorted(set.intersection(*per_cam.values())) if per_cam else []
        self._frame_set = set(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __contains__(self, frame: int) -> bool:
        return frame in self._frame_set

    def has(self, frame: int, cam: int) -> bool:
        """True when camera `cam` (one of `cams`) has an image for `frame`."""
        return frame in self._cam_frames.get(cam, ())

    def frames_with_context(self, offsets: tuple[int, ...] = (-1, 1), cam: int | None = None) -> list[int]:
        """Frames f such that every f + o (o in offsets) is also present (for camera `cam` only, if given)."""
        if cam is not None:
            have = self._cam_frames.get(cam, set())
            return sorted(f for f in have if all(f + o in have for o in offsets))
        return [f for f in self.frames if all(f + o in self._frame_set for o in offsets)]


class KittiDrive(CameraFrames):
    """Index of one `<date>/<date>_drive_XXXX_sync` folder.

    `frames` are the frame numbers whose image exists for every camera in `cams` (the drive may
    be cut short relative to its timestamps files). Per-frame timestamps are taken by frame index.
    """

    def __init__(self, drive_dir: PathLike, cams: tuple[int, ...] = (2,)):
        self.path = Path(drive_dir)
        if not self.path.is_dir():
            raise KittiMissingFileError(f"{self.path}: drive folder does not exist")
        self.cams = tuple(int(c) for c in cams)
        self.date_dir = self.path.parent
        self.date = self.date_dir.name
        self.drive = self.path.name
        self._index_frames({c: _frames_in(self.path / f"image_0{c}" / "data", "png") for c in self.cams})
        self._oxts_cache: dict[int, OxtsPacket] = {}
        self._ts_cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"KittiDrive({self.path}, {len(self.frames)} frames)"

    @cached_property
    def calib(self) -> KittiCalib:
        return KittiCalib.from_date_dir(self.date_dir)

    # paths ----------------------------------------------------------------------------------
    def image_path(self, frame: int, cam: int = 2) -> Path:
        return self.path / f"image_0{cam}" / "data" / frame_name(frame, "png")

    def _optional(self, p: Path) -> Path | None:
        return p if p.is_file() else None

    def velodyne_path(self, frame: int) -> Path | None:
        return self._optional(self.path / "velodyne_points" / "data" / frame_name(frame, "bin"))

    def oxts_path(self, frame: int) -> Path | None:
        return self._optional(self.path / "oxts" / "data" / frame_name(frame, "txt"))

    def projected_depth_path(self, frame: int, cam: int = 2) -> Path | None:
        """LiDAR already projected into camera `cam` (`proj_depth/velodyne/image_0X/*.npz`), if present."""
        return self._optional(self.path / "proj_depth" / "velodyne" / f"image_0{cam}" / frame_name(frame, "npz"))

    def dense_depth_path(self, frame: int, cam: int = 2) -> Path | None:
        return self._optional(self.path / "proj_depth" / "groundtruth" / f"image_0{cam}" / frame_name(frame, "png"))

    def semantic_path(self, frame: int, cam: int = 2) -> Path | None:
        return self._optional(self.path / "semantic" / f"image_0{cam}" / frame_name(frame, "png"))

    def dynamic_path(self, frame: int, cam: int = 2) -> Path | None:
        return self._optional(self.path / "dynamic" / f"image_0{cam}" / frame_name(frame, "png"))

    # availability ---------------------------------------------------------------------------
    @cached_property
    def has_oxts(self) -> bool:
        """True when an OXTS file exists for every indexed frame."""
        return bool(self.frames) and self._frame_set <= _frames_in(self.path / "oxts" / "data", "txt")

    @cached_property
    def has_velodyne(self) -> bool:
        """True when a Velodyne scan exists for every indexed frame."""
        return bool(self.frames) and self._frame_set <= _frames_in(self.path / "velodyne_points" / "data", "bin")

    # data -----------------------------------------------------------------------------------
    def _require_frame(self, frame: int) -> None:
        if frame not in self._frame_set:
            raise KittiMissingFileError(f"{self.path}: frame {frame} is not present (cams {self.cams})")

    def oxts(self, frame: int) -> OxtsPacket:
        if frame not in self._oxts_cache:
            self._oxts_cache[frame] = read_oxts(self.path / "oxts" / "data" / frame_name(frame, "txt"))
        return self._oxts_cache[frame]

    def timestamps(self, sensor: str = "image_02") -> np.ndarray:
        """All timestamps (s) of `sensor` ('image_02', 'image_03', 'oxts', 'velodyne_points')."""
        if sensor not in self._ts_cache:
            self._ts_cache[sensor] = read_timestamps(self.path / sensor / "timestamps.txt")
        return self._ts_cache[sensor]

    def has_timestamps(self, sensor: str = "image_02") -> bool:
        return (self.path / sensor / "timestamps.txt").is_file()

    def timestamp(self, frame: int, sensor: str = "image_02") -> float:
        ts = self.timestamps(sensor)
        if not 0 <= frame < len(ts):
            raise KittiFormatError(f"{self.path / sensor / 'timestamps.txt'}: no timestamp for frame {frame} "
                                   f"({len(ts)} lines)")
        return float(ts[frame])

    def load_image(self, frame: int, cam: int = 2) -> np.ndarray:
        """HxWx3 uint8 RGB (cams 0/1 are greyscale, replicated; a colour file there, or a grey one in 2/3, is an error)."""
        return read_image_as_rgb(self.image_path(frame, cam), "grey" if cam in GREY_CAMS else "colour")

    # the sequence interface shared with OdometrySequence (data/dataset.py) -------------------
    @property
    def name(self) -> str:
        return f"{self.date}/{self.drive}"

    def native_size(self, cam: int = 2) -> tuple[int, int]:
        return self.calib.image_size(cam)

    def size_source(self, cam: int = 2) -> str:
        """Where `native_size` comes from (for error messages)."""
        return f"S_rect_0{cam} in {self.date_dir}"

    def label_paths(self, frame: int, cam: int = 2) -> list:
        """[(item key, path, torch dtype)] of the label maps present (synthetic drives)."""
        import torch

        out = []
        for key, p, dtype in (("semantic_gt", self.semantic_path(frame, cam), torch.int64),
                              ("dynamic_gt", self.dynamic_path(frame, cam), torch.uint8)):
            if p is not None:
                out.append((key, p, dtype))
        return out

    def K(self, cam: int = 2, size: tuple[int, int] | None = None) -> np.ndarray:
        return self.calib.K(cam, size)

    def stereo_partner(self, cam: int) -> int | None:
        """The other camera of `cam`'s rectified stereo pair when it is indexed, else None."""
        other = STEREO_PARTNER[cam]
        return other if other in self.cams else None

    def T_between(self, dst: int, src: int) -> np.ndarray:
        """Maps points of rectified camera `src` into rectified camera `dst` (e.g. T_cam3_cam2)."""
        return self.calib.T_camrect_cam0rect(dst) @ invert_se3_np(self.calib.T_camrect_cam0rect(src))

    def motion(self, frame: int, ctx_frames: list[int], cam: int) -> dict:
        """From OXTS, when the drive has it: speed (m/s), dt [N] (s, camera timestamps else OXTS
        timestamps) and pose_gt [N,4,4] = T_ctx_tgt of camera `cam`. Empty without OXTS."""
        if not self.has_oxts:
            return {}
        out: dict = {"speed": self.oxts(frame).speed}
        sensor = f"image_0{cam}" if self.has_timestamps(f"image_0{cam}") else "oxts"
        if self.has_timestamps(sensor):
            t0 = self.timestamp(frame, sensor)
            out["dt"] = np.array([abs(self.timestamp(f, sensor) - t0) for f in ctx_frames])
        if self.calib.T_velo_imu is not None:
            T_w = self.camera_poses([frame, *ctx_frames], cam)  # Mercator scale of the target
            out["pose_gt"] = invert_se3_np(T_w[1:]) @ T_w[0] if ctx_frames else np.zeros((0, 4, 4))
        return out

    def depth_gt(self, frame: int, cam: int, gt_source: str = "auto") -> np.ndarray | None:
        """Ground-truth depth [H0,W0] at the native size, 0 = invalid, or None when there is none.

        gt_source "dense": the dense PNG (synthetic drives); "velodyne": the LiDAR, from the raw scan
        (`velodyne_points`, projected with the published pixel placement) or else the packaged projection
        (`proj_depth/velodyne/*.npz`); "auto": dense if present, else the LiDAR. A missing requested
        source raises KittiMissingFileError.
        """
        size0 = self.native_size(cam)
        dense = self.dense_depth_path(frame, cam)
        if gt_source == "dense" or (gt_source == "auto" and dense is not None):
            if dense is None:
                raise KittiMissingFileError(f"{self.path}: no dense depth for frame {frame} (gt_source='dense')")
            depth = read_depth_png(dense)
            where = dense
        elif self.velodyne_path(frame) is not None:
            return velodyne_depth(self.load_velodyne(frame), self.calib, cam, size0)
        elif (proj := self.projected_depth_path(frame, cam)) is not None:
            depth = read_projected_depth(proj)
            where = proj
        elif gt_source == "velodyne":
            raise KittiMissingFileError(f"{self.path}: no LiDAR for frame {frame} (neither velodyne_points/data/"
                                        f"{frame_name(frame, 'bin')} nor proj_depth/velodyne/image_0{cam}/"
                                        f"{frame_name(frame, 'npz')}; gt_source='velodyne')")
        else:
            return None
        if depth.shape != (size0[1], size0[0]):
            raise KittiFormatError(f"{where}: depth is {depth.shape[1]}x{depth.shape[0]}, image is {size0[0]}x{size0[1]}")
        return depth

    def load_velodyne(self, frame: int) -> np.ndarray:
        p = self.velodyne_path(frame)
        if p is None:
            raise KittiMissingFileError(f"{self.path}: no Velodyne scan for frame {frame}")
        return load_velodyne(p)

    def velodyne_depth(self, frame: int, cam: int = 2, size: tuple[int, int] | None = None,
                       placement: str = DEFAULT_GT_PLACEMENT) -> np.ndarray:
        return velodyne_depth(self.load_velodyne(frame), self.calib, cam, size, placement)

    def camera_poses(self, frames: list[int], cam: int = 2) -> np.ndarray:
        """[N,4,4] T_world_cam for `frames` from OXTS (Mercator scale of the first listed frame)."""
        return camera_poses([self.oxts(f) for f in frames], self.calib, cam)


def find_drives(root: PathLike) -> list[Path]:
    """All `<date>/*_drive_*_sync` folders under a KITTI raw root, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise KittiMissingFileError(f"{root}: KITTI raw root does not exist")
    return sorted(p for p in root.glob("*/*_drive_*_sync") if p.is_dir())


# --------------------------------------------------------------------------------------------
# Eigen test drives: the guard against training on the test split
# --------------------------------------------------------------------------------------------

EIGEN_TEST_DRIVES_FILE = "eigen_test_drives.txt"  # package data beside this module
ALLOW_TEST_DRIVES_FLAG = "data.allow_test_drives"
_DRIVE_NAME_RE = re.compile(r"^\d{4}_\d{2}_\d{2}_drive_\d{4}_sync$")


class TestDriveError(ValueError):
    """Training samples come from Eigen test drives and the config does not allow it."""

    __test__ = False  # not a pytest test class, despite the name


@lru_cache(maxsize=1)
def eigen_test_drives() -> frozenset[str]:
    """The 28 Eigen test drive folder names (`2011_09_26_drive_0002_sync`, ...), from the package data file."""
    text = resources.files("semdepth_core.data").joinpath(EIGEN_TEST_DRIVES_FILE).read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [n for n in names if not _DRIVE_NAME_RE.match(n)]
    if bad or len(set(names)) != 28:
        raise KittiFormatError(f"semdepth_core/data/{EIGEN_TEST_DRIVES_FILE}: expected 28 distinct drive folder "
                               f"names, got {len(set(names))}" + (f" and malformed {bad[:3]}" if bad else ""))
    return frozenset(names)


def is_eigen_test_drive(drive: str) -> bool:
    """True when `drive` (a drive folder name, with or without `_sync`, or `date/drive`) is an Eigen test drive."""
    name = str(drive).rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith("_sync"):
        name += "_sync"
    return name in eigen_test_drives()


def check_training_drives(drives, allow: bool = False, flag: str = ALLOW_TEST_DRIVES_FLAG) -> list[str]:
    """The Eigen test drives among `drives` (sorted); raises TestDriveError if there are any and not `allow`."""
    found = sorted({str(d).rstrip("/").rsplit("/", 1)[-1] for d in drives if is_eigen_test_drive(d)})
    if found and not allow:
        raise TestDriveError(
            f"training would use {len(found)} Eigen test drive(s): {', '.join(found)}. These drives hold the "
            f"697 Eigen test frames; training on them makes the Eigen test scores meaningless. Train on the "
            f"Eigen-Zhou split (python -m training.make_split --root KITTI_RAW --out splits/eigen_zhou, then "
            f"data.train_split: splits/eigen_zhou/train.txt), leave the drives out (data.sources[i].exclude_drives), "
            f"or, if that is intended, set {flag}: true (--set {flag}=true)")
    return found
