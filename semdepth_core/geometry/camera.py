"""Pinhole camera: intrinsics for resize/crop (half-pixel rule), back-projection and projection.

Conventions: camera frame x right, y down, z forward; pixel centres at integer (u, v).
"""
from __future__ import annotations

import numpy as np
import torch


def _copy(K):
    return K.clone() if isinstance(K, torch.Tensor) else np.array(K, dtype=np.float64, copy=True)


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics after resizing by (sx, sy): fx*=sx, cx=(cx+0.5)*sx-0.5 (same for y). K: [...,3,3]."""
    K = _copy(K)
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def resize_intrinsics(K, src_size: tuple[int, int], dst_size: tuple[int, int]):
    """Intrinsics for an image resized from src_size=(W0,H0) to dst_size=(W,H)."""
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
