"""Depth-scale terms for scale-free (mean-normalised) warping: a fixed anchor, or the velocity.

With `loss.depth_normalization` the photometric loss sees only D / mean-normalised shape, so the
network's raw depth scale is free. `depth_scale_loss` pins it per image: to a constant (the gauge
anchor, which only keeps the inverse-depth sigmoid away from saturation), or to the metric scale
implied by the velocity. The normalised warp uses depth D_n = D_raw * mean(1/D_raw) and the pose
net's translation t_n in the same units, so a metric depth needs mean(1/D_raw) = ||t_n|| / (|v| dt):
the blog's velocity supervision |‖t‖ − |v|Δt| (losses/velocity.py) moved onto the depth scale.
"""
from __future__ import annotations

import torch


def depth_scale_loss(inv_depth: torch.Tensor, target_mean_inv: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over images of |log mean(1/D) - log target|.

    inv_depth: [B,1,h,w] raw network output; target_mean_inv: [B] or scalar (1/m), a constant -> scalar.
    """
    if inv_depth.dim() != 4 or inv_depth.shape[1] != 1:
        raise ValueError(f"depth_scale_loss: inv_depth must be [B,1,h,w], got {tuple(inv_depth.shape)}")
    mean_inv = inv_depth.mean(dim=(1, 2, 3)).clamp(min=eps)  # [B]
    target = torch.as_tensor(target_mean_inv, dtype=mean_inv.dtype, device=mean_inv.device).detach()
    return (mean_inv.log() - target.clamp(min=eps).log()).abs().mean()


def velocity_mean_inv_depth(translation: torch.Tensor, speed: torch.Tensor, dt: torch.Tensor,
                            lo: float, hi: float) -> torch.Tensor:
    """Metric mean inverse depth per image implied by the velocity: ||t_n|| / (|v| dt), geometric mean
    over the contexts, clamped to [lo, hi] (1/m) so the target never asks for a saturated sigmoid.

    translation: [B,N,3] pose-net translation in normalised-depth units; speed [B] (m/s); dt [B,N] (s) -> [B].
    """
    if translation.dim() != 3 or translation.shape[-1] != 3:
        raise ValueError(f"velocity_mean_inv_depth: translation must be [B,N,3], got {tuple(translation.shape)}")
    if dt.shape != translation.shape[:2] or speed.shape != translation.shape[:1]:
        raise ValueError(f"velocity_mean_inv_depth: speed [B] and dt [B,N] must match translation "
                         f"{tuple(translation.shape)}, got {tuple(speed.shape)} and {tuple(dt.shape)}")
    travelled = (speed.to(translation.dtype)[:, None] * dt.to(translation.dtype).abs()).clamp(min=1e-3)  # [B,N] m
    ratio = translation.detach().norm(dim=-1).clamp(min=1e-9) / travelled  # [B,N]
    return ratio.log().mean(dim=1).exp().clamp(lo, hi)
