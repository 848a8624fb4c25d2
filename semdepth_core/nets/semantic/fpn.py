"""FPN semantic segmentation net with a ResNet backbone (paper §4.2: Lin et al. 2017 FPN; the
semantic head follows panoptic FPN, Kirillov et al. 2019).

    backbone (ResNetEncoder)  C1..C5 at strides 2, 4, 8, 16, 32
    FPN: lateral 1x1 on C2..C5 -> top-down (nearest 2x upsampling + add) -> 3x3 smoothing = P2..P5
    semantic head: each P_k goes through (3x3 conv, GroupNorm, ReLU, bilinear 2x) stages until
    stride 4 (P2: one stage without upsampling), the four maps are summed, a 1x1 conv gives the
    class logits at stride 4, bilinearly upsampled to the input resolution.
    guidance features: stride 2 = backbone stem C1 (64 ch), stride 4 = P2, stride 8 = P3.

Input: RGB in [0, 1] (the backbone normalises with ImageNet statistics); any H, W (padded by
edge replication to a multiple of 32 inside and cropped back).
Initialisation options for the Table 3 ablation: `pretrained_backbone=None` is a fully random
("untrained") net; an ImageNet ResNet checkpoint path gives the "I" (ImageNet-only) variant;
Cityscapes-trained weights ("CS") are loaded afterwards with `build_semantic_net(cfg.weights)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semdepth_core.nets.resnet import ResNetEncoder

from . import SemanticNet, SemanticOutput, check_semantic_input

BACKBONES = {"resnet18": 18, "resnet50": 50}


def _gn(ch: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups when possible (panoptic FPN), fewer for small widths."""
    groups = 32
    while ch % groups:
        groups //= 2
    return nn.GroupNorm(groups, ch)


class FPN(nn.Module):
    """Lateral 1x1 + top-down pathway + 3x3 smoothing: [C2..C5] -> [P2..P5], all `out_ch` wide."""

    def __init__(self, in_channels: list[int], out_ch: int):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_ch, 1) for c in in_channels])
        self.smooth = nn.ModuleList([nn.Conv2d(out_ch, out_ch, 3, padding=1) for _ in in_channels])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]  # [B,out_ch,H/s,W/s] each
        top = lat[-1]
        merged = [top]
        for lvl in range(len(lat) - 2, -1, -1):
            top = lat[lvl] + F.interpolate(top, size=lat[lvl].shape[-2:], mode="nearest")
            merged.insert(0, top)
        return [conv(m) for conv, m in zip(self.smooth, merged)]


class SemanticHead(nn.Module):
    """Panoptic-FPN semantic branch: per level conv-GN-ReLU(-up 2x) stages to stride 4, sum, 1x1."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, num_levels: int = 4):
        super().__init__()
        # level l (stride 4*2^l) has max(l, 1) stages; each stage of a level l > 0 ends with a 2x upsampling
        self.levels = nn.ModuleList(
            nn.ModuleList(
                nn.Sequential(nn.Conv2d(in_ch if s == 0 else mid_ch, mid_ch, 3, padding=1, bias=False), _gn(mid_ch),
                              nn.ReLU(inplace=True))
                for s in range(max(lvl, 1))
            )
            for lvl in range(num_levels)
        )
        self.classifier = nn.Conv2d(mid_ch, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        size = pyramid[0].shape[-2:]  # stride 4
        total = None
        for lvl, (stages, p) in enumerate(zip(self.levels, pyramid)):
            y = p  # [B,in_ch,H/(4*2^lvl),...]
            for j, stage in enumerate(stages):
                y = stage(y)
                if lvl > 0:  # the last stage lands exactly on the stride-4 grid
                    target = size if j == len(stages) - 1 else (y.shape[-2] * 2, y.shape[-1] * 2)
                    y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            total = y if total is None else total + y  # [B,mid_ch,H/4,W/4]
        return self.classifier(total)  # [B,C,H/4,W/4]


class FPNSemantic(SemanticNet):
    """FPN-ResNet semantic net: forward(rgb01[B,3,H,W]) -> SemanticOutput(logits, [C1, P2, P3])."""

    def __init__(self, backbone: str = "resnet50", num_classes: int = 20, pretrained_backbone: str | None = None,
                 fpn_channels: int | None = None, head_channels: int = 128):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"FPNSemantic: backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if num_classes < 2:
            raise ValueError(f"FPNSemantic: num_classes must be >= 2, got {num_classes}")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.encoder = ResNetEncoder(BACKBONES[backbone], 3, pretrained_backbone or None)
        enc_ch = self.encoder.num_ch_enc  # strides 2..32
        fpn_ch = fpn_channels or (128 if backbone == "resnet18" else 256)
        self.fpn = FPN(enc_ch[1:], fpn_ch)
        self.head = SemanticHead(fpn_ch, head_channels, num_classes)
        self.feature_channels = [enc_ch[0], fpn_ch, fpn_ch]
        self.feature_strides = [2, 4, 8]
        for m in list(self.fpn.modules()) + list(self.head.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)  # as the reference FPN implementations
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, rgb01: torch.Tensor) -> SemanticOutput:
        check_semantic_input(rgb01, "FPNSemantic")
        H, W = rgb01.shape[-2:]
        ph, pw = (-H) % 32, (-W) % 32
        x = F.pad(rgb01, (0, pw, 0, ph), mode="replicate") if (ph or pw) else rgb01
        c1, c2, c3, c4, c5 = self.encoder(x)  # strides 2..32
        p2, p3, _p4, _p5 = pyr = self.fpn([c2, c3, c4, c5])  # strides 4..32
        logits = self.head(pyr)  # [B,C,Hp/4,Wp/4]
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :H, :W]
        feats = [c1[..., : -(-H // 2), : -(-W // 2)], p2[..., : -(-H // 4), : -(-W // 4)],
                 p3[..., : -(-H // 8), : -(-W // 8)]]
        return SemanticOutput(logits, feats)
