"""KITTI odometry sequences: rectified stereo images, `calib.txt` and metric ground-truth poses.

Layout (Geiger et al., CVPR 2012)::

    <root>/sequences/<NAME>/image_0/NNNNNN.png, image_1/ (greyscale left/right),
                           [image_2/, image_3/ (colour left/right)], calib.txt, [times.txt]
    <root>/poses/<NAME>.txt   one row-major 3x4 pose of the left camera per frame (T_world_cam0,
                              world = the first frame's camera), metres

`calib.txt` lines are `P0: 12 numbers` ... (`Tr:` and other keys are ignored). The cameras are
rectified to one image plane, so camera c sits at the pure translation K^-1 P_c[:, 3] from camera 0.
Without `times.txt` the frame times are frame / frame_rate (10 Hz nominal); the speed of a frame is
the distance between its neighbours' poses over their time apart (a central difference).

Greyscale images are replicated to three channels, as the networks take RGB. A greyscale file in a
colour folder (or the reverse) is an error naming the file: a sequence never mixes the two per camera.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from semdepth_core.data.kitti import (
    GREY_CAMS, STEREO_PARTNER, CameraFrames, KittiFormatError, KittiMissingFileError, read_calib_file,
    read_image_as_rgb, read_text_file,
)
from semdepth_core.geometry.camera import resize_intrinsics
from semdepth_core.geometry.se3 import invert_se3_np

PathLike = str | Path

NOMINAL_FRAME_RATE = 10.0


def read_odometry_calib(path: PathLike) -> dict[int, np.ndarray]:
    """{cam: 3x4 P} from an odometry `calib.txt` (keys P0..P3; at least P0 must be present)."""
    path = Path(path)
    raw = read_calib_file(path)
    P = {}
    for cam in range(4):
        val = raw.get(f"P{cam}")
        if val is None:
            continue
        if isinstance(val, str) or val.size != 12:
            raise KittiFormatError(f"{path}: key 'P{cam}' needs 12 numbers")
        P[cam] = val.reshape(3, 4)
        if P[cam][0, 0] <= 0 or P[cam][1, 1] <= 0:
            raise KittiFormatError(f"{path}: P{cam} has a non-positive focal length")
    if 0 not in P:
        raise KittiFormatError(f"{path}: missing key 'P0'")
    return P


def read_odometry_poses(path: PathLike) -> np.ndarray:
    """[N,4,4] float64 poses T_world_cam0 from a KITTI odometry poses file (12 numbers per line)."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_text_file(path, "poses file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            vals = [float(t) for t in line.split()]
        except ValueError:
            raise KittiFormatError(f"{path}:{lineno}: a pose line must hold 12 numbers, got {line.strip()[:80]!r}") from None
        if len(vals) != 12 or not np.all(np.isfinite(vals)):
            raise KittiFormatError(f"{path}:{lineno}: a pose line must hold 12 finite numbers, got {len(vals)}")
        rows.append(vals)
    if not rows:
        raise KittiFormatError(f"{path}: no poses")
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :] = np.asarray(rows, np.float64).reshape(-1, 3, 4)
    return T


def _frames_in(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.iterdir() if p.suffix == ".png" and p.stem.isdigit())


class OdometrySequence(CameraFrames):
    """One KITTI odometry sequence (`<root>/sequences/<name>`), indexed by the frames present.

    cams: the cameras to index (e.g. (0, 1) for greyscale stereo); `frames` are those every one of them
    has, `has(frame, cam)` asks one camera (datasets count the targets whose stereo side is missing).
    Poses are required (velocity and pose ground truth come from them); a poses
    file with fewer lines than the highest frame number + 1 raises KittiFormatError.
    """

    def __init__(self, root: PathLike, name: str, cams: tuple[int, ...] = (0,),
                 frame_rate: float = NOMINAL_FRAME_RATE):
        self.root = Path(root)
        self.seq_name = name
        self.path = self.root / "sequences" / name
        if not self.path.is_dir():
            raise KittiMissingFileError(f"{self.path}: odometry sequence folder does not exist")
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        self.frame_rate = float(frame_rate)
        self.cams = tuple(int(c) for c in cams)
        for c in self.cams:
            if c not in STEREO_PARTNER:
                raise ValueError(f"odometry camera index must be 0..3, got {c}")
        self.name = f"odometry/{name}"
        per_cam = {c: set(_frames_in(self.path / f"image_{c}")) for c in self.cams}
        if not per_cam[self.cams[0]]:
            raise KittiMissingFileError(f"{self.path / f'image_{self.cams[0]}'}: no images")
        everything = set.union(*per_cam.values())
        self._index_frames(per_cam)
        self.P = read_odometry_calib(self.path / "calib.txt")
        for c in self.cams:
            if c not in self.P:
                raise KittiFormatError(f"{self.path / 'calib.txt'}: no P{c} for camera {c}")
        poses_path = self.root / "poses" / f"{name}.txt"
        if not poses_path.is_file():
            raise KittiMissingFileError(f"{poses_path}: missing poses file of sequence {name!r} "
                                        "(needed for velocity and pose supervision)")
        self.poses = read_odometry_poses(poses_path)  # T_world_cam0
        if len(self.poses) < max(everything) + 1:
            raise KittiFormatError(f"{poses_path}: {len(self.poses)} poses for frames up to {max(everything)} "
                                   f"(needs one line per frame)")
        self._times = self._read_times()

    def __repr__(self) -> str:
        return f"OdometrySequence({self.path}, {len(self.frames)} frames, cams {self.cams})"

    def _read_times(self) -> np.ndarray | None:
        p = self.path / "times.txt"
        if not p.is_file():
            return None
        try:
            t = np.array([float(x) for x in read_text_file(p, "times file").split()], np.float64)
        except ValueError:
            raise KittiFormatError(f"{p}: times must be numbers (seconds), one per line") from None
        last = max(max(s) for s in self._cam_frames.values())
        if len(t) < last + 1:
            raise KittiFormatError(f"{p}: {len(t)} times for frames up to {last}")
        return t

    # cameras ---------------------------------------------------------------------------------
    def image_path(self, frame: int, cam: int = 0) -> Path:
        return self.path / f"image_{cam}" / f"{int(frame):06d}.png"

    def load_image(self, frame: int, cam: int = 0) -> np.ndarray:
        return read_image_as_rgb(self.image_path(frame, cam), "grey" if cam in GREY_CAMS else "colour")

    @cached_property
    def _sizes(self) -> dict[int, tuple[int, int]]:
        out = {}
        for c in self.cams:
            first = self.image_path(min(self._cam_frames[c]), c)
            img = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise KittiFormatError(f"{first}: cannot decode image")
            out[c] = (img.shape[1], img.shape[0])
        return out

    def native_size(self, cam: int = 0) -> tuple[int, int]:
        """(W, H) of camera `cam`'s images (read from the first frame)."""
        if cam not in self._sizes:
            raise ValueError(f"camera {cam} is not indexed (cams {self.cams})")
        return self._sizes[cam]

    def size_source(self, cam: int = 0) -> str:
        return f"the first image of {self.path / f'image_{cam}'}"

    def K(self, cam: int = 0, size: tuple[int, int] | None = None) -> np.ndarray:
        K = self.P[cam][:, :3].copy()
        if size is not None and tuple(size) != self.native_size(cam):
            K = resize_intrinsics(K, self.native_size(cam), tuple(size))
        return K

    def stereo_partner(self, cam: int) -> int | None:
        other = STEREO_PARTNER[cam]
        return other if other in self.cams else None

    def T_cam_cam0(self, cam: int) -> np.ndarray:
        """Camera 0 -> camera `cam` (rectified: a pure translation K^-1 P[:, 3])."""
        P = self.P[cam]
        T = np.eye(4)
        T[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
        return T

    def T_between(self, dst: int, src: int) -> np.ndarray:
        """Maps points of camera `src` into camera `dst` (for the stereo pair: T_right_left etc.)."""
        return self.T_cam_cam0(dst) @ invert_se3_np(self.T_cam_cam0(src))

    @property
    def baseline(self) -> float:
        """Distance between cameras 0 and 1 (m): -P1[0,3] / fx."""
        if 1 not in self.P:
            raise KittiFormatError(f"{self.path / 'calib.txt'}: no P1 for the stereo baseline")
        return float(abs(self.P[1][0, 3] - self.P[0][0, 3]) / self.P[1][0, 0])

    # motion ----------------------------------------------------------------------------------
    def timestamp(self, frame: int) -> float:
        return float(self._times[frame]) if self._times is not None else frame / self.frame_rate

    def camera_pose(self, frame: int, cam: int = 0) -> np.ndarray:
        """T_world_cam of camera `cam` at `frame`."""
        return self.poses[frame] @ invert_se3_np(self.T_cam_cam0(cam))

    def speed(self, frame: int) -> float:
        """m/s from the poses: central difference over the neighbouring frames (one-sided at the ends)."""
        lo, hi = max(frame - 1, 0), min(frame + 1, len(self.poses) - 1)
        if hi == lo:
            raise KittiFormatError(f"{self.path}: a speed needs two poses, the poses file has one")
        dist = np.linalg.norm(self.poses[hi][:3, 3] - self.poses[lo][:3, 3])
        return float(dist / max(abs(self.timestamp(hi) - self.timestamp(lo)), 1e-9))

    def motion(self, frame: int, ctx_frames: list[int], cam: int) -> dict[str, np.ndarray | float]:
        """speed (m/s), dt [N] (s) and pose_gt [N,4,4] = T_ctx_tgt of camera `cam`."""
        T_w = [self.camera_pose(f, cam) for f in (frame, *ctx_frames)]
        pose_gt = np.stack([invert_se3_np(T) @ T_w[0] for T in T_w[1:]]) if ctx_frames else np.zeros((0, 4, 4))
        t0 = self.timestamp(frame)
        return {"speed": self.speed(frame), "dt": np.array([abs(self.timestamp(f) - t0) for f in ctx_frames]),
                "pose_gt": pose_gt}

    def depth_gt(self, frame: int, cam: int, gt_source: str = "auto") -> None:
        """KITTI odometry has no depth ground truth: None ("auto"), an error when one is required."""
        if gt_source in ("dense", "velodyne"):
            raise KittiMissingFileError(f"{self.path}: KITTI odometry has no depth ground truth (gt_source={gt_source!r})")
        return None


def find_odometry_sequences(root: PathLike) -> list[str]:
    """Names of the sequence folders under `<root>/sequences`, sorted (OdometrySequence refuses one
    without its poses file, with a message naming it)."""
    root = Path(root)
    seq_dir = root / "sequences"
    if not seq_dir.is_dir():
        raise KittiMissingFileError(f"{seq_dir}: no 'sequences' folder under the KITTI odometry root")
    return sorted(p.name for p in seq_dir.iterdir() if p.is_dir())
