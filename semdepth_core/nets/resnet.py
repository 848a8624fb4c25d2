"""ResNet-18/50 encoders with torchvision-compatible module and state_dict names.

A torchvision ImageNet checkpoint (`resnet18-*.pth`, `resnet50-*.pth`) loads with
`load_state_dict`; its classifier (`fc.*`) is accepted and ignored. Input is RGB in [0, 1];
the encoder normalises internally with the ImageNet mean/std (the statistics the torchvision
weights were trained with), frame by frame when several frames are stacked (pose encoder).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .layers import ImageNetNormalize, adapt_first_conv, check_rgb_input, load_state_dict_file


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision), 1x1 expand x4, residual."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS: dict[int, tuple[type, list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    50: (Bottleneck, [3, 4, 6, 3]),
}


class ResNetEncoder(nn.Module):
    """ResNet encoder returning 5 feature maps at strides 2, 4, 8, 16, 32.

    forward(x[B, in_ch, H, W] in [0, 1]) -> [
        relu(bn1(conv1(x)))   [B,  64, H/2,  W/2],
        layer1(maxpool(.))    [B,  64|256,  H/4,  W/4],
        layer2                [B, 128|512,  H/8,  W/8],
        layer3                [B, 256|1024, H/16, W/16],
        layer4                [B, 512|2048, H/32, W/32]]   (ResNet-18 | ResNet-50)

    `in_ch` = 3k stacks k frames (pose encoder); pretrained first-conv weights are then
    replicated k times and divided by k. H and W must be multiples of 32.
    """

    def __init__(self, depth: int = 18, in_ch: int = 3, pretrained_path: str | Path | None = None) -> None:
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"ResNetEncoder: depth must be one of {sorted(_SPECS)}, got {depth}")
        if in_ch < 3 or in_ch % 3:
            raise ValueError(f"ResNetEncoder: in_ch must be a positive multiple of 3, got {in_ch}")
        block, layers = _SPECS[depth]
        self.depth = depth
        self.in_ch = in_ch
        self.normalize = ImageNetNormalize()
        self.conv1 = nn.Conv2d(in_ch, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        e = block.expansion
        self.num_ch_enc = [64, 64 * e, 128 * e, 256 * e, 512 * e]
        self._init_weights()
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * block.expansion
        mods += [block(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_pretrained(self, path: str | Path) -> None:
        """Load a torchvision-layout ImageNet checkpoint (fc.* ignored; other mismatches raise)."""
        sd = {k: v for k, v in load_state_dict_file(path, f"ResNet-{self.depth}").items()
              if not k.startswith("fc.")}
        if "conv1.weight" in sd:
            sd["conv1.weight"] = adapt_first_conv(sd["conv1.weight"], self.in_ch)
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"ResNet-{self.depth}: {path} is not a torchvision ResNet-{self.depth} "
                             f"checkpoint: {exc}") from exc

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_rgb_input(x, f"ResNetEncoder(depth={self.depth})", channels=self.in_ch)
        x = self.normalize(x)
        f0 = self.relu(self.bn1(self.conv1(x)))  # [B, 64, H/2, W/2]
        f1 = self.layer1(self.maxpool(f0))  # [B, 64e, H/4, W/4]
        f2 = self.layer2(f1)  # [B, 128e, H/8, W/8]
        f3 = self.layer3(f2)  # [B, 256e, H/16, W/16]
        f4 = self.layer4(f3)  # [B, 512e, H/32, W/32]
        return [f0, f1, f2, f3, f4]
