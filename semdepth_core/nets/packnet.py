"""PackNet01 (Guizilini et al., "3D Packing for Self-Supervised Monocular Depth Estimation",
CVPR 2020), the depth network of the semantically-guided paper (§3.2), with optional semantic
guidance of its decoder (§4.1).

Architecture (widths ni=64; n1..n5 = 64, 64, 128, 256, 512; residual blocks [2, 2, 3, 3]):
  pre_calc   5x5 conv 3->64                                 stride 1   (skip1)
  conv1      7x7 conv 64->64                                stride 1
  pack1      packing, kernel 5                              -> stride 2   (skip2)
  conv2..5   residual blocks (dropout on the shortcut), each followed by pack2..pack5 (kernel 3)
             strides 4 (skip3), 8 (skip4), 16 (skip5), 32
  unpack5..1 unpacking blocks (kernel 3), each followed by concatenation with the skip of the same
             stride (and, at strides 4, 2, 1, the up-sampled coarser inverse depth) and an
             `iconv` conv block; inverse-depth heads on iconv4..iconv1 (strides 8, 4, 2, 1).

Every 2D conv unit is zero-pad + conv + GroupNorm(16) + ELU. A packing block is space-to-depth by
2 (C -> 4C), a 3D conv (1 -> d=8 features, 3x3x3) over the packed channel axis, a reshape to 32C
channels and a 2D conv unit back to C. An unpacking block is a 2D conv unit to 4C/d channels,
the 3D conv (-> d features, 4C channels), and depth-to-space by 2.

Input: RGB in [0, 1], used directly (as the original PackNet01, no mean/std normalisation;
its GroupNorm layers make the network insensitive to the input offset/scale).
Output: 4 inverse depth maps [scale 0 = H x W, ..., scale 3 = H/8 x W/8] in
[1/max_depth, 1/min_depth] (inv = 1/max + (1/min - 1/max) * sigmoid).

Guided variant: for each stride s in `guidance_channels` (2, 4, 8 for ESPNet), the 2D conv of
`iconv` at stride s becomes a pixel-adaptive convolution (`GuidedConv`, zero padding, then the
same GroupNorm + ELU) guided by `GuidanceBranch(semantic features at stride s)`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .guidance import DEFAULT_GUIDE_DIM, GuidanceBranch, GuidedConv
from .layers import ConvGNELU, check_depth_range, check_rgb_input, group_norm, match_size, sigmoid_to_inv_depth


def space_to_depth(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """[B,C,H,W] -> [B,C*r*r,H/r,W/r]; exact inverse of nn.PixelShuffle(r) (channel c*r*r + i*r + j
    holds x[c, r*h + i, r*w + j])."""
    return nn.functional.pixel_unshuffle(x, r)


class PackingBlock(nn.Module):
    """[B,C,H,W] -> [B,C,H/2,W/2]: space-to-depth, 3D conv over packed channels, 2D conv unit."""

    def __init__(self, channels: int, kernel_size: int, r: int = 2, d: int = 8) -> None:
        super().__init__()
        self.r = r
        self.conv3d = nn.Conv3d(1, d, kernel_size=3, padding=1)
        self.conv = ConvGNELU(channels * r * r * d, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = space_to_depth(x, self.r)  # [B, 4C, H/2, W/2]
        x = self.conv3d(x.unsqueeze(1))  # [B, d, 4C, H/2, W/2]
        x = x.flatten(1, 2)  # [B, 4Cd, H/2, W/2] (channel = feature * 4C + packed channel)
        return self.conv(x)  # [B, C, H/2, W/2]


class UnpackingBlock(nn.Module):
    """[B,Cin,H,W] -> [B,Cout,2H,2W]: 2D conv unit to 4*Cout/d, 3D conv to d features, depth-to-space."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, r: int = 2, d: int = 8) -> None:
        super().__init__()
        if (out_ch * r * r) % d:
            raise ValueError(f"UnpackingBlock: out_ch*{r * r} must be divisible by d={d}, got out_ch={out_ch}")
        self.conv = ConvGNELU(in_ch, out_ch * r * r // d, kernel_size)
        self.conv3d = nn.Conv3d(1, d, kernel_size=3, padding=1)
        self.unpack = nn.PixelShuffle(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # [B, 4Cout/d, H, W]
        x = self.conv3d(x.unsqueeze(1))  # [B, d, 4Cout/d, H, W]
        x = x.flatten(1, 2)  # [B, 4Cout, H, W]
        return self.unpack(x)  # [B, Cout, 2H, 2W]


class ResidualConv(nn.Module):
    """Two 3x3 conv units plus a 1x1 shortcut (with 2D dropout), summed, GroupNorm, ELU."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = ConvGNELU(in_ch, out_ch, 3)
        self.conv2 = ConvGNELU(out_ch, out_ch, 3)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.norm = group_norm(out_ch)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))  # [B, out, H, W]
        return self.act(self.norm(out + self.dropout(self.shortcut(x))))


def residual_block(in_ch: int, out_ch: int, num_blocks: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResidualConv(in_ch, out_ch, dropout),
                         *[ResidualConv(out_ch, out_ch, dropout) for _ in range(num_blocks - 1)])


class InvDepthHead(nn.Module):
    """Zero-padded 3x3 conv to 1 channel, mapped to [1/max_depth, 1/min_depth]."""

    def __init__(self, in_ch: int, min_depth: float, max_depth: float) -> None:
        super().__init__()
        self.pad = nn.ConstantPad2d(1, 0.0)
        self.conv = nn.Conv2d(in_ch, 1, 3)
        self.min_depth, self.max_depth = min_depth, max_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sigmoid_to_inv_depth(self.conv(self.pad(x)), self.min_depth, self.max_depth)


class GuidedConvGNELU(nn.Module):
    """Pixel-adaptive counterpart of ConvGNELU (zero padding, GroupNorm(16), ELU)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, sigma_mode: str, guide_dim: int) -> None:
        super().__init__()
        self.conv = GuidedConv(in_ch, out_ch, kernel_size, pad_mode="zeros", sigma_mode=sigma_mode,
                               guide_dim=guide_dim)
        self.norm = group_norm(out_ch)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x, guide)))


class PackNet01(nn.Module):
    """forward(rgb[B,3,H,W] in [0,1], guidance_features {stride: [B,Cs,H/s,W/s]} | None)
    -> [inv_depth [B,1,H,W], [B,1,H/2,W/2], [B,1,H/4,W/4], [B,1,H/8,W/8]].

    version: "1A" (skip concatenation, ~128.3 M parameters) or "1B" (skip addition).
    """

    GUIDABLE_STRIDES = (1, 2, 4, 8, 16)

    def __init__(
        self,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        version: str = "1A",
        guidance_channels: dict[int, int] | None = None,
        pac_sigma_mode: str = "layer",
        dropout: float = 0.5,
        guide_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_depth_range(min_depth, max_depth)
        if version not in ("1A", "1B"):
            raise ValueError(f"PackNet01: version must be '1A' (concatenation) or '1B' (addition), got {version!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"PackNet01: dropout must be in [0, 1), got {dropout}")
        self.version = version
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.concat = version == "1A"
        ni, no = 64, 1
        n1, n2, n3, n4, n5 = 64, 64, 128, 256, 512
        blocks = (2, 2, 3, 3)
        pack_k = (5, 3, 3, 3, 3)
        # input widths of iconv5..iconv1 (unpacked + skip [+ up-sampled inverse depth])
        if self.concat:
            i5, i4, i3, i2, i1 = n5 + n4, n4 + n3, n3 + n2 + no, n2 + n1 + no, n1 + ni + no
        else:
            i5, i4, i3, i2, i1 = n4, n3, n2 + no, n1 + no, ni + no

        # encoder
        self.pre_calc = ConvGNELU(3, ni, 5)
        self.conv1 = ConvGNELU(ni, n1, 7)
        self.pack1 = PackingBlock(n1, pack_k[0])
        self.conv2 = residual_block(n1, n2, blocks[0], dropout)
        self.pack2 = PackingBlock(n2, pack_k[1])
        self.conv3 = residual_block(n2, n3, blocks[1], dropout)
        self.pack3 = PackingBlock(n3, pack_k[2])
        self.conv4 = residual_block(n3, n4, blocks[2], dropout)
        self.pack4 = PackingBlock(n4, pack_k[3])
        self.conv5 = residual_block(n4, n5, blocks[3], dropout)
        self.pack5 = PackingBlock(n5, pack_k[4])
        # decoder (unpack to the width of the skip it meets)
        self.unpack5 = UnpackingBlock(n5, n4 if not self.concat else n5, 3)
        self.unpack4 = UnpackingBlock(n5, n3 if not self.concat else n4, 3)
        self.unpack3 = UnpackingBlock(n4, n2 if not self.concat else n3, 3)
        self.unpack2 = UnpackingBlock(n3, n1 if not self.concat else n2, 3)
        self.unpack1 = UnpackingBlock(n2, ni if not self.concat else n1, 3)

        self.guidance_channels = {int(s): int(c) for s, c in (guidance_channels or {}).items()}
        for s in self.guidance_channels:
            if s not in self.GUIDABLE_STRIDES:
                raise ValueError(f"PackNet01: guidance stride must be one of {self.GUIDABLE_STRIDES}, got {s}")
        guide_dim = guide_dim or DEFAULT_GUIDE_DIM
        iconv_spec = {16: (i5, n5), 8: (i4, n4), 4: (i3, n3), 2: (i2, n2), 1: (i1, n1)}
        # (version 1B: the summed map has the skip's width, so iconv maps it back up to n_k)
        self.iconv = nn.ModuleDict()  # keyed by stride
        for s, (cin, cout) in iconv_spec.items():
            if s in self.guidance_channels:
                self.iconv[str(s)] = GuidedConvGNELU(cin, cout, 3, pac_sigma_mode, guide_dim)
            else:
                self.iconv[str(s)] = ConvGNELU(cin, cout, 3)
        self.guides = nn.ModuleDict()
        if self.guidance_channels:
            for s, c in self.guidance_channels.items():
                self.guides[str(s)] = GuidanceBranch(c, guide_dim)
        # inverse depth heads at strides 8, 4, 2, 1
        self.disp4 = InvDepthHead(n4, min_depth, max_depth)
        self.disp3 = InvDepthHead(n3, min_depth, max_depth)
        self.disp2 = InvDepthHead(n2, min_depth, max_depth)
        self.disp1 = InvDepthHead(n1, min_depth, max_depth)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _merge(self, unpacked: torch.Tensor, skip: torch.Tensor, up_inv: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([unpacked, skip], 1) if self.concat else unpacked + skip
        return x if up_inv is None else torch.cat([x, up_inv], 1)

    def _iconv(self, stride: int, x: torch.Tensor, guidance_features: dict[int, torch.Tensor] | None) -> torch.Tensor:
        layer = self.iconv[str(stride)]
        if stride not in self.guidance_channels:
            return layer(x)
        guide = self.guides[str(stride)](guidance_features[stride])  # [B, D, h_s, w_s]
        return layer(x, match_size(guide, x))

    def forward(self, rgb: torch.Tensor,
                guidance_features: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
        check_rgb_input(rgb, "PackNet01")
        if self.guidance_channels:
            missing = [s for s in self.guidance_channels if not guidance_features or s not in guidance_features]
            if missing:
                raise ValueError(f"PackNet01: guided network needs guidance features at strides {missing}")
        up = nn.functional.interpolate
        x = self.pre_calc(rgb)  # [B, 64, H, W]          skip1
        x1 = self.conv1(x)  # [B, 64, H, W]
        x1p = self.pack1(x1)  # [B, 64, H/2, W/2]      skip2
        x2p = self.pack2(self.conv2(x1p))  # [B, 64, H/4, W/4]      skip3
        x3p = self.pack3(self.conv3(x2p))  # [B, 128, H/8, W/8]     skip4
        x4p = self.pack4(self.conv4(x3p))  # [B, 256, H/16, W/16]   skip5
        x5p = self.pack5(self.conv5(x4p))  # [B, 512, H/32, W/32]

        g = guidance_features
        i5 = self._iconv(16, self._merge(self.unpack5(x5p), x4p, None), g)  # [B, 512, H/16, W/16]
        i4 = self._iconv(8, self._merge(self.unpack4(i5), x3p, None), g)  # [B, 256, H/8, W/8]
        inv4 = self.disp4(i4)  # [B, 1, H/8, W/8]
        i3 = self._iconv(4, self._merge(self.unpack3(i4), x2p, up(inv4, scale_factor=2)), g)  # [B,128,H/4,W/4]
        inv3 = self.disp3(i3)  # [B, 1, H/4, W/4]
        i2 = self._iconv(2, self._merge(self.unpack2(i3), x1p, up(inv3, scale_factor=2)), g)  # [B,64,H/2,W/2]
        inv2 = self.disp2(i2)  # [B, 1, H/2, W/2]
        i1 = self._iconv(1, self._merge(self.unpack1(i2), x, up(inv2, scale_factor=2)), g)  # [B,64,H,W]
        inv1 = self.disp1(i1)  # [B, 1, H, W]
        return [inv1, inv2, inv3, inv4]
