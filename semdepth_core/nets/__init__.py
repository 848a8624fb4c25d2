"""Depth, pose and semantic-guidance networks (see docs/architecture.md, "nets/")."""
from __future__ import annotations

from .depth_decoder import DepthDecoder
from .guidance import GuidanceBranch, GuidedConv
from .mobilenetv2 import MobileNetV2Encoder
from .model import DEPTH_NETS, DepthModel, build_models
from .packnet import PackNet01
from .pac import PacConv2d
from .posenet import PoseNet
from .resnet import ResNetEncoder

__all__ = [
    "DEPTH_NETS",
    "DepthDecoder",
    "DepthModel",
    "GuidanceBranch",
    "GuidedConv",
    "MobileNetV2Encoder",
    "PackNet01",
    "PacConv2d",
    "PoseNet",
    "ResNetEncoder",
    "build_models",
]
