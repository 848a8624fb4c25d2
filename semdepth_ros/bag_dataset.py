"""Self-supervised training samples from rosbag2 recordings (sqlite3 or mcap), read with `rosbags`.

This is `data.kind: rosbag` of `training.data` (settings: `data.bag`, `semdepth_core.config.BagConfig`).
It needs no ROS installation: messages are deserialised with the rosbags typestore (no rclpy), and
the items are exactly those of `semdepth_core.data.dataset.FrameDataset` (rgb, rgb_context, K, speed,
dt, filename, ... and with stereo rgb_stereo / T_stereo), so the trainer is unchanged.

Topics (image_transport naming; every name is a setting):

- `image_topic` (default `/camera/image_raw`): sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8,
  mono16, ...). When the bag has no such topic, `image_topic + "/compressed"` is used as
  sensor_msgs/CompressedImage (jpeg or png), as image_transport's compressed plugin records it.
- `camera_info_topic` (default: the image topic's sibling `<namespace>/camera_info`):
  sensor_msgs/CameraInfo giving the intrinsics K and the image size. **Images must be rectified:
  a CameraInfo with a non-zero distortion vector D is refused** (BagDataError naming the bag and the
  topic); record the rectified stream (image_rect) or rectify before training.
- `odom_topic` (optional): nav_msgs/Odometry or geometry_msgs/TwistStamped; the norm of the linear
  twist nearest in time to each target image (within `odom_tolerance`) is its `speed` (velocity
  supervision) and drives the static-frame filter.
- `stereo_image_topic` (optional, with `data.stereo`): the other camera of a rectified pair, matched by
  stamp within `stereo_tolerance`; its CameraInfo must equal the target camera's K. The extrinsic is
  `stereo_baseline` when set (the other camera sits b metres to the right: T_other_target = (-b, 0, 0)),
  else it is composed from the bag's /tf_static between the two CameraInfo frame_ids (both cameras
  must be oriented alike, as a rectified pair is).

Sampling (`select_samples`; every drop is counted with its reason in the summary):

- times are the messages' header stamps (the bag's receive time where a stamp is zero);
- context frames are chosen by time, not index: offset o of `data.context` is the image nearest to
  t + o * frame_period (`frame_period` 0 = the bag's median image interval), and must lie within
  `context_tolerance * frame_period` of it, else the target is dropped ("no context image": a time gap
  or dropped frames in the recording);
- static targets are dropped: odometry speed below `min_speed`, or, without odometry, a mean grey-level
  change to the previous image below `min_image_change` (`static_filter`: auto | odometry | image | none);
- the last `val_fraction` of each bag (by time) is held out; targets whose context crosses the boundary
  are dropped from both sides.

Scale: `index_bag` reads the bag once (one pass over the image, camera_info, odometry and stereo topics,
each image decoded once into a tiny thumbnail to validate it and for the static filter) and keeps only
timestamps per image; the index is cached on disk (atomically, keyed by the bag files' sizes and mtimes
and the topic settings) so a restarted run does not read the bag again. Items decode their images
lazily: one indexed read per image (`Reader.messages(start=t, stop=t+1)`: an sqlite3 query or one mcap
chunk). Each process (DataLoader worker) opens its own reader on first use; the dataset pickles without it.

Bad input: a missing topic, refused CameraInfo, unknown encoding on every image, or a corrupt/truncated
bag file raise BagDataError naming the bag, the topic and the message; single undecodable messages and
images without odometry nearby are skipped and counted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from semdepth_core.data.dataset import FrameDataset, Sample
from semdepth_core.validation import intrinsics_problem
from semdepth_ros.conversions import (
    ImageConversionError,
    compressed_image_msg_to_rgb,
    image_msg_to_rgb,
)
from semdepth_ros.conversions import stamp_ns as header_stamp_ns  # this module's stamp_ns adds a fallback

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
ODOMETRY = "nav_msgs/msg/Odometry"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
ODOM_TYPES = (ODOMETRY, TWIST_STAMPED)
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC = "/tf_static"

TARGET_CAM, STEREO_CAM = 2, 3  # the cameras' indices in items (as KITTI's left/right colour cameras)
THUMB_WIDTH = 64  # width of the grey thumbnails of the image-difference static filter


class BagDataError(ValueError):
    """A bag cannot be used for training; the message names the bag, topic and message."""


# ------------------------------------------------------------------------------------------ helpers
def typestore():
    """The rosbags typestore of the newest ROS 2 distribution this rosbags knows."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST)


def find_bags(root: str | Path) -> list[Path]:
    """`root` itself when it is a rosbag2 folder (holds metadata.yaml), else every rosbag2 folder below it."""
    root = Path(root)
    if not root.exists():
        raise BagDataError(f"{root}: does not exist (data.root: a rosbag2 folder or a folder of bags)")
    if (root / "metadata.yaml").is_file():
        return [root]
    bags = sorted(p.parent for p in root.rglob("metadata.yaml") if not p.parent.name.startswith("."))
    if not bags:
        raise BagDataError(f"{root}: no rosbag2 folder (with metadata.yaml) in or below it")
    return bags


def sibling_topic(topic: str, name: str) -> str:
    """image_transport naming: the topic `name` in `topic`'s namespace (/cam/image_raw -> /cam/camera_info)."""
    head, sep, _ = topic.rstrip("/").rpartition("/")
    return f"{head}/{name}" if sep else name


def open_reader(path: Path):
    """An opened rosbags Reader, or BagDataError naming the bag."""
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # ReaderError, but also sqlite / mcap / yaml errors of a damaged bag
        raise BagDataError(f"{path}: cannot open the bag ({type(exc).__name__}: {exc})") from None
    return reader


def stamp_ns(msg, fallback: int) -> int:
    """The message's header stamp in ns, or `fallback` (its receive time) when the stamp is zero."""
    ns = header_stamp_ns(msg.header)
    return ns if ns > 0 else int(fallback)


def decode_image(msg, msgtype: str, where: str) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage (rosbags or rclpy object) -> HxWx3 uint8 RGB.

    Any failure is a BagDataError whose message starts with `where` (bag, topic, message)."""
    try:
        if msgtype == COMPRESSED_IMAGE:
            return compressed_image_msg_to_rgb(msg)
        if msgtype == IMAGE:
            return image_msg_to_rgb(msg)
    except ImageConversionError as exc:
        raise BagDataError(f"{where}: {exc}") from None
    except (ValueError, TypeError, AttributeError, cv2.error) as exc:  # malformed fields
        raise BagDataError(f"{where}: undecodable {msgtype} ({type(exc).__name__}: {exc})") from None
    raise BagDataError(f"{where}: {msgtype} is not an image type ({', '.join(IMAGE_TYPES)})")


def camera_intrinsics(msg, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """(K 3x3 float64, (W, H)) of a sensor_msgs/CameraInfo; BagDataError for distortion or a bad K."""
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if d.size and (not np.all(np.isfinite(d)) or np.any(d != 0)):
        raise BagDataError(f"{where}: CameraInfo has distortion D={d.tolist()} ({msg.distortion_model!r}); "
                           "training needs rectified images with zero distortion (record the rectified "
                           "image_rect stream or rectify the images first)")
    K = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if K.size != 9 or not np.all(np.isfinite(K)):
        raise BagDataError(f"{where}: CameraInfo K must be 9 finite numbers, got {K.tolist()}")
    K = K.reshape(3, 3)
    w, h = int(msg.width), int(msg.height)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or w <= 0 or h <= 0:
        raise BagDataError(f"{where}: CameraInfo needs positive fx, fy, width and height "
                           f"(fx={K[0, 0]}, fy={K[1, 1]}, {w}x{h})")
    reason = intrinsics_problem(K, w, h)  # the node's plausibility rule, shared
    if reason:
        raise BagDataError(f"{where}: CameraInfo is not a plausible camera: {reason}")
    return K, (w, h)


def twist_speed(msg, msgtype: str) -> float:
    """Norm of the linear velocity (m/s) of a nav_msgs/Odometry or geometry_msgs/TwistStamped."""
    lin = msg.twist.twist.linear if msgtype == ODOMETRY else msg.twist.linear
    return float(math.sqrt(lin.x ** 2 + lin.y ** 2 + lin.z ** 2))


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A THUMB_WIDTH-wide float32 grey image (for the image-difference static filter)."""
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    th = max(1, round(h * THUMB_WIDTH / w))
    return cv2.resize(grey, (THUMB_WIDTH, th), interpolation=cv2.INTER_AREA).astype(np.float32)


def _count(counts: dict[str, int], reason: str, n: int = 1) -> None:
    counts[reason] = counts.get(reason, 0) + n


# ------------------------------------------------------------------------------------------ index
@dataclass
class ImageStream:
    """The indexed images of one topic: receive time (for the lookup), header stamp, order within a receive time."""

    topic: str
    msgtype: str
    log_ns: np.ndarray  # int64 [N] bag receive times
    stamp_ns: np.ndarray  # int64 [N] header stamps
    ordinal: np.ndarray  # int64 [N] index among this topic's messages with the same receive time
    change: np.ndarray  # float32 [N] mean |grey change| to the previous image (inf for the first)


@dataclass
class BagIndex:
    """Everything `index_bag` learns in its one pass over a bag."""

    path: Path
    name: str
    image: ImageStream
    K: np.ndarray
    size: tuple[int, int]
    camera_info_topic: str
    odom_topic: str = ""
    odom_stamp_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    odom_speed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    stereo: ImageStream | None = None
    T_stereo: np.ndarray | None = None  # 4x4 T_other_target of the stereo pair
    skipped: dict[str, int] = field(default_factory=dict)  # undecodable messages, reason -> count
    examples: dict[str, str] = field(default_factory=dict)


def _connections(reader, topic: str, types: Sequence[str], path: Path) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        return []
    bad = {c.msgtype for c in conns} - set(types)
    if bad:
        raise BagDataError(f"{path}: topic {topic} has type {sorted(bad)[0]}, expected {' or '.join(types)}")
    return conns


def _resolve_image_topic(reader, topic: str, path: Path, what: str) -> list:
    """The connections of `topic` (Image or CompressedImage), else of `topic`/compressed; BagDataError if neither."""
    for t in (topic, topic.rstrip("/") + "/compressed"):
        conns = _connections(reader, t, IMAGE_TYPES, path)
        if conns:
            return conns
    have = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
    raise BagDataError(f"{path}: no {what} topic {topic} (sensor_msgs/Image) nor {topic.rstrip('/')}/compressed "
                       f"(sensor_msgs/CompressedImage); the bag has: {', '.join(have) or 'no topics'} "
                       f"(set data.bag.{'stereo_' if what == 'stereo image' else ''}image_topic)")


class _StreamBuilder:
    """Accumulates one image topic's index during the pass over the bag."""

    def __init__(self, topic: str, msgtype: str, size: tuple[int, int] | None, thumbs: bool):
        self.topic, self.msgtype, self.size, self.thumbs = topic, msgtype, size, thumbs
        self.log, self.stamp, self.ordinal, self.change = [], [], [], []
        self._last_log, self._same, self._prev = None, 0, None

    def add(self, msg, log_ns: int, rgb: np.ndarray) -> None:
        self._same = self._same + 1 if log_ns == self._last_log else 0
        self._last_log = log_ns
        self.log.append(log_ns)
        self.stamp.append(stamp_ns(msg, log_ns))
        self.ordinal.append(self._same)
        change = math.inf
        if self.thumbs:
            th = thumbnail(rgb)
            if self._prev is not None and self._prev.shape == th.shape:
                change = float(np.abs(th - self._prev).mean())
            self._prev = th
        self.change.append(change)

    def note_receive(self, log_ns: int) -> None:
        """A skipped message still counts for the ordinal of later messages with the same receive time."""
        self._same = self._same + 1 if log_ns == self._last_log else 0
        self._last_log = log_ns

    def build(self) -> ImageStream:
        order = np.argsort(np.asarray(self.stamp, np.int64), kind="stable")
        return ImageStream(self.topic, self.msgtype, np.asarray(self.log, np.int64)[order],
                           np.asarray(self.stamp, np.int64)[order], np.asarray(self.ordinal, np.int64)[order],
                           np.asarray(self.change, np.float32)[order])


INDEX_VERSION = 1  # bump when the index format or its meaning changes (invalidates cached indexes)


def index_cache_dir() -> Path:
    """Where bag indexes are cached: $SEMDEPTH_CACHE/bag_index (or ~/.cache/semdepth/bag_index)."""
    base = os.environ.get("SEMDEPTH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "semdepth") / "bag_index"


def _index_key(path: Path, settings: Any, stereo: bool) -> str:
    """Hash of the bag's files (name, size, mtime) and of the settings the index depends on."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    keys = ("image_topic", "camera_info_topic", "odom_topic", "stereo_image_topic", "stereo_baseline")
    blob = json.dumps([INDEX_VERSION, str(path.resolve()), files, bool(stereo),
                       [getattr(settings, k) for k in keys]])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save_index(index: BagIndex, file: Path) -> None:
    """Atomically write `index` as an .npz of arrays plus a JSON header (no pickle)."""
    arrays = {"K": index.K, "odom_stamp_ns": index.odom_stamp_ns, "odom_speed": index.odom_speed}
    for prefix, stream in (("image", index.image), ("stereo", index.stereo)):
        if stream is not None:
            for f in ("log_ns", "stamp_ns", "ordinal", "change"):
                arrays[f"{prefix}_{f}"] = getattr(stream, f)
    if index.T_stereo is not None:
        arrays["T_stereo"] = index.T_stereo
    meta = {"image": [index.image.topic, index.image.msgtype], "size": list(index.size),
            "camera_info_topic": index.camera_info_topic, "odom_topic": index.odom_topic,
            "stereo": [index.stereo.topic, index.stereo.msgtype] if index.stereo is not None else None,
            "skipped": index.skipped, "examples": index.examples}
    arrays["meta"] = np.array(json.dumps(meta))
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, file)


def _load_index(file: Path, path: Path, name: str) -> BagIndex:
    with np.load(file, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))

        def stream(prefix: str, topic_type) -> ImageStream:
            return ImageStream(topic_type[0], topic_type[1], *(z[f"{prefix}_{f}"] for f in
                                                               ("log_ns", "stamp_ns", "ordinal", "change")))

        return BagIndex(path=path, name=name, image=stream("image", meta["image"]), K=z["K"], size=tuple(meta["size"]),
                        camera_info_topic=meta["camera_info_topic"], odom_topic=meta["odom_topic"],
                        odom_stamp_ns=z["odom_stamp_ns"], odom_speed=z["odom_speed"],
                        stereo=stream("stereo", meta["stereo"]) if meta["stereo"] else None,
                        T_stereo=z["T_stereo"] if "T_stereo" in z.files else None,
                        skipped=meta["skipped"], examples=meta["examples"])


def index_bag(path: str | Path, settings: Any, stereo: bool = False, name: str | None = None,
              cache: bool = True) -> BagIndex:
    """Read a bag once and index its images (see the module docstring). `settings`: a BagConfig-like object.

    cache: reuse / write the index under `index_cache_dir()`, keyed by the bag's files (size, mtime) and the
    topic settings, so a restarted training skips the pass over a long bag."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagDataError(f"{path}: not a rosbag2 folder (metadata.yaml missing)")
    name = name or path.name
    if not cache:
        return _index_bag_uncached(path, settings, stereo, name)
    file = index_cache_dir() / f"{_index_key(path, settings, stereo)}.npz"
    if file.is_file():
        try:
            return _load_index(file, path, name)
        except (OSError, ValueError, KeyError, TypeError):  # a damaged cache entry: index again
            pass
    index = _index_bag_uncached(path, settings, stereo, name)
    try:
        _save_index(index, file)
    except OSError:  # a read-only cache only costs the next run the pass over the bag
        pass
    return index


def _index_bag_uncached(path: Path, settings: Any, stereo: bool, name: str) -> BagIndex:
    reader = open_reader(path)
    store = typestore()
    try:
        img_conns = _resolve_image_topic(reader, settings.image_topic, path, "image")
        image_topic, image_type = img_conns[0].topic, img_conns[0].msgtype
        info_topic = settings.camera_info_topic or sibling_topic(settings.image_topic, "camera_info")
        info_conns = _connections(reader, info_topic, (CAMERA_INFO,), path)
        if not info_conns:
            raise BagDataError(f"{path}: no camera_info topic {info_topic} (sensor_msgs/CameraInfo) for the "
                               f"intrinsics of {image_topic} (set data.bag.camera_info_topic)")
        odom_conns = []
        if settings.odom_topic:
            odom_conns = _connections(reader, settings.odom_topic, ODOM_TYPES, path)
            if not odom_conns:
                raise BagDataError(f"{path}: no odometry topic {settings.odom_topic} (nav_msgs/Odometry or "
                                   "geometry_msgs/TwistStamped); set data.bag.odom_topic to '' to train without it")
        st_conns, st_info_conns = [], []
        if stereo:
            st_conns = _resolve_image_topic(reader, settings.stereo_image_topic, path, "stereo image")
            st_info_topic = sibling_topic(settings.stereo_image_topic, "camera_info")
            st_info_conns = _connections(reader, st_info_topic, (CAMERA_INFO,), path)
            if not st_info_conns:
                raise BagDataError(f"{path}: no camera_info topic {st_info_topic} for the stereo camera "
                                   f"{st_conns[0].topic}")
        role = {c.id: "image" for c in img_conns}
        role.update({c.id: "info" for c in info_conns})
        role.update({c.id: "odom" for c in odom_conns})
        role.update({c.id: "stereo" for c in st_conns})
        role.update({c.id: "stereo_info" for c in st_info_conns})
        tf_conns = []
        if stereo and settings.stereo_baseline <= 0:  # the extrinsic from the recorded static tf tree
            tf_conns = _connections(reader, TF_STATIC, (TF_MESSAGE,), path)
            role.update({c.id: "tf_static" for c in tf_conns})
        conns = img_conns + info_conns + odom_conns + st_conns + st_info_conns + tf_conns
        frames = {}  # role -> CameraInfo frame_id
        static_tf: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)

        K = size = K_st = None
        images = _StreamBuilder(image_topic, image_type, None, True)
        st_images = _StreamBuilder(st_conns[0].topic, st_conns[0].msgtype, None, False) if stereo else None
        odom_t, odom_v = [], []
        skipped: dict[str, int] = {}
        examples: dict[str, str] = {}
        seen = 0
        it = reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(it)
            except StopIteration:
                break
            except Exception as exc:  # truncated / corrupted storage file
                raise BagDataError(f"{path}: bag is corrupted or truncated after {seen} messages "
                                   f"({type(exc).__name__}: {exc})") from None
            seen += 1
            kind = role[conn.id]
            where = f"{path}: {conn.topic} message at t={log_ns} ns"
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - any malformed CDR
                if kind in ("image", "stereo"):
                    (images if kind == "image" else st_images).note_receive(log_ns)
                reason = f"undecodable {conn.msgtype} message on {conn.topic}"
                _count(skipped, reason)
                examples.setdefault(reason, f"{where}: {type(exc).__name__}: {exc}")
                continue
            if kind == "tf_static":
                for tr in msg.transforms:
                    static_tf[tr.child_frame_id.lstrip("/")] = (tr.header.frame_id.lstrip("/"), _transform_matrix(tr))
                continue
            if kind == "info" or kind == "stereo_info":
                Ki, si = camera_intrinsics(msg, f"{path}: {conn.topic}")
                frames.setdefault(kind, msg.header.frame_id.lstrip("/"))
                if kind == "info":
                    if K is None:
                        K, size = Ki, si
                    elif si != size or not np.allclose(Ki, K, rtol=1e-6, atol=1e-6):
                        raise BagDataError(f"{where}: the camera changed during the recording (K/size differ from "
                                           "the first CameraInfo); split the bag per camera setting")
                elif K_st is None:
                    K_st = (Ki, si)
            elif kind == "odom":
                v = twist_speed(msg, conn.msgtype)
                if math.isfinite(v):
                    odom_t.append(stamp_ns(msg, log_ns))
                    odom_v.append(v)
                else:
                    _count(skipped, f"non-finite odometry on {conn.topic}")
            else:
                builder = images if kind == "image" else st_images
                try:
                    rgb = decode_image(msg, conn.msgtype, where)
                except BagDataError as exc:
                    builder.note_receive(log_ns)
                    reason = f"undecodable image on {conn.topic}"
                    _count(skipped, reason)
                    examples.setdefault(reason, str(exc))
                    continue
                builder.add(msg, log_ns, rgb if kind == "image" else None)
                builder.size = builder.size or (rgb.shape[1], rgb.shape[0])
                if builder.size != (rgb.shape[1], rgb.shape[0]):
                    raise BagDataError(f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]}, earlier ones "
                                       f"{builder.size[0]}x{builder.size[1]}")
    finally:
        reader.close()

    if not images.log:
        why = f" ({'; '.join(f'{n} {r}: e.g. {examples.get(r, r)}' for r, n in skipped.items())})" if skipped else ""
        raise BagDataError(f"{path}: no decodable image on {image_topic}{why}")
    if K is None:
        raise BagDataError(f"{path}: no decodable CameraInfo on {info_topic}")
    if images.size != size:
        raise BagDataError(f"{path}: images on {image_topic} are {images.size[0]}x{images.size[1]} but "
                           f"{info_topic} says {size[0]}x{size[1]}")
    stereo_stream = None
    if stereo:
        if not st_images.log or K_st is None:
            raise BagDataError(f"{path}: no decodable stereo image / CameraInfo on {st_images.topic}")
        if K_st[1] != size or st_images.size != size or not np.allclose(K_st[0], K, rtol=1e-4, atol=1e-3):
            raise BagDataError(f"{path}: stereo camera {st_images.topic} has other intrinsics or size than "
                               f"{image_topic}; stereo warping needs a rectified pair")
        stereo_stream = st_images.build()
        if settings.stereo_baseline > 0:
            T_stereo = np.eye(4)
            T_stereo[0, 3] = -float(settings.stereo_baseline)
        else:
            T_stereo = stereo_extrinsic(static_tf, frames.get("info", ""), frames.get("stereo_info", ""), path)
    order = np.argsort(np.asarray(odom_t, np.int64), kind="stable")
    return BagIndex(path=path, name=name, image=images.build(), K=K, size=size,
                    camera_info_topic=info_topic, odom_topic=settings.odom_topic if odom_conns else "",
                    odom_stamp_ns=np.asarray(odom_t, np.int64)[order], odom_speed=np.asarray(odom_v, np.float64)[order],
                    stereo=stereo_stream, T_stereo=T_stereo if stereo else None, skipped=skipped, examples=examples)


def _transform_matrix(tr) -> np.ndarray:
    """4x4 T_parent_child of a geometry_msgs/TransformStamped."""
    from semdepth_ros.kitti_to_bag import matrix_from_quat

    t, q = tr.transform.translation, tr.transform.rotation
    T = np.eye(4)
    T[:3, :3] = matrix_from_quat((q.x, q.y, q.z, q.w))
    T[:3, 3] = (t.x, t.y, t.z)
    return T


def stereo_extrinsic(static_tf: dict[str, tuple[str, np.ndarray]], target: str, other: str, path: Path) -> np.ndarray:
    """T_other_target (4x4) from /tf_static transforms {child: (parent, T_parent_child)} between two camera frames.

    Both frames are followed up to their root; they must share it, and their orientations must agree (a
    rectified pair, within 0.5 degree). BagDataError naming the bag and the frames otherwise."""
    def to_root(frame: str) -> tuple[str, np.ndarray]:
        T, seen = np.eye(4), set()
        while frame in static_tf and frame not in seen:
            seen.add(frame)
            parent, T_pc = static_tf[frame]
            T, frame = T_pc @ T, parent
        return frame, T

    hint = "set data.bag.stereo_baseline instead"
    if not target or not other:
        raise BagDataError(f"{path}: the stereo CameraInfo messages carry no frame_id to look up in "
                           f"{TF_STATIC}; {hint}")
    root_t, T_root_target = to_root(target)
    root_o, T_root_other = to_root(other)
    if not static_tf or root_t != root_o:
        raise BagDataError(f"{path}: {TF_STATIC} does not connect the camera frames {target!r} and {other!r}; {hint}")
    T = np.linalg.inv(T_root_other) @ T_root_target
    angle = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1.0, 1.0)))
    if angle > 0.5:
        raise BagDataError(f"{path}: {TF_STATIC} rotates {other!r} by {angle:.2f} degrees against {target!r}; "
                           "stereo warping needs a rectified pair")
    return T


def nearest(sorted_ns: np.ndarray, t_ns: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest element of `sorted_ns` for each t, |gap| in ns); `sorted_ns` must be non-empty."""
    t = np.atleast_1d(np.asarray(t_ns, np.int64))
    hi = np.clip(np.searchsorted(sorted_ns, t), 0, len(sorted_ns) - 1)
    lo = np.clip(hi - 1, 0, len(sorted_ns) - 1)
    pick = np.where(np.abs(sorted_ns[lo] - t) <= np.abs(sorted_ns[hi] - t), lo, hi)
    return pick, np.abs(sorted_ns[pick] - t)


# ------------------------------------------------------------------------------------------ sequence
class BagSequence:
    """One indexed bag with the sequence interface `FrameDataset` reads (frames = image indices in time order).

    Images are read from the bag on demand, one indexed read each; the reader is opened per process.
    """

    def __init__(self, index: BagIndex):
        self.index = index
        self.path = index.path
        self.name = f"rosbag/{index.name}"
        self.image = index.image
        self.cams = (TARGET_CAM, STEREO_CAM) if index.stereo is not None else (TARGET_CAM,)
        self.stereo_match = np.full(len(self.image.log_ns), -1, np.int64)
        self.speed = np.full(len(self.image.log_ns), np.nan)
        self.context_of: dict[int, list[int]] = {}  # filled by select_samples
        self._reader = None
        self._pid = None
        self._conns: dict[str, list] = {}
        self._store = None

    # worker processes open their own reader
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_reader=None, _pid=None, _conns={}, _store=None)
        return state

    def __len__(self) -> int:
        return len(self.image.log_ns)

    def __repr__(self) -> str:
        return f"BagSequence({self.path}, {len(self)} images on {self.image.topic})"

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader, self._pid, self._conns = None, None, {}

    def _open(self):
        if self._reader is None or self._pid != os.getpid():
            self._reader = open_reader(self.path)  # a forked worker never reuses its parent's file handle
            self._pid = os.getpid()
            self._store = typestore()
            self._conns = {}
            for c in self._reader.connections:
                self._conns.setdefault(c.topic, []).append(c)
        return self._reader

    def _stream(self, cam: int) -> tuple[ImageStream, int]:
        if cam == TARGET_CAM:
            return self.image, 1
        if cam == STEREO_CAM and self.index.stereo is not None:
            return self.index.stereo, 1
        raise ValueError(f"{self.path}: camera {cam} is not indexed (cams {self.cams})")

    # the sequence interface of FrameDataset ---------------------------------------------------
    @property
    def frames(self) -> list[int]:
        return list(range(len(self)))

    def has(self, frame: int, cam: int) -> bool:
        if not 0 <= frame < len(self):
            return False
        if cam == TARGET_CAM:
            return True
        return cam == STEREO_CAM and self.index.stereo is not None and self.stereo_match[frame] >= 0

    def image_path(self, frame: int, cam: int = TARGET_CAM) -> str:
        stream, _ = self._stream(cam)
        i = frame if cam == TARGET_CAM else int(self.stereo_match[frame])
        return f"{self.path}: {stream.topic} image {i} (stamp {int(stream.stamp_ns[i])} ns)"

    def load_image(self, frame: int, cam: int = TARGET_CAM) -> np.ndarray:
        """HxWx3 uint8 RGB of image `frame` (cam 3: its matched stereo image), read from the bag now."""
        stream, _ = self._stream(cam)
        i = frame if cam == TARGET_CAM else int(self.stereo_match[frame])
        where = self.image_path(frame, cam)
        reader = self._open()
        t = int(stream.log_ns[i])
        try:
            found = [(c, raw) for c, _, raw in
                     reader.messages(connections=self._conns[stream.topic], start=t, stop=t + 1)]
        except Exception as exc:  # the file changed or was damaged after indexing
            raise BagDataError(f"{where}: cannot read it back ({type(exc).__name__}: {exc})") from None
        k = int(stream.ordinal[i])
        if k >= len(found):
            raise BagDataError(f"{where}: message not found at its indexed time (the bag changed after indexing)")
        conn, raw = found[k]
        try:
            msg = self._store.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001
            raise BagDataError(f"{where}: undecodable message ({type(exc).__name__}: {exc})") from None
        return decode_image(msg, conn.msgtype, where)

    def native_size(self, cam: int = TARGET_CAM) -> tuple[int, int]:
        return self.index.size

    def size_source(self, cam: int = TARGET_CAM) -> str:
        return f"{self.index.camera_info_topic} in {self.path}"

    def K(self, cam: int = TARGET_CAM, size: tuple[int, int] | None = None) -> np.ndarray:
        from semdepth_core.geometry.camera import resize_intrinsics

        K = self.index.K.copy()
        if size is not None and tuple(size) != self.index.size:
            K = resize_intrinsics(K, self.index.size, tuple(size))
        return K

    def stereo_partner(self, cam: int) -> int | None:
        return STEREO_CAM if cam == TARGET_CAM and self.index.stereo is not None else None

    def T_between(self, dst: int, src: int) -> np.ndarray:
        """Maps points of camera `src` into camera `dst` (the stereo extrinsic of `index_bag`)."""
        T = np.eye(4)
        if dst != src and self.index.T_stereo is not None:
            T = self.index.T_stereo if (dst, src) == (STEREO_CAM, TARGET_CAM) else np.linalg.inv(self.index.T_stereo)
        return T.copy()

    def timestamp(self, frame: int) -> float:
        """Header stamp of image `frame` in seconds."""
        return int(self.image.stamp_ns[frame]) * 1e-9

    def motion(self, frame: int, ctx_frames: list[int], cam: int) -> dict:
        """dt [N] (s, header stamps) always; speed (m/s) when the bag's odometry gave one for this target."""
        t0 = int(self.image.stamp_ns[frame])
        out: dict = {"dt": np.array([abs(int(self.image.stamp_ns[f]) - t0) * 1e-9 for f in ctx_frames])}
        if np.isfinite(self.speed[frame]):
            out["speed"] = float(self.speed[frame])
        return out

    def depth_gt(self, frame: int, cam: int, gt_source: str = "auto") -> None:
        return None  # bags carry no depth ground truth

    def label_paths(self, frame: int, cam: int = TARGET_CAM) -> list:
        return []


# ------------------------------------------------------------------------------------------ sampling
@dataclass
class SampleSelection:
    """Targets of one bag after `select_samples`, with what was dropped and why."""

    train: list[int]
    val: list[int]
    dropped: dict[str, int]
    frame_period: float
    time_gaps: int
    val_start_s: float | None


def select_samples(seq: BagSequence, context: Sequence[int], settings: Any,
                   use_stereo: bool = False) -> SampleSelection:
    """Choose the targets of `seq` and their context frames by time (module docstring: "Sampling").

    Sets `seq.context_of`, `seq.speed` and `seq.stereo_match`; returns the train / val targets and the counts."""
    img, idx = seq.image, seq.index
    n = len(img.stamp_ns)
    dropped: dict[str, int] = {}
    if n < 2:
        period = settings.frame_period or 0.1
    else:
        period = settings.frame_period or float(np.median(np.diff(img.stamp_ns))) * 1e-9
    if period <= 0:
        raise BagDataError(f"{seq.path}: images on {img.topic} share one stamp; set data.bag.frame_period")
    period_ns = period * 1e9
    tol_ns = settings.context_tolerance * period_ns
    gaps = int(np.sum(np.diff(img.stamp_ns) > 1.5 * period_ns)) if n > 1 else 0

    # speed of every image from the nearest odometry (within odom_tolerance)
    if idx.odom_topic and len(idx.odom_stamp_ns):
        j, gap = nearest(idx.odom_stamp_ns, img.stamp_ns)
        ok = gap <= settings.odom_tolerance * 1e9
        seq.speed = np.where(ok, idx.odom_speed[j], np.nan)
    # the stereo image of each target (within stereo_tolerance)
    if use_stereo and idx.stereo is not None:
        j, gap = nearest(idx.stereo.stamp_ns, img.stamp_ns)
        seq.stereo_match = np.where(gap <= settings.stereo_tolerance * 1e9, j, -1)

    mode = settings.static_filter
    if mode == "auto":
        mode = "odometry" if idx.odom_topic else "image"
    t_first, t_last = int(img.stamp_ns[0]), int(img.stamp_ns[-1])
    val_start = None
    if settings.val_fraction > 0:
        val_start = t_first + (1.0 - settings.val_fraction) * (t_last - t_first)

    train, val = [], []
    seq.context_of = {}
    for i in range(n):
        t = int(img.stamp_ns[i])
        ideal = np.array([t + o * period_ns for o in context], dtype=np.float64)
        ctx = []
        if len(ideal):
            j, gap = nearest(img.stamp_ns, ideal.round().astype(np.int64))
            if np.any(gap > tol_ns) or np.any(j == i):
                outside = np.any((ideal < t_first - tol_ns) | (ideal > t_last + tol_ns))
                _count(dropped, "context beyond the start/end of the recording" if outside else
                       f"no context image within {settings.context_tolerance:g} frame periods (time gap)")
                continue
            ctx = [int(x) for x in j]
        if idx.odom_topic and not np.isfinite(seq.speed[i]):
            _count(dropped, f"no odometry within {settings.odom_tolerance:g} s of the image stamp")
            continue
        if mode == "odometry" and idx.odom_topic and seq.speed[i] < settings.min_speed:
            _count(dropped, f"static: odometry speed < {settings.min_speed:g} m/s")
            continue
        if mode == "image" and img.change[i] < settings.min_image_change:
            _count(dropped, f"static: image change < {settings.min_image_change:g} grey levels")
            continue
        if use_stereo and seq.stereo_match[i] < 0:
            _count(dropped, f"no stereo image within {settings.stereo_tolerance:g} s")
            continue
        if val_start is not None:
            times = [t, *(int(img.stamp_ns[c]) for c in ctx)]
            if min(times) >= val_start:
                seq.context_of[i] = ctx
                val.append(i)
                continue
            if max(times) >= val_start:
                _count(dropped, "context crosses the train/val time boundary")
                continue
        seq.context_of[i] = ctx
        train.append(i)
    return SampleSelection(train, val, dropped, period, gaps,
                           None if val_start is None else (val_start - t_first) * 1e-9)


# ------------------------------------------------------------------------------------------ dataset
class BagDataset(FrameDataset):
    """FrameDataset over BagSequence targets: the context frames are the ones `select_samples` chose by time."""

    def context_frames(self, sample: Sample) -> list[int]:
        if not self.context:
            return []
        return list(sample.seq.context_of[sample.frame])


def build_bag_datasets(root: str | Path, settings: Any, height: int, width: int, context: Sequence[int],
                       augment: Any = None, stereo: bool = False, cache_images: bool = False,
                       log: Callable[[str], None] | None = print) -> tuple[BagDataset, BagDataset | None, dict]:
    """(train, held-out val or None, summary) from every bag at `root`; the summary counts kept and dropped."""
    root = Path(root)
    bags = find_bags(root)
    context = [int(o) for o in context]
    train_samples, val_samples, per_bag = [], [], []
    totals: dict[str, int] = {}
    for bag in bags:
        name = str(bag.relative_to(root)) if bag != root else bag.name
        index = index_bag(bag, settings, stereo=stereo, name=name, cache=getattr(settings, "index_cache", True))
        seq = BagSequence(index)
        sel = select_samples(seq, context, settings, use_stereo=stereo)
        train_samples += [Sample(seq, i, TARGET_CAM) for i in sel.train]
        val_samples += [Sample(seq, i, TARGET_CAM) for i in sel.val]
        dropped = {**index.skipped, **sel.dropped}
        for reason, k in dropped.items():
            _count(totals, reason, k)
        per_bag.append({
            "bag": str(bag), "image_topic": index.image.topic, "image_type": index.image.msgtype,
            "camera_info_topic": index.camera_info_topic, "odom_topic": index.odom_topic or None,
            "stereo_topic": index.stereo.topic if index.stereo is not None else None,
            "images": len(seq), "size": list(index.size), "frame_period_s": sel.frame_period,
            "duration_s": (int(seq.image.stamp_ns[-1]) - int(seq.image.stamp_ns[0])) * 1e-9,
            "time_gaps": sel.time_gaps, "train": len(sel.train), "val": len(sel.val),
            "val_start_s": sel.val_start_s, "dropped": dropped,
            "examples": index.examples,
        })
        if log:
            drops = ", ".join(f"{k} ({r})" for r, k in dropped.items()) or "none"
            log(f"data: rosbag {name}: {len(seq)} images on {index.image.topic}, {len(sel.train)} train + "
                f"{len(sel.val)} val targets, {sel.time_gaps} time gaps; dropped {drops}")
    summary = {"root": str(root), "bags": per_bag, "train": len(train_samples), "val": len(val_samples),
               "dropped": totals, "context": context}
    if not train_samples:
        raise BagDataError(f"{root}: no training targets left in {len(bags)} bag(s); dropped: "
                           + (", ".join(f"{k} ({r})" for r, k in totals.items()) or "nothing"))
    train = BagDataset(train_samples, height, width, context, augment, with_gt=False, training=True,
                       stereo=stereo, where=str(root), skipped=totals, cache_images=cache_images)
    val = None
    if val_samples:
        val = BagDataset(val_samples, height, width, [], None, with_gt=False, training=False, where=str(root))
    return train, val, summary
