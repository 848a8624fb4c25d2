"""Depth-scale term for scale-free (mean-normalised) warping: pinned to a fixed anchor, or to the velocity.

With `loss.depth_normalization` the photometric loss sees only D / mean-normalised shape, so the
network's raw depth scale is free. `depth_scale_loss` pins it per image: to a constant (the gauge
anchor, which only keeps the inverse-depth sigmoid away from saturation), or to the metric scale
implied by the velocity (`losses.velocity.velocity_mean_inv_depth`, the target of the depth-scale form
of velocity supervision).
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
