"""Edge-aware depth smoothness, paper Eq. 3, on mean-normalised inverse depth."""
from __future__ import annotations

import torch


def smoothness_loss(inv_depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Eq. 3: mean of |dx d*| exp(-|dx I|) + |dy d*| exp(-|dy I|), d* = d / mean(d) per image.

    inv_depth: [B,1,h,w]; image: [B,3,h,w] at the same resolution -> scalar.
    """
    if inv_depth.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"smoothness_loss: inverse depth {tuple(inv_depth.shape)} and image {tuple(image.shape)} differ in size"
        )
    mean = inv_depth.mean(dim=(2, 3), keepdim=True)  # [B,1,1,1]
    d = inv_depth / (mean + 1e-7)

    grad_d_x = (d[:, :, :, :-1] - d[:, :, :, 1:]).abs()  # [B,1,h,w-1]
    grad_d_y = (d[:, :, :-1, :] - d[:, :, 1:, :]).abs()  # [B,1,h-1,w]
    grad_i_x = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)  # channel mean
    grad_i_y = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)

    loss_x = grad_d_x * torch.exp(-grad_i_x)
    loss_y = grad_d_y * torch.exp(-grad_i_y)
    return loss_x.mean() + loss_y.mean()
