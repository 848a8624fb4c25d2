"""SE(3)/SO(3) helpers: torch versions (differentiable, batched) and numpy twins suffixed `_np`.

Conventions: `T_a_b` maps points in frame b to frame a (X_a = T_a_b @ X_b); T_a_c = T_a_b @ T_b_c.
Euler angles follow the KITTI OXTS convention R = Rz(yaw) @ Ry(pitch) @ Rx(roll).
"""
from __future__ import annotations

import numpy as np
import torch

# ----------------------------------------------------------------------------- numpy twins


def euler_to_matrix_np(roll, pitch, yaw) -> np.ndarray:
    """Rotation R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (radians); scalars -> [3,3], arrays [...] -> [...,3,3]."""
    r, p, y = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (roll, pitch, yaw)))
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    R = np.empty(r.shape + (3, 3), dtype=np.float64)
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr
    R[..., 2, 2] = cp * cr
    return R


def invert_se3_np(T) -> np.ndarray:
    """Inverse of rigid transforms T[...,4,4]: [R^T, -R^T t; 0 1] (exact, no general matrix inverse)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"invert_se3_np expects [...,4,4], got shape {T.shape}")
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out
