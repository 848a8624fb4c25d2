"""ESPNet (Mehta et al., ECCV 2018) with p=2, q=8, written from the paper; module names match the
public Cityscapes state_dict (`espnet_p2_q8_cityscapes.pth`, 189 tensors) so it loads strict=True.

Structure (C = 20 classes, sizes for an H x W input, H and W padded internally to multiples of 8):
  encoder (ESPNet-C):
    level1   3x3/2 conv-BN-PReLU                    3 -> 16           H/2
    b1       BN-PReLU of [level1, image/2]          16+3 = 19         H/2   -> feature (stride 2)
    level2_0 strided ESP module                     19 -> 64          H/4
    level2   p=2 ESP modules (residual)             64 -> 64          H/4
    b2       BN-PReLU of [level2, level2_0, img/4]  64+64+3 = 131     H/4   -> feature (stride 4)
    level3_0 strided ESP module                     131 -> 128        H/8
    level3   q=8 ESP modules (residual)             128 -> 128        H/8
    b3       BN-PReLU of [level3_0, level3]         128+128 = 256     H/8   -> feature (stride 8)
    classifier 1x1 conv                             256 -> C          H/8
  decoder:
    br + up_l3       BN, 2x2/2 deconv               C -> C            H/4
    level3_C         1x1 conv on b2                 131 -> C          H/4
    combine_l2_l3    BN-PReLU, ESP module           2C -> C           H/4
    up_l2            2x2/2 deconv, BN-PReLU         C -> C            H/2
    conv             3x3 conv-BN-PReLU on [up_l2, level1]  C+16 -> C  H/2
    classifier       2x2/2 deconv                   C -> C            H     -> logits
The exposed guidance features are the three concatenation outputs b1, b2, b3 (19, 131, 256 ch).

An ESP module (§3.1 of the ESPNet paper): a 1x1 (or 3x3 strided) "reduce" conv to n = N/K channels
(K = 5), K parallel 3x3 dilated convs with rates 1, 2, 4, 8, 16 (the rate-1 branch takes the
remainder N - (K-1)n channels), hierarchical feature fusion (the outputs of rates 2..16 are
summed cumulatively before concatenation), an optional residual, then BN-PReLU.
Input: RGB in [0, 1]; converted inside to BGR, ((0-255 value - mean) / std) / 255 (see `normalize`).
BatchNorm eps is 1e-3 (the running variances are ~1e-6, so eps matters; 1e-5 breaks the net).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import SemanticNet, SemanticOutput, check_semantic_input

# Statistics of the Cityscapes training images, BGR channel order, 0-255 scale.
CITYSCAPES_MEAN_BGR = (72.39, 82.91, 73.16)
CITYSCAPES_STD_BGR = (45.32, 46.15, 44.91)
BN_EPS = 1e-3


class _BR(nn.Module):
    """BatchNorm + PReLU (`bn`, `act`)."""

    def __init__(self, ch: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.act = nn.PReLU(ch)

    def forward(self, x):
        return self.act(self.bn(x))


class _CBR(nn.Module):
    """Conv (no bias, 'same' padding) + BatchNorm + PReLU (`conv`, `bn`, `act`)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.PReLU(cout)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class _C(nn.Module):
    """Plain conv without bias (`conv`), optional stride and dilation, 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 * dilation, dilation=dilation,
                              bias=False)

    def forward(self, x):
        return self.conv(x)


class ESPModule(nn.Module):
    """ESP module: reduce, split-transform with dilations 1..16, HFF, [residual], BN-PReLU.

    downsample=True is the strided variant (3x3/2 reduce conv, no residual, `bn`/`act` attributes);
    otherwise the reduce conv is 1x1 and the output BR lives in `bn` (a BR module).
    """

    RATES = (1, 2, 4, 8, 16)

    def __init__(self, cin: int, cout: int, downsample: bool = False, residual: bool = True):
        super().__init__()
        k = len(self.RATES)
        n = cout // k
        n1 = cout - (k - 1) * n
        self.downsample = downsample
        self.residual = residual and not downsample and cin == cout
        if residual and not downsample and cin != cout:
            raise ValueError(f"ESPModule: a residual needs cin == cout, got {cin} -> {cout}")
        self.c1 = _C(cin, n, 3 if downsample else 1, stride=2 if downsample else 1)
        self.d1 = _C(n, n1, 3, dilation=1)
        self.d2 = _C(n, n, 3, dilation=2)
        self.d4 = _C(n, n, 3, dilation=4)
        self.d8 = _C(n, n, 3, dilation=8)
        self.d16 = _C(n, n, 3, dilation=16)
        if downsample:
            self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.act = nn.PReLU(cout)
        else:
            self.bn = _BR(cout)

    def forward(self, x):
        r = self.c1(x)  # [B,n,h,w]
        s = self.d2(r)
        fused = [self.d1(r), s]  # hierarchical feature fusion: cumulative sums of rates 2..16
        for branch in (self.d4, self.d8, self.d16):
            s = s + branch(r)
            fused.append(s)
        out = torch.cat(fused, 1)  # [B,cout,h,w]
        if self.residual:
            out = out + x
        if self.downsample:
            return self.act(self.bn(out))
        return self.bn(out)


class _InputProjection(nn.Module):
    """Image pyramid for input reinforcement: `times` 3x3/2 average poolings (no parameters)."""

    def __init__(self, times: int):
        super().__init__()
        self.pool = nn.Sequential(*[nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])

    def forward(self, x):
        return self.pool(x)


class ESPNetEncoder(nn.Module):
    """ESPNet-C: returns the b1, b2, b3 concatenations (strides 2, 4, 8) and the level1 output."""

    def __init__(self, num_classes: int = 20, p: int = 2, q: int = 8):
        super().__init__()
        self.level1 = _CBR(3, 16, 3, stride=2)
        self.sample1 = _InputProjection(1)
        self.sample2 = _InputProjection(2)
        self.b1 = _BR(16 + 3)
        self.level2_0 = ESPModule(16 + 3, 64, downsample=True)
        self.level2 = nn.ModuleList([ESPModule(64, 64) for _ in range(p)])
        self.b2 = _BR(128 + 3)
        self.level3_0 = ESPModule(128 + 3, 128, downsample=True)
        self.level3 = nn.ModuleList([ESPModule(128, 128) for _ in range(q)])
        self.b3 = _BR(256)
        self.classifier = _C(256, num_classes, 1)

    def forward(self, x):
        """x[B,3,H,W] normalised BGR -> (level1 [B,16,H/2], b1 [B,19,H/2], b2 [B,131,H/4], b3 [B,256,H/8])."""
        img2, img4 = self.sample1(x), self.sample2(x)
        l1 = self.level1(x)  # [B,16,H/2,W/2]
        f1 = self.b1(torch.cat([l1, img2], 1))  # [B,19,H/2,W/2]
        d2 = self.level2_0(f1)  # [B,64,H/4,W/4]
        y = d2
        for m in self.level2:
            y = m(y)
        f2 = self.b2(torch.cat([y, d2, img4], 1))  # [B,131,H/4,W/4]
        d3 = self.level3_0(f2)  # [B,128,H/8,W/8]
        y = d3
        for m in self.level3:
            y = m(y)
        f3 = self.b3(torch.cat([d3, y], 1))  # [B,256,H/8,W/8]
        return l1, f1, f2, f3


class ESPNet(SemanticNet):
    """Full ESPNet segmentation net: forward(rgb01[B,3,H,W]) -> SemanticOutput(logits, [b1, b2, b3])."""

    feature_strides = [2, 4, 8]
    feature_channels = [19, 131, 256]

    def __init__(self, num_classes: int = 20, p: int = 2, q: int = 8):
        super().__init__()
        c = num_classes
        self.num_classes = num_classes
        self.encoder = ESPNetEncoder(c, p, q)
        self.level3_C = _C(128 + 3, c, 1)
        self.br = nn.BatchNorm2d(c, eps=BN_EPS)
        self.conv = _CBR(16 + c, c, 3)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(_BR(2 * c), ESPModule(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), _BR(c))
        self.classifier = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.register_buffer("mean", torch.tensor(CITYSCAPES_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CITYSCAPES_STD_BGR).view(1, 3, 1, 1), persistent=False)

    def normalize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """RGB [0,1] -> BGR ((x*255 - mean) / std) / 255, the input the Cityscapes weights expect.

        The final /255 is not in the data README's "(img - mean) / std", but the weights' BatchNorm
        running statistics require it: level1's running variance matches the conv output of this
        input (ratio ~1.5) and is 255^2 too small for the input without it (accuracy 0.05 vs 0.94).
        """
        return (rgb01.flip(1) * 255.0 - self.mean) / (self.std * 255.0)

    def forward(self, rgb01: torch.Tensor):
        check_semantic_input(rgb01, "ESPNet")
        H, W = rgb01.shape[-2:]
        ph, pw = (-H) % 8, (-W) % 8  # pad to a multiple of 8 so the decoder's 2x steps line up
        x = self.normalize(rgb01)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        l1, f1, f2, f3 = self.encoder(x)
        up3 = self.up_l3(self.br(self.encoder.classifier(f3)))  # [B,C,H/4,W/4]
        comb = self.combine_l2_l3(torch.cat([self.level3_C(f2), up3], 1))  # [B,C,H/4,W/4]
        up2 = self.up_l2(comb)  # [B,C,H/2,W/2]
        logits = self.classifier(self.conv(torch.cat([up2, l1], 1)))  # [B,C,H,W] (padded)
        if ph or pw:
            logits = logits[..., :H, :W]
            f1 = f1[..., : -(-H // 2), : -(-W // 2)]
            f2 = f2[..., : -(-H // 4), : -(-W // 4)]
            f3 = f3[..., : -(-H // 8), : -(-W // 8)]
        return SemanticOutput(logits, [f1, f2, f3])
