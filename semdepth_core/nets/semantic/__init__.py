"""Semantic segmentation networks that guide the depth network (paper §4.2, Fig. 2).

Every net: `forward(rgb01[B,3,H,W] RGB in [0,1]) -> SemanticOutput(logits[B,C,H,W] at input
resolution, features=[stride 2, stride 4, stride 8])`, attributes `feature_channels`,
`feature_strides` (= [2, 4, 8]) and `num_classes`, and `predict(rgb01) -> labels[B,H,W]`
(trainIds, the extra "ignore" class 19 mapped to 255). Input normalisation happens inside.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from semdepth_core.data.labels import IGNORE, NUM_CLASSES


class SemanticOutput(NamedTuple):
    """Output of a semantic net: logits [B,C,H,W] and guidance features at strides 2, 4, 8."""

    logits: torch.Tensor
    features: list[torch.Tensor]


def check_semantic_input(x: torch.Tensor, name: str) -> None:
    """Raise ValueError unless x is a float [B,3,H,W] tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected RGB in [0,1] as a [B,3,H,W] tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0,1], got {x.dtype}")


class SemanticNet(nn.Module):
    """Base class: shared `predict` (argmax over trainIds; class >= 19, i.e. 'ignore', -> 255)."""

    feature_strides: list[int] = [2, 4, 8]
    feature_channels: list[int]
    num_classes: int

    @torch.no_grad()
    def predict(self, rgb01: torch.Tensor) -> torch.Tensor:
        """rgb01[B,3,H,W] -> labels[B,H,W] int64 trainIds with 255 = ignore."""
        labels = self(rgb01).logits.argmax(dim=1)  # [B,H,W]
        return torch.where(labels >= NUM_CLASSES, torch.full_like(labels, IGNORE), labels)


def load_semantic_weights(net: nn.Module, path: str | Path) -> None:
    """Load a state_dict file (or a dict wrapping one under 'semantic_net'/'state_dict'/'model') strictly."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"semantic net weights not found: {p} (model.semantic.weights)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is reported with the path
        raise ValueError(f"semantic net weights {p}: cannot be loaded safely: {exc}") from exc
    if isinstance(obj, dict):
        for key in ("semantic_net", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"semantic net weights {p}: not a state_dict of tensors")
    try:
        net.load_state_dict(obj, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"semantic net weights {p} do not match {type(net).__name__}: {exc}") from exc


def build_semantic_net(cfg) -> SemanticNet:
    """SemanticConfig -> ESPNet / FPN-ResNet net, loading `cfg.weights` when set."""
    if cfg.arch == "espnet":
        from .espnet import ESPNet

        net = ESPNet(num_classes=cfg.num_classes)
    elif cfg.arch in ("fpn_resnet18", "fpn_resnet50"):
        from .fpn import FPNSemantic

        net = FPNSemantic(backbone=cfg.arch[len("fpn_"):], num_classes=cfg.num_classes,
                          pretrained_backbone=cfg.pretrained_backbone or None)
    else:
        raise ValueError(f"model.semantic.arch: unknown semantic net {cfg.arch!r} "
                         "(espnet | fpn_resnet18 | fpn_resnet50)")
    if cfg.weights:
        load_semantic_weights(net, cfg.weights)
    return net


__all__ = ["SemanticOutput", "SemanticNet", "build_semantic_net", "check_semantic_input", "load_semantic_weights"]
