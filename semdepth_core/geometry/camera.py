"""Pinhole camera in torch: back-projection and projection (intrinsics formulas: pinhole.py, re-exported here).

Conventions: camera frame x right, y down, z forward; pixel centres at integer (u, v).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pinhole import crop_intrinsics, resize_intrinsics, scale_intrinsics  # noqa: F401 (their home is pinhole.py)


def pixel_grid(H: int, W: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates (u, v, 1) of an HxW image, row-major: [3, H*W]."""
    if int(H) <= 0 or int(W) <= 0:
        raise ValueError(f"pixel_grid needs positive H, W, got {H}x{W}")
    v, u = torch.meshgrid(torch.arange(H, device=device, dtype=dtype),
                          torch.arange(W, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(H * W, device=device, dtype=dtype)], 0)


def _check_K(K: torch.Tensor, B: int, name: str) -> None:
    if not isinstance(K, torch.Tensor) or K.ndim != 3 or K.shape[1:] != (3, 3) or K.shape[0] not in (1, B):
        shape = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"{name} must be a tensor [B,3,3] (B={B} or 1), got {shape}")


def backproject(depth: torch.Tensor, K_inv: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to 3D in the camera frame: X = depth * K^-1 (u,v,1). depth [B,1,H,W] -> [B,3,H,W]."""
    if not isinstance(depth, torch.Tensor) or depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be a tensor [B,1,H,W], got {getattr(depth, 'shape', type(depth))}")
    B, _, H, W = depth.shape
    _check_K(K_inv, B, "K_inv")
    rays = K_inv.to(depth.dtype) @ pixel_grid(H, W, depth.device, depth.dtype)  # [B,3,H*W]
    return rays.reshape(-1, 3, H, W) * depth


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of camera-frame points [B,3,H,W] -> (uv [B,2,H,W] pixels, z [B,1,H,W])."""
    # |z| below eps is replaced by ±eps in the division only, so uv stays finite; z is returned as is
    # so callers can mask points behind (or on) the camera plane.
    if not isinstance(points, torch.Tensor) or points.ndim != 4 or points.shape[1] != 3:
        raise ValueError(f"points must be a tensor [B,3,H,W], got {getattr(points, 'shape', type(points))}")
    B, _, H, W = points.shape
    _check_K(K, B, "K")
    pix = K.to(points.dtype) @ points.reshape(B, 3, H * W)  # [B,3,H*W]
    return perspective_divide(pix, H, W, eps)[0], points[:, 2:3]


def perspective_divide(pix: torch.Tensor, H: int, W: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Homogeneous image points [B,3,H*W] (z = depth in that camera) -> (uv [B,2,H,W] pixels, z [B,1,H,W]).

    |z| below eps is replaced by ±eps in the division only, so uv stays finite; z is returned as is.
    """
    B = pix.shape[0]
    z = pix[:, 2:3]
    z_safe = torch.where(z >= 0, z.clamp_min(eps), z.clamp_max(-eps))
    return (pix[:, :2] / z_safe).reshape(B, 2, H, W), z.reshape(B, 1, H, W)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: intrinsics K [3,3] (numpy float64) valid for an image of width x height."""

    K: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"Camera.K must be 3x3, got {K.shape}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def K_inv(self) -> np.ndarray:
        return np.linalg.inv(self.K)

    def scaled(self, width: int, height: int) -> "Camera":
        """Camera for the image resized to width x height (half-pixel rule)."""
        return Camera(resize_intrinsics(self.K, (self.width, self.height), (width, height)), width, height)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """Camera for the crop [y0:y0+height, x0:x0+width]; the crop must lie inside the image."""
        if x0 < 0 or y0 < 0 or width <= 0 or height <= 0 or x0 + width > self.width or y0 + height > self.height:
            raise ValueError(f"crop ({x0},{y0},{width}x{height}) outside the {self.width}x{self.height} image")
        return Camera(crop_intrinsics(self.K, x0, y0), width, height)

    def tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """K as a torch tensor [3,3]."""
        return torch.as_tensor(self.K, dtype=dtype, device=device)
