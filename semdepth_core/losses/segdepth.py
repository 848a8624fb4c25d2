"""SegDepth auxiliary segmentation loss: U-Net pixel-wise weighted cross-entropy on fg/bg masks.

Total SegDepth objective (seed paper §3.3): L = mu*L_p + lambda*L_s + alpha*L_b with lambda = 1e-3
(smoothness) and alpha = 5e-4 (this loss). Foreground/background targets come from the frozen
semantic net's labels (vehicles, people, poles, signs... = foreground).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from semdepth_core.data.labels import FOREGROUND, IGNORE


def foreground_mask(labels: torch.Tensor) -> torch.Tensor:
    """trainId labels [B,H,W] -> long targets [B,H,W]: 1 foreground, 0 background, 255 ignore."""
    fg = torch.zeros_like(labels, dtype=torch.bool)
    for tid in FOREGROUND:
        fg |= labels == tid
    out = fg.long()
    out[labels == IGNORE] = IGNORE
    return out


def unet_weight_map(mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, max_objects: int = 32) -> np.ndarray:
    """U-Net border weights: w(x) = w_c(x) + w0*exp(-(d1(x)+d2(x))^2 / (2 sigma^2)) for a [H,W] fg/bg mask.

    w_c balances class frequencies (inverse frequency, normalised so the mean weight of a pixel is 1);
    d1, d2 are the distances (px) to the nearest and second-nearest foreground object (8-connected
    components). The border term applies to background pixels, as in the U-Net paper, where it
    separates touching objects. Ignore pixels (255) get weight 0.
    """
    if mask.ndim != 2:
        raise ValueError(f"unet_weight_map expects a [H,W] mask, got shape {mask.shape}")
    valid = mask != IGNORE
    fg = (mask == 1) & valid
    n_valid = max(int(valid.sum()), 1)
    weights = np.zeros(mask.shape, np.float32)
    for cls_mask in (fg, valid & ~fg):
        n = int(cls_mask.sum())
        if n:
            weights[cls_mask] = n_valid / (2.0 * n)
    comps, n_comp = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n_comp >= 2:
        sizes = ndimage.sum(fg, comps, index=np.arange(1, n_comp + 1))
        keep = np.argsort(sizes)[::-1][:max_objects] + 1  # largest objects bound the cost
        dists = np.stack([ndimage.distance_transform_edt(comps != k) for k in keep])  # [K,H,W]
        dists.sort(axis=0)
        d1, d2 = dists[0], dists[1]
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma ** 2))
        weights += np.where(valid & ~fg, border, 0.0).astype(np.float32)
    return weights


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """U-Net energy E = -sum_x w(x) log p_{l(x)}(x) / sum_x w(x), logits [B,2,H,W], target/weights [B,H,W]."""
    ce = F.cross_entropy(logits, target.clamp(max=logits.shape[1] - 1), reduction="none")  # [B,H,W]
    w = weights * (target != IGNORE)
    return (w * ce).sum() / w.sum().clamp_min(1e-6)


def segdepth_loss(unet: torch.nn.Module, inv_depth: torch.Tensor, labels: torch.Tensor,
                  w0: float = 10.0, sigma: float = 5.0) -> torch.Tensor:
    """L_b: the U-Net sees the full-resolution disparity [B,1,H,W] and predicts fg/bg of `labels` [B,H,W]."""
    if labels.shape[-2:] != inv_depth.shape[-2:]:
        labels = F.interpolate(labels[:, None].float(), size=inv_depth.shape[-2:], mode="nearest")[:, 0].long()
    target = foreground_mask(labels)
    weights = torch.from_numpy(
        np.stack([unet_weight_map(t, w0, sigma) for t in target.cpu().numpy()])
    ).to(inv_depth.device)
    disp = inv_depth / inv_depth.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-7)  # scale-free input
    return weighted_cross_entropy(unet(disp), target, weights)
