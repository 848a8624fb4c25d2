"""Pinhole math without torch: intrinsics for resize/crop (half-pixel rule), pixel rays, numpy back-projection.

The one home of these formulas for the training code (via geometry.camera), the ROS conversions and the
synthetic renderer; it imports only numpy (torch tensors are handled when the caller already has torch).
Conventions: camera frame x right, y down, z forward; pixel centres at integer (u, v).
"""
from __future__ import annotations

import sys

import numpy as np


def _copy(K):
    """A float64 numpy copy of K, or a clone when K is a torch tensor."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(K, torch.Tensor):
        return K.clone()
    return np.array(K, dtype=np.float64, copy=True)


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics after resizing by (sx, sy): fx*=sx, cx=(cx+0.5)*sx-0.5 (same for y). K: [...,3,3], or a
    [...,3,4] projection matrix P, whose 4th column (fx*Tx, fy*Ty) scales like fx and fy."""
    K = _copy(K)
    if K.ndim < 2 or K.shape[-2] != 3 or K.shape[-1] not in (3, 4):
        raise ValueError(f"K must be [...,3,3] (or a [...,3,4] projection), got shape {tuple(K.shape)}")
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    if K.shape[-1] == 4:
        K[..., 0, 3] *= sx
        K[..., 1, 3] *= sy
    return K


def resize_intrinsics(K, src_size: tuple[int, int], dst_size: tuple[int, int]):
    """Intrinsics (or a 3x4 projection) for an image resized from src_size=(W0,H0) to dst_size=(W,H)."""
    (w0, h0), (w, h) = src_size, dst_size
    if min(w0, h0, w, h) <= 0:
        raise ValueError(f"image sizes must be positive, got {src_size} -> {dst_size}")
    return scale_intrinsics(K, w / w0, h / h0)


def crop_intrinsics(K, x0: float, y0: float):
    """Intrinsics after cropping the image at top-left (x0, y0)."""
    K = _copy(K)
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return K


def pixel_rays(K, height: int, width: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Slopes x/z and y/z of the rays through the pixel centres (every `stride`-th row and column), float64.

    y/z = (v - cy) / fy and x/z = (u - cx - s * y/z) / fx, with s the skew K[0,1]; the point at depth z of
    pixel (u, v) is (x/z, y/z, 1) * z. Returns two [rows, cols] arrays (y/z is a broadcast view).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got shape {K.shape}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"intrinsics need fx, fy > 0, got fx={K[0, 0]} fy={K[1, 1]}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    u = np.arange(0, int(width), int(stride), dtype=np.float64)
    v = np.arange(0, int(height), int(stride), dtype=np.float64)
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    yr = (v - cy) / fy
    xr = (u[None, :] - cx - s * yr[:, None]) / fx
    return xr, np.broadcast_to(yr[:, None], xr.shape)


def backproject_np(depth, K) -> np.ndarray:
    """Numpy back-projection: depth [H,W] (camera z), K [3,3] -> camera-frame points [H,W,3] float64."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H,W], got shape {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got shape {K.shape}")
    xr, yr = pixel_rays(K, depth.shape[0], depth.shape[1])
    return np.stack([xr * depth, yr * depth, depth], axis=-1)
