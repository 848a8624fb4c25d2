"""Semantic guidance: processed semantic features that steer pixel-adaptive convolutions (§4.1).

"For each feature map, we apply a 3x3 and a 1x1 convolutional layer followed by Group
Normalization and ELU non-linearities": here each of the two convolutions is followed by
GroupNorm and ELU. The output is the guide `f` of Eq. 4-5 fed to a `PacConv2d`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import group_norm
from .pac import PacConv2d

# Guide dimensionality D of Eq. 5 (channels of the processed semantic features)
DEFAULT_GUIDE_DIM = 32


class GuidanceBranch(nn.Module):
    """[B, in_ch, h, w] semantic features -> [B, out_ch, h, w] guide (same spatial size)."""

    def __init__(self, in_ch: int, out_ch: int = DEFAULT_GUIDE_DIM) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"GuidanceBranch: channel counts must be >= 1, got in_ch={in_ch}, out_ch={out_ch}")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect")
        self.norm3 = group_norm(out_ch)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 1)
        self.norm1 = group_norm(out_ch)
        self.act = nn.ELU()

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if feat.dim() != 4 or feat.shape[1] != self.in_ch:
            raise ValueError(f"GuidanceBranch: expected [B,{self.in_ch},h,w] semantic features, "
                             f"got {tuple(feat.shape)}")
        x = self.act(self.norm3(self.conv3(feat)))  # [B, D, h, w]
        return self.act(self.norm1(self.conv1(x)))  # [B, D, h, w]


class GuidedConv(nn.Module):
    """A pixel-adaptive replacement for a 3x3 decoder convolution.

    x and the guide are padded the same way (reflection, as the Monodepth2 decoder, or zeros,
    as PackNet), then `PacConv2d(padding=0)` applies Eq. 4. forward(x[B,Cin,h,w],
    guide[B,D,h,w]) -> [B,Cout,h,w] (before any normalisation / activation).

    sigma starts at sqrt(guide_dim): the guide leaves GroupNorm with about unit variance per
    channel, so ||f_i - f_j||^2 grows like D and an initial sigma of 1 would make K ~ exp(-D)
    vanish for every dissimilar neighbour (PAC collapsing to its centre tap at initialisation).
    With sigma^2 = D the exponent is -||f_i - f_j||^2 / (2D), O(1) for unrelated pixels.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, pad_mode: str = "reflect",
                 sigma_mode: str = "layer", guide_dim: int = DEFAULT_GUIDE_DIM) -> None:
        super().__init__()
        if pad_mode not in ("reflect", "zeros"):
            raise ValueError(f"GuidedConv: pad_mode must be 'reflect' or 'zeros', got {pad_mode!r}")
        p = kernel_size // 2
        self.pad = nn.ReflectionPad2d(p) if pad_mode == "reflect" else nn.ConstantPad2d(p, 0.0)
        self.pac = PacConv2d(in_ch, out_ch, kernel_size=kernel_size, padding=0, sigma_mode=sigma_mode,
                             init_sigma=math.sqrt(guide_dim))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.pac(self.pad(x), self.pad(guide))
