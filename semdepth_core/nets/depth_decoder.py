"""Monodepth2-style depth decoder with optional semantic guidance (pixel-adaptive convolutions).

Level i (4 down to 0) works at stride 2^i of the input:
    upconv{i}_0: ConvBlock(prev -> C_i)                      at stride 2^(i+1)
    nearest x2 up-sampling, concatenation with encoder skip i-1 (stride 2^i) for i > 0
    upconv{i}_1: ConvBlock(C_i + skip -> C_i)                at stride 2^i
    dispconv{i} (i < num_scales): Conv3x3(C_i -> 1), inverse depth
with C = (16, 32, 64, 128, 256). ConvBlock = reflection-padded 3x3 conv + ELU.

Guidance (§4.1, Fig. 2): for every stride s in `guidance_channels`, `upconv{log2 s}_1` becomes a
pixel-adaptive convolution (`GuidedConv`, same padding) whose guide is `GuidanceBranch` applied
to the semantic features at stride s.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .guidance import DEFAULT_GUIDE_DIM, GuidanceBranch, GuidedConv
from .layers import Conv3x3, ConvBlock, check_depth_range, match_size, sigmoid_to_inv_depth, upsample2x

NUM_CH_DEC = (16, 32, 64, 128, 256)
GUIDABLE_STRIDES = (1, 2, 4, 8, 16)


def _stride_level(stride: int) -> int:
    if stride not in GUIDABLE_STRIDES:
        raise ValueError(f"DepthDecoder: guidance stride must be one of {GUIDABLE_STRIDES}, got {stride}")
    return GUIDABLE_STRIDES.index(stride)


class DepthDecoder(nn.Module):
    """forward(features: 5 maps at strides 2..32, guidance_features: {stride: [B,Cs,H/s,W/s]} | None)
    -> [inv_depth scale 0 [B,1,H,W], scale 1 [B,1,H/2,W/2], ..., scale num_scales-1],
    each in [1/max_depth, 1/min_depth]."""

    def __init__(
        self,
        num_ch_enc: list[int] | tuple[int, ...],
        min_depth: float,
        max_depth: float,
        num_scales: int = 4,
        guidance_channels: dict[int, int] | None = None,
        pac_sigma_mode: str = "layer",
        guide_dim: int | None = None,
        num_ch_dec: list[int] | tuple[int, ...] = NUM_CH_DEC,
    ) -> None:
        super().__init__()
        if len(num_ch_enc) != 5:
            raise ValueError(f"DepthDecoder: num_ch_enc must list 5 encoder widths, got {list(num_ch_enc)}")
        if not 1 <= num_scales <= 4:
            raise ValueError(f"DepthDecoder: num_scales must be in [1, 4], got {num_scales}")
        check_depth_range(min_depth, max_depth)
        self.num_ch_enc = list(num_ch_enc)
        if len(num_ch_dec) != 5 or min(num_ch_dec) <= 0:
            raise ValueError(f"DepthDecoder: num_ch_dec must list 5 positive widths, got {list(num_ch_dec)}")
        self.num_ch_dec = dec = tuple(int(c) for c in num_ch_dec)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.num_scales = num_scales
        self.guidance_channels = {int(s): int(c) for s, c in (guidance_channels or {}).items()}
        guided_levels = {_stride_level(s): s for s in self.guidance_channels}
        guide_dim = guide_dim or DEFAULT_GUIDE_DIM

        self.upconv0 = nn.ModuleList()  # index i: upconv{i}_0
        self.upconv1 = nn.ModuleList()  # index i: upconv{i}_1 (ConvBlock or GuidedConv)
        for i in range(5):
            c_in = self.num_ch_enc[-1] if i == 4 else dec[i + 1]
            self.upconv0.append(ConvBlock(c_in, dec[i]))
            c_in = dec[i] + (self.num_ch_enc[i - 1] if i > 0 else 0)
            if i in guided_levels:
                self.upconv1.append(GuidedConv(c_in, dec[i], 3, "reflect", pac_sigma_mode, guide_dim))
            else:
                self.upconv1.append(ConvBlock(c_in, dec[i]))
        self.dispconv = nn.ModuleList([Conv3x3(dec[s], 1) for s in range(num_scales)])
        self.guides = nn.ModuleDict()
        if self.guidance_channels:
            for s, c in self.guidance_channels.items():
                self.guides[str(s)] = GuidanceBranch(c, guide_dim)
        self.elu = nn.ELU(inplace=True)
        self._guided_levels = guided_levels

    def forward(self, features: list[torch.Tensor],
                guidance_features: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
        if len(features) != 5:
            raise ValueError(f"DepthDecoder: expected 5 encoder features, got {len(features)}")
        for f, c in zip(features, self.num_ch_enc):
            if f.shape[1] != c:
                raise ValueError(f"DepthDecoder: encoder feature has {f.shape[1]} channels, expected {c} "
                                 f"(num_ch_enc={self.num_ch_enc})")
        if self._guided_levels:
            missing = [s for s in self.guidance_channels if not guidance_features or s not in guidance_features]
            if missing:
                raise ValueError(f"DepthDecoder: guided decoder needs guidance features at strides {missing}")
        inv_depths: list[torch.Tensor | None] = [None] * self.num_scales
        x = features[-1]  # [B, C4, H/32, W/32]
        for i in range(4, -1, -1):
            x = self.upconv0[i](x)  # [B, C_i, H/2^(i+1), W/2^(i+1)]
            x = upsample2x(x)  # [B, C_i, H/2^i, W/2^i]
            if i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)  # [B, C_i + enc_{i-1}, H/2^i, W/2^i]
            if i in self._guided_levels:
                s = self._guided_levels[i]
                guide = self.guides[str(s)](guidance_features[s])  # [B, D, h_s, w_s]
                guide = match_size(guide, x)
                x = self.elu(self.upconv1[i](x, guide))  # [B, C_i, H/2^i, W/2^i]
            else:
                x = self.upconv1[i](x)  # [B, C_i, H/2^i, W/2^i]
            if i < self.num_scales:
                logits = self.dispconv[i](x)  # [B, 1, H/2^i, W/2^i]
                inv_depths[i] = sigmoid_to_inv_depth(logits, self.min_depth, self.max_depth)
        return inv_depths  # type: ignore[return-value]
