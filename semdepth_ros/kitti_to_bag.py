"""Convert a KITTI raw drive (`<date>/<date>_drive_XXXX_sync`) to a rosbag2 (mcap or sqlite3).

    python -m semdepth_ros.kitti_to_bag DRIVE_DIR OUT [--storage mcap|sqlite3] [--max-frames N]
                                        [--image-format raw|jpeg|png [--jpeg-quality Q]]

Pure Python (rosbags); no ROS installation is needed to write the bag. The bag is written to a
temporary folder beside OUT and renamed into place when complete; an existing OUT is never
overwritten.

Topics (one message per frame present on disk; cut-short drives are handled):

    /kitti/camera_color_left/image_raw    sensor_msgs/Image rgb8 (rectified left colour camera, image_02);
                                           with --image-format jpeg|png instead
    /kitti/camera_color_left/image_raw/compressed  sensor_msgs/CompressedImage "bgr8; jpeg compressed bgr8"
                                           (as image_transport's compressed plugin records it; png lossless)
    /kitti/camera_color_left/camera_info  sensor_msgs/CameraInfo: K = P_rect_02[:3,:3], P = P_rect_02,
                                           D = 0 (plumb_bob), R = I - the images are already rectified
    /kitti/velo/pointcloud                sensor_msgs/PointCloud2 x, y, z, intensity (float32) in velo_link
    /kitti/oxts/odom                      nav_msgs/Odometry odom -> base_link, pose relative to the first
                                           frame, twist in base_link from (vf, vl, vu) and (wf, wl, wu)
    /tf                                   tf2_msgs/TFMessage odom -> base_link per OXTS packet
    /tf_static                            tf2_msgs/TFMessage (recorded with a transient-local QoS profile):
                                           base_link -> imu_link -> velo_link -> camera_color_left
                                           -> camera_color_left_optical

Frames (REP 103): `base_link` coincides with the OXTS IMU frame `imu_link` (x forward, y left,
z up); `velo_link` is the Velodyne frame (x forward, y left, z up); `camera_color_left` is the
camera body frame (x forward, y left, z up) and `camera_color_left_optical` the *rectified* optical
frame of camera 2 (x right, y down, z forward) in which image, camera_info and the depth node's
outputs live. The chain velo_link -> camera_color_left_optical composes exactly to KITTI's
T_cam2rect_velo = T(P_rect_02 offset) · R_rect_00 · Tr_velo_to_cam.

Stamps: images from image_02/timestamps.txt, clouds from velodyne_points/timestamps.txt, odometry
and /tf from oxts/timestamps.txt (nanosecond strings parsed exactly); /tf_static at the earliest stamp.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from semdepth_core.data import kitti

# topic and frame names (the replay tool and the launch remaps use these)
TOPIC_IMAGE = "/kitti/camera_color_left/image_raw"
TOPIC_CAMERA_INFO = "/kitti/camera_color_left/camera_info"
TOPIC_VELO = "/kitti/velo/pointcloud"
TOPIC_ODOM = "/kitti/oxts/odom"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"

FRAME_ODOM = "odom"
FRAME_BASE = "base_link"
FRAME_IMU = "imu_link"
FRAME_VELO = "velo_link"
FRAME_CAMERA = "camera_color_left"
FRAME_CAMERA_OPTICAL = "camera_color_left_optical"

# camera body (x fwd, y left, z up) <- optical (x right, y down, z fwd): columns = optical axes in body
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

CAM = 2
ROS_TIME_LIMIT_NS = (2 ** 31) * 1_000_000_000  # builtin_interfaces/Time.sec is an int32


class ConversionError(RuntimeError):
    """The drive cannot be converted (missing files, existing output, ...)."""


# ------------------------------------------------------------------------------------------ maths
def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (SVD); KITTI calibration rotations are not exactly orthonormal."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    Rn = U @ Vt
    if np.linalg.det(Rn) < 0:
        U[:, -1] *= -1
        Rn = U @ Vt
    return Rn


def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    R = orthonormalize(R)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def matrix_from_quat(q) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        raise ValueError("zero quaternion")
    s = 2.0 / n
    return np.array([
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ])


def static_transforms(calib: kitti.KittiCalib, cam: int = CAM) -> list[tuple[str, str, np.ndarray]]:
    """(parent, child, T_parent_child) for the static chain base_link -> ... -> optical frame.

    A tf transform parent -> child carries T_parent_child (maps child-frame points to the parent).
    """
    if calib.T_velo_imu is None:
        raise ConversionError(f"{calib.source}: calib_imu_to_velo.txt is missing (needed for the tf tree)")
    T_body_opt = np.eye(4)
    T_body_opt[:3, :3] = R_BODY_OPTICAL
    T_velo_opt = np.linalg.inv(calib.T_cam_velo(cam))
    return [
        (FRAME_BASE, FRAME_IMU, np.eye(4)),
        (FRAME_IMU, FRAME_VELO, np.linalg.inv(calib.T_velo_imu)),
        (FRAME_VELO, FRAME_CAMERA, T_velo_opt @ np.linalg.inv(T_body_opt)),
        (FRAME_CAMERA, FRAME_CAMERA_OPTICAL, T_body_opt),
    ]


def read_timestamps_ns(path: Path) -> np.ndarray:
    """KITTI timestamps file -> int64 nanoseconds since the epoch (exact; float seconds lose ~100 ns)."""
    kitti.read_timestamps(path)  # validates the format with a clear error
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return np.array(lines, dtype="datetime64[ns]").astype(np.int64)


# ------------------------------------------------------------------------------------- messages
class _Msgs:
    """Builders for rosbags typestore dataclasses."""

    def __init__(self, typestore):
        self.ts = typestore
        t = typestore.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CompressedImage = t["sensor_msgs/msg/CompressedImage"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2 = t["sensor_msgs/msg/PointCloud2"]
        self.PointField = t["sensor_msgs/msg/PointField"]
        self.Odometry = t["nav_msgs/msg/Odometry"]
        self.PoseWithCovariance = t["geometry_msgs/msg/PoseWithCovariance"]
        self.TwistWithCovariance = t["geometry_msgs/msg/TwistWithCovariance"]
        self.Pose = t["geometry_msgs/msg/Pose"]
        self.Twist = t["geometry_msgs/msg/Twist"]
        self.Point = t["geometry_msgs/msg/Point"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.TFMessage = t["tf2_msgs/msg/TFMessage"]

    def header(self, ns: int, frame: str):
        return self.Header(stamp=self.Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000)),
                           frame_id=frame)

    def image(self, ns: int, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        return self.Image(header=self.header(ns, FRAME_CAMERA_OPTICAL), height=h, width=w, encoding="rgb8",
                          is_bigendian=0, step=3 * w, data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))

    def compressed_image(self, ns: int, rgb: np.ndarray, fmt: str, quality: int):
        """sensor_msgs/CompressedImage of `rgb` encoded as compressed_image_transport does (bgr8 jpeg / png)."""
        import cv2

        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
        ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise ConversionError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
        return self.CompressedImage(header=self.header(ns, FRAME_CAMERA_OPTICAL),
                                    format=f"bgr8; {fmt} compressed bgr8", data=enc.reshape(-1).astype(np.uint8))

    def camera_info(self, ns: int, P: np.ndarray, width: int, height: int):
        return self.CameraInfo(
            header=self.header(ns, FRAME_CAMERA_OPTICAL), height=height, width=width,
            distortion_model="plumb_bob", d=np.zeros(5), k=np.asarray(P[:, :3], np.float64).reshape(-1),
            r=np.eye(3).reshape(-1), p=np.asarray(P, np.float64).reshape(-1), binning_x=0, binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def velo(self, ns: int, pts: np.ndarray):
        pts = np.ascontiguousarray(pts, np.float32)
        fields = [self.PointField(name=n, offset=4 * i, datatype=7, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]
        return self.PointCloud2(header=self.header(ns, FRAME_VELO), height=1, width=pts.shape[0], fields=fields,
                                is_bigendian=sys.byteorder == "big", point_step=16, row_step=16 * pts.shape[0],
                                data=pts.view(np.uint8).reshape(-1), is_dense=bool(np.isfinite(pts).all()))

    def pose(self, T: np.ndarray):
        q = quat_from_matrix(T[:3, :3])
        return self.Pose(position=self.Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                         orientation=self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))

    def transform(self, ns: int, parent: str, child: str, T: np.ndarray):
        q = quat_from_matrix(T[:3, :3])
        return self.TransformStamped(
            header=self.header(ns, parent), child_frame_id=child,
            transform=self.Transform(
                translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                rotation=self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))

    def odometry(self, ns: int, T: np.ndarray, p: kitti.OxtsPacket):
        pose_cov = np.zeros((6, 6))
        pose_cov[[0, 1, 2], [0, 1, 2]] = p.pos_accuracy ** 2
        twist_cov = np.zeros((6, 6))
        twist_cov[[0, 1, 2], [0, 1, 2]] = p.vel_accuracy ** 2
        twist = self.Twist(linear=self.Vector3(x=float(p.vf), y=float(p.vl), z=float(p.vu)),
                           angular=self.Vector3(x=float(p.wf), y=float(p.wl), z=float(p.wu)))
        return self.Odometry(header=self.header(ns, FRAME_ODOM), child_frame_id=FRAME_BASE,
                             pose=self.PoseWithCovariance(pose=self.pose(T), covariance=pose_cov.reshape(-1)),
                             twist=self.TwistWithCovariance(twist=twist, covariance=twist_cov.reshape(-1)))

    def tf(self, transforms):
        return self.TFMessage(transforms=list(transforms))


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST
    return get_typestore(store)


def _qos(durability: str, depth: int):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    inf = QosTime(0x7FFFFFFF, 0xFFFFFFFF)  # rmw "infinite" duration as rosbag2 records it
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if durability == "transient_local" else QosDurability.VOLATILE,
               inf, inf, QosLiveliness.AUTOMATIC, inf, False)


# ------------------------------------------------------------------------------------------ convert
def _stamps(drive: kitti.KittiDrive, sensor: str, frames: list[int], required: bool) -> np.ndarray | None:
    path = drive.path / sensor / "timestamps.txt"
    if not path.is_file():
        if required:
            raise ConversionError(f"{path}: missing (needed for the {sensor} stamps)")
        return None
    ns = read_timestamps_ns(path)
    missing = [f for f in frames if f >= len(ns)]
    if missing:
        raise ConversionError(f"{path}: {len(ns)} lines, no stamp for frame(s) {missing[:5]}")
    return ns[frames]


IMAGE_FORMATS = ("raw", "jpeg", "png")


def convert(drive_dir: str | Path, out: str | Path, storage: str = "mcap", max_frames: int = 0,
            log=print, image_format: str = "raw", jpeg_quality: int = 95) -> dict:
    """Write the bag; returns {topic: message count}. Raises ConversionError / KittiFormatError.

    image_format: "raw" writes sensor_msgs/Image rgb8 on TOPIC_IMAGE; "jpeg" / "png" write
    sensor_msgs/CompressedImage on TOPIC_IMAGE + "/compressed" (jpeg at `jpeg_quality`)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    if out.exists():
        raise ConversionError(f"{out} already exists; refusing to overwrite (remove it or pick another name)")
    if storage not in ("mcap", "sqlite3"):
        raise ConversionError(f"--storage must be mcap or sqlite3, got {storage!r}")
    if image_format not in IMAGE_FORMATS:
        raise ConversionError(f"--image-format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ConversionError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    compressed = image_format != "raw"
    image_topic = TOPIC_IMAGE + "/compressed" if compressed else TOPIC_IMAGE
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    drive = kitti.KittiDrive(drive_dir, cams=(CAM,))
    frames = drive.frames[:max_frames] if max_frames > 0 else list(drive.frames)
    if not frames:
        raise ConversionError(f"{drive.path}: no image_0{CAM} frames found")
    calib = drive.calib
    statics = static_transforms(calib, CAM)
    P = calib.P_rect(CAM)

    img_ns = _stamps(drive, f"image_0{CAM}", frames, required=True)
    velo_frames = [f for f in frames if drive.velodyne_path(f) is not None]
    oxts_frames = [f for f in frames if drive.oxts_path(f) is not None]
    velo_ns = _stamps(drive, "velodyne_points", velo_frames, required=bool(velo_frames))
    oxts_ns = _stamps(drive, "oxts", oxts_frames, required=bool(oxts_frames))
    if len(velo_frames) < len(frames):
        log(f"warning: Velodyne scans for {len(velo_frames)}/{len(frames)} frames")
    if len(oxts_frames) < len(frames):
        log(f"warning: OXTS packets for {len(oxts_frames)}/{len(frames)} frames")

    typestore = _typestore()
    M = _Msgs(typestore)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    # temp folder beside OUT; the bag inside it already has OUT's name (rosbags names the storage
    # file after the bag folder), so one rename publishes it
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp_parent.exists():
        shutil.rmtree(tmp_parent)
    tmp_parent.mkdir()
    tmp = tmp_parent / out.name
    counts: dict[str, int] = {}
    try:
        writer = Writer(tmp, version=9, storage_plugin=plugin)
        writer.open()
        volatile, latched = [_qos("volatile", 10)], [_qos("transient_local", 1)]
        conns = {}

        def conn(topic, typ, qos):
            conns[topic] = writer.add_connection(topic, typ, typestore=typestore, offered_qos_profiles=qos)

        conn(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", latched)
        conn(image_topic, image_type, volatile)
        conn(TOPIC_CAMERA_INFO, "sensor_msgs/msg/CameraInfo", volatile)
        if velo_frames:
            conn(TOPIC_VELO, "sensor_msgs/msg/PointCloud2", volatile)
        if oxts_frames:
            conn(TOPIC_ODOM, "nav_msgs/msg/Odometry", volatile)
            conn(TOPIC_TF, "tf2_msgs/msg/TFMessage", [_qos("volatile", 100)])

        def write(topic, typ, ns, msg):
            if not 0 <= int(ns) < ROS_TIME_LIMIT_NS:
                raise ConversionError(f"{topic}: stamp {int(ns)} ns is outside ROS 2 Time (int32 seconds, "
                                      "before 2038-01-19); check the drive's timestamps.txt")
            writer.write(conns[topic], int(ns), typestore.serialize_cdr(msg, typ))
            counts[topic] = counts.get(topic, 0) + 1

        # messages in time order: build (stamp, priority, topic, builder) then write sorted
        events = []
        t0 = int(min(img_ns.min(), *(a.min() for a in (velo_ns, oxts_ns) if a is not None)))
        events.append((t0, 0, TOPIC_TF_STATIC, lambda: M.tf(M.transform(t0, p, c, T) for p, c, T in statics)))
        for f, ns in zip(frames, img_ns):
            events.append((int(ns), 2, TOPIC_CAMERA_INFO, None, f))
            events.append((int(ns), 3, TOPIC_IMAGE, None, f))
        if velo_frames:
            for f, ns in zip(velo_frames, velo_ns):
                events.append((int(ns), 4, TOPIC_VELO, None, f))
        if oxts_frames:
            packets = [drive.oxts(f) for f in oxts_frames]
            T_w_imu = kitti.oxts_poses(packets)
            T_rel = np.linalg.inv(T_w_imu[0])[None] @ T_w_imu  # odom = first base_link pose
            for k, (f, ns) in enumerate(zip(oxts_frames, oxts_ns)):
                events.append((int(ns), 1, TOPIC_ODOM, (T_rel[k], packets[k]), f))
        events.sort(key=lambda e: (e[0], e[1]))

        types = {TOPIC_TF_STATIC: "tf2_msgs/msg/TFMessage", TOPIC_IMAGE: image_type,
                 TOPIC_CAMERA_INFO: "sensor_msgs/msg/CameraInfo", TOPIC_VELO: "sensor_msgs/msg/PointCloud2",
                 TOPIC_ODOM: "nav_msgs/msg/Odometry", TOPIC_TF: "tf2_msgs/msg/TFMessage"}
        image_size = None
        for ev in events:
            ns, _, topic = ev[0], ev[1], ev[2]
            if topic == TOPIC_TF_STATIC:
                write(topic, types[topic], ns, ev[3]())
            elif topic == TOPIC_IMAGE:
                rgb = drive.load_image(ev[4], CAM)
                image_size = (rgb.shape[1], rgb.shape[0])
                if compressed:
                    write(image_topic, image_type, ns, M.compressed_image(ns, rgb, image_format, jpeg_quality))
                else:
                    write(topic, types[topic], ns, M.image(ns, rgb))
            elif topic == TOPIC_CAMERA_INFO:
                if image_size is None:  # size from the image itself (read once ahead of the first frame)
                    rgb = drive.load_image(ev[4], CAM)
                    image_size = (rgb.shape[1], rgb.shape[0])
                write(topic, types[topic], ns, M.camera_info(ns, P, *image_size))
            elif topic == TOPIC_VELO:
                write(topic, types[topic], ns, M.velo(ns, drive.load_velodyne(ev[4])))
            elif topic == TOPIC_ODOM:
                T, packet = ev[3]
                write(topic, types[topic], ns, M.odometry(ns, T, packet))
                write(TOPIC_TF, types[TOPIC_TF], ns, M.tf([M.transform(ns, FRAME_ODOM, FRAME_BASE, T)]))
        writer.close()
        if out.exists():
            raise ConversionError(f"{out} appeared while converting; refusing to overwrite")
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kitti_to_bag", description="Convert a KITTI raw drive to a rosbag2.")
    ap.add_argument("drive_dir", help="<root>/<date>/<date>_drive_XXXX_sync (calibration read from its parent)")
    ap.add_argument("out", help="output bag folder (must not exist)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--max-frames", type=int, default=0, help="convert only the first N frames (0 = all)")
    ap.add_argument("--image-format", choices=IMAGE_FORMATS, default="raw",
                    help="raw: sensor_msgs/Image rgb8 (default); jpeg/png: sensor_msgs/CompressedImage on "
                         "<image topic>/compressed")
    ap.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    args = ap.parse_args(argv)
    try:
        counts = convert(args.drive_dir, args.out, args.storage, args.max_frames,
                         log=lambda m: print(m, file=sys.stderr), image_format=args.image_format,
                         jpeg_quality=args.jpeg_quality)
    except (ConversionError, kitti.KittiFormatError, OSError) as exc:
        print(f"kitti_to_bag: error: {exc}", file=sys.stderr)
        return 1
    for topic, n in sorted(counts.items()):
        print(f"{topic}: {n}")
    print(f"wrote {args.out} ({args.storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
