"""Photometric appearance loss, paper Eq. 2: alpha*(1-SSIM)/2 + (1-alpha)*|I_t - I_hat_t|."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, the SSIM term of Eq. 2) on 3x3 mean windows, reflection padding.

    x, y: [B,C,H,W] in [0,1] -> [B,C,H,W] SSIM in [-1, 1] (1 = identical).
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)  # [B,C,H,W]
    mu_y = F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    cov_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)
    denominator = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return numerator / denominator


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Eq. 2: alpha*(1-SSIM)/2 + (1-alpha)*L1, averaged over channels.

    pred, target: [B,C,H,W] -> loss map [B,1,H,W].
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)  # [B,1,H,W]
    if alpha == 0:
        return l1
    dssim = ((1 - ssim(pred, target)) / 2).clamp(0, 1).mean(1, keepdim=True)  # [B,1,H,W]
    return alpha * dssim + (1 - alpha) * l1
