"""Velocity supervision (PackNet, CVPR 2020; the blog's "weak velocity supervision") for metric scale, both forms.

* On the pose: `velocity_loss`, the blog's |‖t‖ − |v|Δt| on the pose net's translation (used with
  `loss.depth_normalization: false`).
* On the depth scale: with mean-normalised warping the depth D_n = D_raw * mean(1/D_raw) and the pose
  net's translation t_n share units, so a metric depth needs mean(1/D_raw) = ||t_n|| / (|v| dt).
  `velocity_mean_inv_depth` gives that target per image, and `losses.scale.depth_scale_loss` pulls the
  raw depth scale to it: the same supervision moved from the pose onto the depth scale.
"""
from __future__ import annotations

import torch


def velocity_loss(translation: torch.Tensor, speed: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """L_v = mean over batch and context of | ||t_pred|| - speed * dt |.

    translation: [B,N,3] predicted translation of T_ctx_tgt; speed: [B] (m/s); dt: [B,N] (s) -> scalar.
    """
    if translation.dim() != 3 or translation.shape[-1] != 3:
        raise ValueError(f"velocity_loss: translation must be [B,N,3], got {tuple(translation.shape)}")
    if dt.shape != translation.shape[:2]:
        raise ValueError(f"velocity_loss: dt must be [B,N]={tuple(translation.shape[:2])}, got {tuple(dt.shape)}")
    if speed.shape != translation.shape[:1]:
        raise ValueError(f"velocity_loss: speed must be [B]={translation.shape[0]}, got {tuple(speed.shape)}")
    travelled = speed.to(translation.dtype)[:, None] * dt.to(translation.dtype).abs()  # [B,N] metres
    return (translation.norm(dim=-1) - travelled).abs().mean()


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
