"""Pose network: target and context frames in, one 6-DoF pose vector per context frame out.

`PoseNet(num_context, encoder)`:
- "basic" (PackNet's PoseNet): the 3(1+N)-channel stack goes through 7 stride-2 conv units
  (conv + GroupNorm(16) + ReLU; widths 16, 32, 64, 128, 256, 256, 256; kernels 7, 5, 3, ...),
  a 1x1 conv to 6N channels, a global spatial average, then x0.01.
- "resnet18" / "mobilenetv2": an ImageNet-style encoder over the 3(1+N)-channel stack (pretrained
  first-conv weights replicated per frame and divided by 1+N), followed by a small conv head
  (1x1 squeeze to 256 x width, two 3x3 convs with ReLU, 1x1 to 6N), global average, x0.01; the
  MobileNetV2 encoder ends at `last_block` (18: the 1280-ch head, 17: 320 ch, 16: 160 ch).

The output `[B, N, 6]` = (tx, ty, tz, rx, ry, rz) per context (axis-angle rotation) is the
pose vector of T_ctx_tgt: it maps target-frame points into the context frame (docs/architecture.md).
Input frames are RGB in [0, 1] (normalised internally with ImageNet mean/std per frame).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .layers import ImageNetNormalize, check_rgb_input

POSE_SCALE = 0.01
ENCODERS = ("basic", "resnet18", "mobilenetv2")


def _conv_gn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=2, padding=(kernel - 1) // 2),
        nn.GroupNorm(16, out_ch),
        nn.ReLU(inplace=True),
    )


class PoseNet(nn.Module):
    """forward(target[B,3,H,W], contexts: list of N [B,3,H,W]) -> [B, N, 6] pose vectors of T_ctx_tgt."""

    def __init__(self, num_context: int = 2, encoder: str = "basic",
                 pretrained_path: str | Path | None = None, width: float = 1.0, last_block: int = 18) -> None:
        super().__init__()
        if num_context < 1:
            raise ValueError(f"PoseNet: num_context must be >= 1, got {num_context}")
        if encoder not in ENCODERS:
            raise ValueError(f"PoseNet: encoder must be one of {ENCODERS}, got {encoder!r}")
        if pretrained_path and encoder == "basic":
            raise ValueError("PoseNet: the 'basic' encoder has no pretrained weights; "
                             "use encoder='resnet18' or 'mobilenetv2' with pretrained_path")
        self.num_context = num_context
        self.encoder_name = encoder
        in_ch = 3 * (1 + num_context)
        out_ch = 6 * num_context
        if encoder == "basic":
            self.normalize = ImageNetNormalize()
            widths = tuple(max(16, int(round(c * width / 16)) * 16) for c in (16, 32, 64, 128, 256, 256, 256))  # GroupNorm(16)
            kernels = (7, 5, 3, 3, 3, 3, 3)
            convs, c = [], in_ch
            for w, k in zip(widths, kernels):
                convs.append(_conv_gn_relu(c, w, k))
                c = w
            self.encoder = nn.Sequential(*convs)
            self.head = nn.Conv2d(c, out_ch, 1)
            self.min_size = 2 ** len(widths)
        else:
            if encoder == "resnet18":
                from .resnet import ResNetEncoder

                self.encoder = ResNetEncoder(18, in_ch=in_ch, pretrained_path=pretrained_path)
            else:
                from .mobilenetv2 import MobileNetV2Encoder

                self.encoder = MobileNetV2Encoder(pretrained_path, in_ch=in_ch, last_block=last_block)
            c = self.encoder.num_ch_enc[-1]
            h = max(16, int(round(256 * width / 16)) * 16)  # head width: 256 x width
            self.head = nn.Sequential(
                nn.Conv2d(c, h, 1), nn.ReLU(inplace=True),
                nn.Conv2d(h, h, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(h, h, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(h, out_ch, 1),
            )
            self.min_size = 32
        self._init_head()

    def _init_head(self) -> None:
        mods = list(self.encoder.modules()) if self.encoder_name == "basic" else []
        mods += list(self.head.modules())
        for m in mods:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, target: torch.Tensor, contexts: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(contexts) != self.num_context:
            raise ValueError(f"PoseNet: expected {self.num_context} context frames, got {len(contexts)}")
        check_rgb_input(target, "PoseNet target", multiple=self.min_size if self.encoder_name != "basic" else 1)
        for i, c in enumerate(contexts):
            if c.shape != target.shape:
                raise ValueError(f"PoseNet: context {i} has shape {tuple(c.shape)}, target {tuple(target.shape)}")
        x = torch.cat([target, *contexts], dim=1)  # [B, 3(1+N), H, W]
        if self.encoder_name == "basic":
            feat = self.encoder(self.normalize(x))  # [B, 256, H/128, W/128] (ceil)
        else:
            feat = self.encoder(x)[-1]  # [B, C, H/32, W/32]
        out = self.head(feat).mean(dim=(2, 3))  # [B, 6N]
        return POSE_SCALE * out.view(-1, self.num_context, 6)  # [B, N, 6]
