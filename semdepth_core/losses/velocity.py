"""Velocity supervision (PackNet, CVPR 2020; the blog's "weak velocity supervision") for metric scale."""
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
