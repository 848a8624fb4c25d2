"""Building blocks shared by the depth and pose networks.

Conventions: tensors are `[B, C, H, W]`; "stride" means the down-sampling factor of a feature
map relative to the network input.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# ImageNet statistics (what torchvision-style ImageNet checkpoints were trained with)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_rgb_input(x: torch.Tensor, name: str, multiple: int = 32, channels: int | None = 3) -> None:
    """Raise ValueError unless `x` is `[B, channels, H, W]` with H and W multiples of `multiple`."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a [B,C,H,W] tensor, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{name}: input height and width must be multiples of {multiple}, got {h}x{w} "
            f"(HxW); resize or crop e.g. to {max(multiple, h // multiple * multiple)}x"
            f"{max(multiple, w // multiple * multiple)}")


class ImageNetNormalize(nn.Module):
    """(x - mean) / std with ImageNet statistics, for RGB in [0, 1].

    Works for stacked frames too (`3k` channels: the statistics repeat per frame). The
    statistics are non-persistent buffers, so they never appear in a state_dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % 3:
            raise ValueError(f"ImageNetNormalize: channel count {c} is not a multiple of 3")
        k = c // 3
        mean = self.mean.repeat(1, k, 1, 1)
        std = self.std.repeat(1, k, 1, 1)
        return (x - mean) / std


def num_groups_for(channels: int, max_groups: int = 16) -> int:
    """Largest group count <= max_groups that divides `channels` (GroupNorm needs divisibility)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, max_groups: int = 16) -> nn.GroupNorm:
    """GroupNorm with up to `max_groups` groups (16 as PackNet, fewer when it does not divide)."""
    return nn.GroupNorm(num_groups_for(channels, max_groups), channels)


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 convolution: [B,Cin,H,W] -> [B,Cout,H,W]."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Monodepth2 decoder block: reflection-padded 3x3 conv followed by ELU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = Conv3x3(in_ch, out_ch)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class ConvGNELU(nn.Module):
    """PackNet's 2D conv unit: zero-pad k//2, kxk conv (stride s), GroupNorm(16), ELU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = nn.ConstantPad2d(kernel_size // 2, 0.0)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride)
        self.norm = group_norm(out_ch)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.pad(x))))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour up-sampling by 2: [B,C,H,W] -> [B,C,2H,2W]."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def match_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize `x` to `ref`'s spatial size when they differ (guidance alignment)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def sigmoid_to_inv_depth(x: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Map raw logits to inverse depth in [1/max_depth, 1/min_depth]:
    inv = 1/max + (1/min - 1/max) * sigmoid(x)."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return lo + (hi - lo) * torch.sigmoid(x)


def check_depth_range(min_depth: float, max_depth: float) -> None:
    if not (0 < min_depth < max_depth and math.isfinite(max_depth)):
        raise ValueError(f"depth range must satisfy 0 < min_depth < max_depth < inf, got "
                         f"min_depth={min_depth}, max_depth={max_depth}")


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Load a state_dict saved with torch.save (weights_only=True); unwrap common wrappers."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: pretrained weights file not found: {p}")
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what}: {p} does not hold a state_dict of tensors")
    return dict(obj)


def adapt_first_conv(weight: torch.Tensor, in_ch: int) -> torch.Tensor:
    """Adapt a pretrained first-conv weight [O,3,k,k] to `in_ch` = 3k input channels by
    replicating it k times along the input axis and dividing by k (same response to k copies
    of one image as the original has to that image)."""
    if weight.shape[1] == in_ch:
        return weight
    if weight.shape[1] != 3 or in_ch % 3:
        raise ValueError(f"cannot adapt a first conv with {weight.shape[1]} input channels to {in_ch}")
    k = in_ch // 3
    return weight.repeat(1, k, 1, 1) / k
