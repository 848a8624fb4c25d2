"""sensor_msgs Image / CameraInfo / PointCloud2 <-> numpy, vectorised.

The math is plain numpy; message classes are imported lazily inside the builders so the
decoders also accept `rosbags` dataclasses (same field names) and the module imports without
rclpy.

Conventions (docs/architecture.md, REP 103/117/118):
- images in numpy are HxWx3 uint8 RGB;
- depth images: `32FC1` in metres with NaN = no estimate (REP 117), or `16UC1` in millimetres
  with 0 = invalid (depths beyond 65.535 m are not representable and become 0);
- point clouds are in the optical frame of the image (x right, y down, z forward).

PointCloud2 layout written by `make_pointcloud2` (point_step 20 bytes, no padding):

    offset  0  x      FLOAT32
    offset  4  y      FLOAT32
    offset  8  z      FLOAT32
    offset 12  rgb    FLOAT32 (PCL convention: uint32 0x00RRGGBB reinterpreted as float32)
    offset 16  label  UINT32  (Cityscapes trainId, 255 = ignore)

An organised cloud keeps the image grid (height=H, width=W) with NaN x/y/z for pixels without a
valid point; an unorganised cloud has height=1 and only valid points (is_dense=True).
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from semdepth_core.geometry.pinhole import pixel_rays, resize_intrinsics


class ImageConversionError(ValueError):
    """An Image message cannot be decoded. `kind`: 'encoding', 'size', 'step' or 'truncated'."""

    def __init__(self, message: str, kind: str = "image"):
        super().__init__(message)
        self.kind = kind


# encoding -> (channels, dtype of one channel)
_IMAGE_ENCODINGS: dict[str, tuple[int, type]] = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "8UC1": (1, np.uint8),
    "8UC3": (3, np.uint8),  # treated like bgr8 (OpenCV order), as cv_bridge does
    "mono16": (1, np.uint16),
    "16UC1": (1, np.uint16),
}
SUPPORTED_ENCODINGS = tuple(_IMAGE_ENCODINGS)

_HOST_BIG_ENDIAN = sys.byteorder == "big"

POINT_STEP = 20
# sensor_msgs/PointField datatype constants
_PF_INT8, _PF_UINT8, _PF_INT16, _PF_UINT16, _PF_INT32, _PF_UINT32, _PF_FLOAT32, _PF_FLOAT64 = range(1, 9)
_PF_DTYPES = {
    _PF_INT8: "i1", _PF_UINT8: "u1", _PF_INT16: "i2", _PF_UINT16: "u2",
    _PF_INT32: "i4", _PF_UINT32: "u4", _PF_FLOAT32: "f4", _PF_FLOAT64: "f8",
}


def _as_uint8_buffer(data) -> np.ndarray:
    """Zero-copy uint8 view of a message `data` field (array.array, bytes, ndarray, or list)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def to_byte_array(buf: np.ndarray) -> array.array:
    """A C-contiguous ndarray as array.array('B') - the fastest value rclpy's `data` setters take."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(buf).data.cast("B"))
    return out


def _image_pixels(msg) -> tuple[np.ndarray, str]:
    """Decode `msg` to an [H,W,C] array of its native channel type (a view where possible)."""
    enc = str(msg.encoding).strip()
    if enc not in _IMAGE_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {enc!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})", "encoding")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"image has zero size ({w}x{h})", "size")
    ch, dt = _IMAGE_ENCODINGS[enc]
    itemsize = np.dtype(dt).itemsize
    row_bytes = w * ch * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} < width*bytes_per_pixel = {w}*{ch * itemsize} = {row_bytes} ({enc})", "step")
    buf = _as_uint8_buffer(msg.data)
    need = step * h
    if buf.size < need:
        raise ImageConversionError(
            f"truncated image data: {buf.size} bytes < step*height = {step}*{h} = {need} ({w}x{h} {enc})", "truncated")
    rows = buf[:need].reshape(h, step)[:, :row_bytes]
    if itemsize > 1:
        dtype = np.dtype(dt).newbyteorder(">" if msg.is_bigendian else "<")
        rows = np.ascontiguousarray(rows).view(dtype)
    return rows.reshape(h, w, ch), enc


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB (a fresh contiguous array).

    Handles rgb8, bgr8, rgba8, bgra8, mono8 (also 8UC1/8UC3) and mono16/16UC1 (scaled to 8 bit by
    >> 8), honouring row padding (`step`) and `is_bigendian`. Raises ImageConversionError.
    """
    px, enc = _image_pixels(msg)
    if enc == "rgb8":
        return np.array(px, copy=True, order="C")  # never alias the message buffer
    if enc in ("rgba8",):
        return np.ascontiguousarray(px[..., :3])
    if enc in ("bgr8", "8UC3"):
        return np.ascontiguousarray(px[..., ::-1])
    if enc == "bgra8":
        return np.ascontiguousarray(px[..., 2::-1])
    if px.dtype.itemsize == 2:
        px = (px >> 8).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(px, px.shape[:2] + (3,)))


COMPRESSED_FORMATS = ("jpeg", "png")


def compressed_format(fmt: str) -> str:
    """The codec of a sensor_msgs/CompressedImage `format` ('jpeg', 'png', 'bgr8; jpeg compressed bgr8', ...)."""
    f = str(fmt).strip().lower()
    if "compresseddepth" in f:
        raise ImageConversionError(f"format {fmt!r} is a compressedDepth stream (a depth image, not a camera "
                                   "image)", "encoding")
    codec = f.split(";")[-1].strip().split(" ")[0] if f else ""
    codec = {"jpg": "jpeg"}.get(codec, codec)
    if codec not in COMPRESSED_FORMATS:
        raise ImageConversionError(f"unsupported CompressedImage format {fmt!r} (supported: jpeg, png)", "encoding")
    return codec


def compressed_image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, colour or grey, 8 or 16 bit) -> HxWx3 uint8 RGB via OpenCV."""
    import cv2

    compressed_format(msg.format)
    buf = _as_uint8_buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("empty CompressedImage data", "truncated")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageConversionError(f"CompressedImage ({msg.format!r}, {buf.size} bytes) does not decode", "truncated")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageConversionError(f"CompressedImage decodes to {img.dtype}; expected 8 or 16 bit", "encoding")
    if img.ndim == 2:
        return np.ascontiguousarray(np.broadcast_to(img[..., None], img.shape + (3,)))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR, as image_transport encodes bgr8


def rgb_to_compressed_image_msg(rgb: np.ndarray, header=None, fmt: str = "jpeg", quality: int = 90):
    """HxWx3 uint8 RGB -> sensor_msgs/CompressedImage as compressed_image_transport writes it (bgr8 jpeg/png)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"fmt must be one of {COMPRESSED_FORMATS}, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"bgr8; {fmt} compressed bgr8"
    msg.data = to_byte_array(enc.reshape(-1))
    return msg


def image_msg_to_array(msg) -> np.ndarray:
    """Any supported Image (also 32FC1 / 16UC1 depth) -> [H,W] or [H,W,C] array in native units."""
    if str(msg.encoding).strip() == "32FC1":
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        if h <= 0 or w <= 0 or step < 4 * w:
            raise ImageConversionError(f"bad 32FC1 image geometry {w}x{h} step {step}", "size")
        buf = _as_uint8_buffer(msg.data)
        if buf.size < step * h:
            raise ImageConversionError(f"truncated 32FC1 image data: {buf.size} < {step * h}", "truncated")
        rows = np.ascontiguousarray(buf[: step * h].reshape(h, step)[:, : 4 * w])
        return rows.view(np.dtype("f4").newbyteorder(">" if msg.is_bigendian else "<")).astype(np.float32)
    px, _ = _image_pixels(msg)
    out = np.array(px)
    return out[..., 0] if out.shape[2] == 1 else out


def _new_image(header, height: int, width: int, encoding: str, pixels: np.ndarray):
    from sensor_msgs.msg import Image

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = int(height)
    msg.width = int(width)
    msg.encoding = encoding
    msg.is_bigendian = _HOST_BIG_ENDIAN
    msg.step = int(pixels.nbytes // max(height, 1))
    msg.data = to_byte_array(pixels)
    return msg


def rgb_to_image_msg(rgb: np.ndarray, header=None, encoding: str = "rgb8"):
    """HxWx3 uint8 RGB -> sensor_msgs/Image in `encoding` (rgb8, bgr8, rgba8, bgra8 or mono8)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        px = rgb
    elif encoding == "bgr8":
        px = rgb[..., ::-1]
    elif encoding in ("rgba8", "bgra8"):
        px = np.empty((h, w, 4), np.uint8)
        px[..., :3] = rgb if encoding == "rgba8" else rgb[..., ::-1]
        px[..., 3] = 255
    elif encoding == "mono8":
        px = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    else:
        raise ValueError(f"rgb_to_image_msg: unsupported encoding {encoding!r}")
    return _new_image(header, h, w, encoding, px)


def depth_to_image_msg(depth_m: np.ndarray, header=None, encoding: str = "32FC1"):
    """Depth [H,W] in metres -> Image. Non-finite or <= 0 depths are invalid.

    32FC1: metres, invalid = NaN (REP 117). 16UC1: millimetres (rounded), invalid = 0; depths that
    do not fit in 16 bits (> 65.535 m) are also written as 0 (not representable).
    """
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H,W], got shape {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    if encoding == "32FC1":
        px = np.where(valid, d, np.float32(np.nan)).astype(np.float32)
    elif encoding == "16UC1":
        mm = np.where(valid, d * 1000.0, 0.0)
        mm = np.where(mm < 65535.5, np.rint(mm), 0.0)
        px = mm.astype(np.uint16)
    else:
        raise ValueError(f"depth encoding must be '32FC1' or '16UC1', got {encoding!r}")
    return _new_image(header, d.shape[0], d.shape[1], encoding, px)


def labels_to_image_msg(labels: np.ndarray, header=None):
    """Label map [H,W] (trainIds, 255 = ignore) -> mono8 Image."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be [H,W], got shape {lab.shape}")
    if lab.dtype != np.uint8:
        lab = np.where((lab >= 0) & (lab < 256), lab, 255).astype(np.uint8)
    return _new_image(header, lab.shape[0], lab.shape[1], "mono8", lab)


# ---------------------------------------------------------------------------------------- camera info
def stamp_ns(header) -> int:
    """A std_msgs/Header's stamp as integer nanoseconds (sec * 1e9 + nanosec)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def camera_info_to_K(msg) -> np.ndarray:
    """CameraInfo.k -> 3x3 float64; raises ValueError for an uncalibrated (zero) matrix."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"CameraInfo has no valid intrinsics (fx={K[0, 0]}, fy={K[1, 1]})")
    return K


# Half-pixel-rule scaling of a 3x3 K or a 3x4 projection P (its 4th column scales like fx / fy); its one
# home is semdepth_core.geometry.pinhole, which imports only numpy.
scale_K = resize_intrinsics


def scaled_camera_info(msg, width: int, height: int):
    """A new CameraInfo for the same camera at another resolution (K and P rescaled, D and R kept)."""
    from sensor_msgs.msg import CameraInfo

    w0, h0 = int(msg.width), int(msg.height)
    out = CameraInfo()
    out.header = msg.header
    out.width, out.height = int(width), int(height)
    out.distortion_model = msg.distortion_model
    out.d = [float(v) for v in msg.d]
    out.r = [float(v) for v in msg.r]
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    if (w0, h0) != (out.width, out.height):
        if w0 <= 0 or h0 <= 0:
            raise ValueError(f"CameraInfo has zero size ({w0}x{h0}); cannot rescale")
        K = scale_K(K, (w0, h0), (out.width, out.height))
        P = scale_K(P, (w0, h0), (out.width, out.height))
    out.k = K.reshape(-1).tolist()
    out.p = P.reshape(-1).tolist()
    out.binning_x = int(msg.binning_x)
    out.binning_y = int(msg.binning_y)
    return out


def make_camera_info(header, K: np.ndarray, width: int, height: int, P: np.ndarray | None = None):
    """A rectified pinhole CameraInfo (plumb_bob, zero distortion, R = I)."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = np.asarray(K, dtype=np.float64).reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    if P is None:
        P = np.hstack([np.asarray(K, dtype=np.float64), np.zeros((3, 1))])
    msg.p = np.asarray(P, dtype=np.float64).reshape(-1).tolist()
    return msg


# ----------------------------------------------------------------------------------------- point clouds
@dataclass
class PointArrays:
    """Points from a depth map. xyz [N,3] float32 (optical frame), rgb [N,3] uint8, labels [N] uint32.

    `shape` = (rows, cols) when the points keep the (decimated) image grid (invalid -> NaN xyz),
    None when only valid points are kept.
    """
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    shape: tuple[int, int] | None


_RAY_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _rays(K: np.ndarray, h: int, w: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray slopes of the decimated grid (geometry.pinhole.pixel_rays), each [rows, cols] float32, cached.

    x/z = (u - cx - s*(v - cy)/fy) / fx and y/z = (v - cy) / fy, with s the skew K[0,1].
    The arrays are broadcast views (cheap); `np.ascontiguousarray` them before boolean indexing.
    """
    key = (h, w, stride) + tuple(float(v) for v in np.asarray(K, np.float64)[:2].reshape(-1))
    hit = _RAY_CACHE.get(key)
    if hit is None:
        xr, yr = pixel_rays(K, h, w, stride)
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        hit = _RAY_CACHE[key] = (np.ascontiguousarray(xr, dtype=np.float32), np.ascontiguousarray(yr, dtype=np.float32))
    return hit


def _valid_mask(d: np.ndarray, lab: np.ndarray | None, min_range: float, max_range: float,
                exclude_labels: Iterable[int]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > min_range) & (d <= max_range)
    excl = np.asarray(list(exclude_labels), dtype=np.int64)
    if lab is not None and excl.size:
        valid &= ~np.isin(lab, excl)
    return valid


def _prepare(depth, K, rgb, labels, stride):
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H,W], got {d.shape}")
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"intrinsics need fx, fy > 0, got fx={K[0, 0]} fy={K[1, 1]}")
    h, w = d.shape
    lab = col = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (h, w):
            raise ValueError(f"labels shape {lab.shape} != depth shape {(h, w)}")
        lab = lab[::stride, ::stride]
    if rgb is not None:
        col = np.asarray(rgb, dtype=np.uint8)
        if col.shape != (h, w, 3):
            raise ValueError(f"rgb shape {col.shape} != {(h, w, 3)}")
        col = col[::stride, ::stride]
    xr, yr = _rays(K, h, w, stride)
    return d[::stride, ::stride], K, lab, col, xr, yr


def depth_to_points(depth: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None,
                    labels: np.ndarray | None = None, stride: int = 1, max_range: float = np.inf,
                    min_range: float = 0.0, exclude_labels: Iterable[int] = (),
                    organized: bool = False) -> PointArrays:
    """Back-project depth [H,W] (metres along the optical axis) through K into the optical frame.

    A pixel is valid when its depth is finite, in (min_range, max_range] and its label is not in
    `exclude_labels`. `stride` keeps every stride-th row and column. With organized=True the
    (decimated) grid is kept and invalid points get NaN coordinates; otherwise only valid points
    are returned. Missing rgb -> white, missing labels -> 255.
    """
    d, K, lab, col, xr, yr = _prepare(depth, K, rgb, labels, stride)
    rows, cols = d.shape
    valid = _valid_mask(d, lab, min_range, max_range, exclude_labels)
    if organized:
        n = rows * cols
        z = np.where(valid, d, np.float32(np.nan))
        xyz = np.stack([z * xr, z * yr, z], axis=-1).reshape(n, 3)
        out_rgb = col.reshape(n, 3) if col is not None else np.full((n, 3), 255, np.uint8)
        out_lab = lab.reshape(n).astype(np.uint32) if lab is not None else np.full(n, 255, np.uint32)
        return PointArrays(xyz, out_rgb, out_lab, (rows, cols))
    m = valid.reshape(-1)
    z = d.reshape(-1)[m]
    xyz = np.stack([z * xr.reshape(-1)[m], z * yr.reshape(-1)[m], z], axis=-1)
    n = z.size
    out_rgb = col.reshape(-1, 3)[m] if col is not None else np.full((n, 3), 255, np.uint8)
    out_lab = lab.reshape(-1)[m].astype(np.uint32) if lab is not None else np.full(n, 255, np.uint32)
    return PointArrays(xyz, out_rgb, out_lab, None)


def pack_rgb(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """[...,3] uint8 RGB -> [...] uint32 0x00RRGGBB (the PCL packed-rgb layout)."""
    c = np.asarray(rgb, dtype=np.uint8)
    if out is None:
        out = np.empty(c.shape[:-1], np.uint32)
    np.left_shift(c[..., 0], 16, out=out, dtype=np.uint32)
    out |= np.left_shift(c[..., 1], 8, dtype=np.uint32)
    out |= c[..., 2]
    return out


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """[N] packed rgb (uint32, or its float32 reinterpretation) -> [N,3] uint8."""
    p = np.asarray(packed)
    if p.dtype != np.uint32:
        p = np.ascontiguousarray(p, dtype=np.float32).view(np.uint32)
    return np.stack([(p >> 16) & 0xFF, (p >> 8) & 0xFF, p & 0xFF], axis=-1).astype(np.uint8)


_WHITE = np.uint32(0x00FFFFFF)


def _point_fields():
    from sensor_msgs.msg import PointField

    specs = (("x", 0, _PF_FLOAT32), ("y", 4, _PF_FLOAT32), ("z", 8, _PF_FLOAT32),
             ("rgb", 12, _PF_FLOAT32), ("label", 16, _PF_UINT32))
    return [PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in specs]


def _alloc_points(n: int, reuse=None) -> tuple[array.array, np.ndarray, np.ndarray]:
    """The message byte buffer for n points and its [n,5] uint32 / float32 views: numpy writes
    straight into the array.array that becomes `msg.data` (no extra copy).

    `reuse`: a PointCloud2 built here earlier and already published (rclpy serialises in
    publish(), so it may be refilled afterwards). Its buffer is resized and refilled instead of
    allocating a fresh one: a fresh 9 MB buffer is a new mmap whose first-touch page faults cost
    more than the arithmetic (~10 ms vs ~3 ms for 1242x375, benchmarks/pointcloud.py).
    """
    need = n * POINT_STEP
    raw = getattr(reuse, "data", None)
    if isinstance(raw, array.array) and raw.typecode == "B":
        if len(raw) > need:
            del raw[need:]
        elif len(raw) < need:
            raw.frombytes(bytes(need - len(raw)))
    else:
        raw = array.array("B", b"\0") * need
    u = np.frombuffer(raw, dtype=np.uint32).reshape(n, 5) if n else np.empty((0, 5), np.uint32)
    return raw, u, u.view(np.float32)


def _cloud_msg(header, raw: array.array, height: int, width: int, dense: bool, reuse=None):
    from sensor_msgs.msg import PointCloud2

    msg = reuse if isinstance(reuse, PointCloud2) else PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.fields = _point_fields()
    msg.is_bigendian = _HOST_BIG_ENDIAN
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * int(width)
    msg.data = raw
    msg.is_dense = bool(dense)
    return msg


def make_pointcloud2(header, xyz: np.ndarray, rgb: np.ndarray | None = None,
                     labels: np.ndarray | None = None, organized_shape: tuple[int, int] | None = None,
                     reuse=None):
    """sensor_msgs/PointCloud2 with fields x, y, z, rgb (packed float32), label (uint32); 20-byte points.

    organized_shape=(H, W) makes an organised cloud (N must equal H*W; NaN xyz = no point);
    otherwise height=1, width=N. Missing rgb -> white, missing labels -> 255.
    `reuse`: an already-published cloud from this module whose message and buffer are refilled.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be [N,3], got {xyz.shape}")
    n = xyz.shape[0]
    if rgb is not None and np.shape(rgb) != (n, 3):
        raise ValueError(f"rgb must be [N,3] = {(n, 3)}, got {np.shape(rgb)}")
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f"labels must be [N] = ({n},), got {np.shape(labels)}")
    if organized_shape is not None:
        hgt, wid = int(organized_shape[0]), int(organized_shape[1])
        if hgt * wid != n:
            raise ValueError(f"organized_shape {organized_shape} does not hold {n} points")
    else:
        hgt, wid = 1, n
    raw, u, f = _alloc_points(n, reuse)
    for k in range(3):
        f[:, k] = xyz[:, k]
    if rgb is None:
        u[:, 3] = _WHITE
    else:
        pack_rgb(rgb, out=u[:, 3])
    u[:, 4] = 255 if labels is None else labels
    dense = True if organized_shape is None or n == 0 else bool(np.isfinite(xyz).all())
    return _cloud_msg(header, raw, hgt, wid, dense, reuse)


def depth_to_pointcloud2(header, depth: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None,
                         labels: np.ndarray | None = None, stride: int = 1, max_range: float = np.inf,
                         min_range: float = 0.0, exclude_labels: Iterable[int] = (),
                         organized: bool = True, reuse=None):
    """depth_to_points + make_pointcloud2 fused: writes each field straight into the message buffer.

    Same validity rules and layout as the two-step path (tests check they agree); this is the one
    the node uses (1242x375 in about 3 ms with `reuse`, see benchmarks/pointcloud.py).
    """
    d, K, lab, col, xr, yr = _prepare(depth, K, rgb, labels, stride)
    rows, cols = d.shape
    valid = _valid_mask(d, lab, min_range, max_range, exclude_labels)
    if organized:
        n = rows * cols
        raw, u, f = _alloc_points(n, reuse)
        z = f[:, 2].reshape(rows, cols)
        np.copyto(z, d)
        all_valid = bool(valid.all())
        if not all_valid:
            z[~valid] = np.nan
        np.multiply(z, xr, out=f[:, 0].reshape(rows, cols))
        np.multiply(z, yr, out=f[:, 1].reshape(rows, cols))
        if col is None:
            u[:, 3] = _WHITE
        else:
            pack_rgb(col, out=u[:, 3].reshape(rows, cols))
        if lab is None:
            u[:, 4] = 255
        else:
            u[:, 4].reshape(rows, cols)[...] = lab
        return _cloud_msg(header, raw, rows, cols, all_valid, reuse)
    m = valid.reshape(-1)
    z = d.reshape(-1)[m]
    n = z.size
    raw, u, f = _alloc_points(n, reuse)
    f[:, 2] = z
    np.multiply(z, xr.reshape(-1)[m], out=f[:, 0])
    np.multiply(z, yr.reshape(-1)[m], out=f[:, 1])
    if col is None:
        u[:, 3] = _WHITE
    else:
        u[:, 3] = pack_rgb(col).reshape(-1)[m]
    u[:, 4] = 255 if lab is None else lab.reshape(-1)[m]
    return _cloud_msg(header, raw, 1, n, True, reuse)


def pointcloud2_to_array(msg) -> np.ndarray:
    """PointCloud2 -> structured array [height, width] with one named field per PointField (count 1)."""
    names, formats, offsets = [], [], []
    endian = ">" if msg.is_bigendian else "<"
    for f in msg.fields:
        if f.datatype not in _PF_DTYPES:
            raise ValueError(f"PointField {f.name!r}: unknown datatype {f.datatype}")
        base = np.dtype(endian + _PF_DTYPES[f.datatype])
        names.append(f.name)
        formats.append(base if int(f.count) <= 1 else (base, int(f.count)))
        offsets.append(int(f.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})
    h, w = int(msg.height), int(msg.width)
    buf = _as_uint8_buffer(msg.data)
    if int(msg.row_step) < w * int(msg.point_step) or buf.size < int(msg.row_step) * h:
        raise ValueError(f"PointCloud2 data too short: {buf.size} bytes for {h}x{w} points "
                         f"(row_step {msg.row_step}, point_step {msg.point_step})")
    rows = buf[: int(msg.row_step) * h].reshape(h, int(msg.row_step))[:, : w * int(msg.point_step)]
    return np.array(rows, copy=True, order="C").view(dtype).reshape(h, w)


def make_xyzi_pointcloud2(header, points: np.ndarray):
    """[N,4] float32 x, y, z, intensity -> unorganised PointCloud2 (16-byte points), e.g. Velodyne."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.ascontiguousarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise ValueError(f"points must be [N,4], got {pts.shape}")
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, pts.shape[0]
    msg.fields = [PointField(name=n, offset=4 * i, datatype=_PF_FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]
    msg.is_bigendian = _HOST_BIG_ENDIAN
    msg.point_step = 16
    msg.row_step = 16 * pts.shape[0]
    msg.data = to_byte_array(pts)
    msg.is_dense = bool(np.isfinite(pts).all())
    return msg
