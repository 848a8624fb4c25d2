"""Minimum reprojection and auto-masking (Godard et al. 2019, used by the paper, §3.1 after Eq. 2)."""
from __future__ import annotations

import torch

from semdepth_core.losses.photometric import photometric_loss

IDENTITY_NOISE = 1e-5  # breaks ties between identity and reprojection losses (Monodepth2)


def identity_reprojection_loss(target: torch.Tensor, identity: list[torch.Tensor], alpha: float = 0.85) -> torch.Tensor:
    """Eq. 2 between the target and each un-warped context, plus tie-breaking noise: [B,N,H,W].

    Scale-independent when every scale is compared at full resolution, so compute it once per batch.
    """
    identity_loss = torch.cat([photometric_loss(i, target, alpha) for i in identity], 1)  # [B,N,H,W]
    return identity_loss + torch.randn_like(identity_loss) * IDENTITY_NOISE


def min_reprojection_loss(
    target: torch.Tensor,
    warped: list[torch.Tensor],
    identity: list[torch.Tensor] | None = None,
    automask: bool = True,
    min_reprojection: bool = True,
    alpha: float = 0.85,
    identity_loss: torch.Tensor | None = None,
    reprojection: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 per context, reduced per pixel by min (or mean) over contexts, with identity auto-masking.

    target: [B,3,H,W]; warped: N x [B,3,H,W] context images synthesised into the target view;
    identity: N x [B,3,H,W] un-warped context images (needed when automask is on), or
    identity_loss: their precomputed `identity_reprojection_loss` [B,N,H,W]; reprojection: the
    precomputed per-context Eq. 2 maps [B,N,H,W] of `warped` (batched callers).
    Returns (loss_map [B,1,H,W], automask [B,1,H,W] bool, True = a reprojection loss is kept,
    False = an identity loss won so the pixel looks static relative to the camera).
    """
    if reprojection is None:
        if not warped:
            raise ValueError("min_reprojection_loss: no warped context images")
        reprojection = torch.cat([photometric_loss(w, target, alpha) for w in warped], 1)  # [B,N,H,W]
    if min_reprojection:
        reprojection, _ = reprojection.min(1, keepdim=True)  # [B,1,H,W]
    else:
        reprojection = reprojection.mean(1, keepdim=True)  # [B,1,H,W]

    if not automask:
        return reprojection, torch.ones_like(reprojection, dtype=torch.bool)
    if identity_loss is None:
        if not identity:
            raise ValueError("min_reprojection_loss: automask=True needs the identity (un-warped) context images")
        identity_loss = identity_reprojection_loss(target, identity, alpha)
    combined = torch.cat([identity_loss, reprojection], 1)  # [B,N+1,H,W]; reprojection is last
    loss_map, index = combined.min(1, keepdim=True)  # [B,1,H,W]
    mask = index == identity_loss.shape[1]  # reprojection won
    return loss_map, mask
