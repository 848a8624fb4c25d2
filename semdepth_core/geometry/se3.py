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


# ----------------------------------------------------------------------------- torch

_SMALL_ANGLE = 1e-4  # below this (radians) the Taylor expansions are exact to float64 precision


def _check_last(x: torch.Tensor, n: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name} must have shape [...,{n}], got {tuple(x.shape)}")


def _check_mat(T: torch.Tensor, n: int, name: str) -> None:
    if not isinstance(T, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(T).__name__}")
    if T.ndim < 2 or T.shape[-2:] != (n, n):
        raise ValueError(f"{name} must have shape [...,{n},{n}], got {tuple(T.shape)}")


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix [v]_x of v[...,3] -> [...,3,3]."""
    _check_last(v, 3, "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: aa[...,3] (axis * angle, radians) -> R[...,3,3]; finite values and gradients at 0."""
    _check_last(aa, 3, "aa")
    theta2 = (aa * aa).sum(-1)[..., None, None]  # [...,1,1]
    small = theta2 < _SMALL_ANGLE**2
    # evaluate the exact coefficients only on a safe argument so that gradients stay finite at 0
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)  # sin(t)/t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Inverse of Rodrigues: R[...,3,3] -> aa[...,3] with angle in [0, pi]; stable near 0 and pi."""
    _check_mat(R, 3, "R")
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((tr - 1.0) / 2.0).clamp(-1.0, 1.0)
    vee = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = 0.5 * vee.norm(dim=-1)
    theta = torch.atan2(sin, cos)  # [...]
    # regular branch: aa = vee * theta / (2 sin theta); Taylor near 0
    small = theta < _SMALL_ANGLE
    safe_sin = torch.where(small, torch.ones_like(sin), sin)
    factor = torch.where(small, 0.5 + theta * theta / 12.0, theta / (2.0 * safe_sin))
    aa_reg = vee * factor[..., None]
    # near pi: sym(R) = cos I + (1 - cos) n n^T; take the best-conditioned row of n n^T
    sym = 0.5 * (R + R.transpose(-1, -2))
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    nn = (sym - cos[..., None, None] * eye) / (1.0 - cos).clamp_min(1e-12)[..., None, None]
    diag = torch.diagonal(nn, dim1=-2, dim2=-1)  # [...,3]
    idx = diag.argmax(-1)  # [...]
    row = torch.gather(nn, -2, idx[..., None, None].expand(idx.shape + (1, 3)))[..., 0, :]
    n = row / row.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sign = torch.where((n * vee).sum(-1) < 0, -1.0, 1.0).to(R.dtype)
    aa_pi = n * (sign * theta)[..., None]
    near_pi = cos < -0.99
    return torch.where(near_pi[..., None], aa_pi, aa_reg)


def euler_to_matrix(roll: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Torch twin of euler_to_matrix_np: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), [...] -> [...,3,3]."""
    r, p, y = torch.broadcast_tensors(*(torch.as_tensor(a) for a in (roll, pitch, yaw)))
    if not r.is_floating_point():
        r, p, y = r.double(), p.double(), y.double()
    cr, sr, cp, sp, cy, sy = r.cos(), r.sin(), p.cos(), p.sin(), y.cos(), y.sin()
    rows = [
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ]
    return torch.stack(rows, -1).reshape(r.shape + (3, 3))


def make_se3(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Assemble T[...,4,4] from R[...,3,3] and t[...,3]."""
    _check_mat(R, 3, "R")
    _check_last(t, 3, "t")
    top = torch.cat([R, t[..., None]], dim=-1)  # [...,3,4]
    bottom = torch.zeros(top.shape[:-2] + (1, 4), dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def pose_vec_to_mat(vec: torch.Tensor) -> torch.Tensor:
    """Pose vectors vec[...,6] = (tx,ty,tz,rx,ry,rz) (axis-angle rotation) -> T[...,4,4]."""
    _check_last(vec, 6, "pose vector")
    return make_se3(axis_angle_to_matrix(vec[..., 3:]), vec[..., :3])


def mat_to_pose_vec(T: torch.Tensor) -> torch.Tensor:
    """Inverse of pose_vec_to_mat: T[...,4,4] -> (tx,ty,tz,rx,ry,rz)."""
    _check_mat(T, 4, "T")
    return torch.cat([T[..., :3, 3], matrix_to_axis_angle(T[..., :3, :3])], dim=-1)


def invert_se3(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms T[...,4,4] via R^T (differentiable, no general inverse)."""
    _check_mat(T, 4, "T")
    Rt = T[..., :3, :3].transpose(-1, -2)
    return make_se3(Rt, -(Rt @ T[..., :3, 3:4])[..., 0])


def compose(T_a_b: torch.Tensor, T_b_c: torch.Tensor) -> torch.Tensor:
    """T_a_c = T_a_b @ T_b_c (broadcast over leading dims)."""
    _check_mat(T_a_b, 4, "T_a_b")
    _check_mat(T_b_c, 4, "T_b_c")
    return T_a_b @ T_b_c
