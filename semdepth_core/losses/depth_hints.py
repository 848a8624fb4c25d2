"""Depth hints (Watson et al., ICCV 2019): a stereo-matching depth used as supervision only where it
explains the stereo image better than the network's own depth does."""
from __future__ import annotations

import torch

from semdepth_core.geometry.warp import view_synthesis
from semdepth_core.losses.photometric import photometric_loss


def hint_reprojection_loss(target: torch.Tensor, stereo: torch.Tensor, hint_depth: torch.Tensor,
                           T_stereo: torch.Tensor, K: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Eq. 2 of the stereo image warped into the target with the hint's depth: [B,1,H,W], +inf where the
    hint has no depth (0). target, stereo [B,3,H,W]; hint_depth [B,1,H,W] metres; T_stereo [B,4,4]."""
    valid = hint_depth > 0
    depth = torch.where(valid, hint_depth, torch.ones_like(hint_depth))
    warped, _ = view_synthesis(stereo, depth, T_stereo, K, padding_mode="border", with_valid=False)
    loss = photometric_loss(warped, target, alpha)
    return torch.where(valid, loss, torch.full_like(loss, float("inf")))


def depth_hint_loss(pred_depth: torch.Tensor, hint_depth: torch.Tensor, pred_loss: torch.Tensor | None,
                    hint_loss: torch.Tensor | None) -> torch.Tensor:
    """Mean over all pixels of log(1 + |D - D_hint|) where the hint reprojects better than the prediction.

    pred_depth, hint_depth [B,1,H,W] metres; pred_loss [B,1,H,W] the photometric loss the pixel gets
    from the prediction (after min reprojection / auto-masking); hint_loss from
    `hint_reprojection_loss` (inf without a hint). With pred_loss None, every pixel with a hint
    (hint_depth > 0) pulls: plain distillation of the matcher. -> scalar.
    """
    if pred_loss is None:
        use = (hint_depth > 0).to(pred_depth.dtype)
    else:
        use = (hint_loss < pred_loss.detach()).to(pred_depth.dtype)  # [B,1,H,W]
    hint = torch.where(hint_depth > 0, hint_depth, pred_depth.detach())
    return (torch.log1p((pred_depth - hint).abs()) * use).mean()
