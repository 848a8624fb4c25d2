"""Differentiable view synthesis: warp a source (context) image into the target view (Eq. 1 of the paper)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .camera import perspective_divide, pixel_grid

_PADDING = ("zeros", "border", "reflection")


def pixels_to_grid(uv: torch.Tensor, W: int, H: int) -> torch.Tensor:
    """Pixel coords uv [B,2,h,w] -> grid_sample grid [B,h,w,2] for an WxH image (align_corners=False)."""
    x = (2.0 * uv[:, 0] + 1.0) / W - 1.0
    y = (2.0 * uv[:, 1] + 1.0) / H - 1.0
    return torch.stack([x, y], dim=-1)


def view_synthesis(
    src: torch.Tensor,
    depth_tgt: torch.Tensor,
    T_src_tgt: torch.Tensor,
    K: torch.Tensor,
    padding_mode: str = "zeros",
    with_valid: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample src [B,C,Hs,Ws] at the reprojection of every target pixel -> (warped [B,C,H,W], valid [B,1,H,W])."""
    # depth_tgt [B,1,H,W] and K [B,3,3] (or [1,3,3]) describe the target view at HxW; src may have another
    # resolution of the same camera (half-pixel rule). valid (float 0/1) = point in front of the source
    # camera and every bilinear tap inside the source image; None when with_valid is False (the losses,
    # which pad at the border instead, skip its cost). Differentiable w.r.t. src, depth and pose.
    for name, x, nd in (("src", src, 4), ("depth_tgt", depth_tgt, 4), ("T_src_tgt", T_src_tgt, 3), ("K", K, 3)):
        if not isinstance(x, torch.Tensor) or x.ndim != nd:
            raise ValueError(f"{name} must be a {nd}-D tensor, got {getattr(x, 'shape', type(x))}")
    B, _, H, W = depth_tgt.shape
    if depth_tgt.shape[1] != 1:
        raise ValueError(f"depth_tgt must be [B,1,H,W], got {tuple(depth_tgt.shape)}")
    if src.shape[0] != B:
        raise ValueError(f"src batch {src.shape[0]} != depth batch {B}")
    if T_src_tgt.shape[1:] != (4, 4) or T_src_tgt.shape[0] not in (1, B):
        raise ValueError(f"T_src_tgt must be [B,4,4], got {tuple(T_src_tgt.shape)}")
    if K.shape[1:] != (3, 3) or K.shape[0] not in (1, B):
        raise ValueError(f"K must be [B,3,3], got {tuple(K.shape)}")
    if padding_mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}")

    dtype = depth_tgt.dtype
    K = K.to(dtype)
    T = T_src_tgt.to(dtype)
    # One 3x3 product instead of backproject -> transform -> project (same maths; K's last row is 0 0 1):
    #   K (R d K^-1 [u v 1]^T + t) = d (K R K^-1) [u v 1]^T + K t,   and the source depth z is its 3rd row.
    P = K @ T[:, :3, :3] @ torch.linalg.inv(K)  # [B,3,3]
    Kt = K @ T[:, :3, 3:4]  # [B,3,1]
    rays = P @ pixel_grid(H, W, depth_tgt.device, dtype)  # [B,3,H*W]
    pix = rays * depth_tgt.reshape(B, 1, H * W) + Kt  # [B,3,H*W]
    uv, z = perspective_divide(pix, H, W)  # pixels at the target resolution, source-camera depth
    grid = pixels_to_grid(uv, W, H)  # [B,H,W,2]; resolution independent
    warped = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode=padding_mode,
                           align_corners=False)
    if not with_valid:
        return warped, None
    Hs, Ws = src.shape[-2:]
    # the centres of the outermost source pixels sit at ±(1 - 1/size) in normalised coordinates
    tol = 1e-4
    lim = torch.tensor([1.0 - 1.0 / Ws + tol, 1.0 - 1.0 / Hs + tol], dtype=grid.dtype, device=grid.device)
    inside = (grid.detach().abs() <= lim).all(dim=-1)[:, None]  # [B,1,H,W]
    valid = (inside & (z.detach() > 0)).to(src.dtype)
    return warped, valid
