"""The depth model of Fig. 2: depth network (+ optional fixed semantic network guiding it) and
the pose network, built from a `ModelConfig`.

`DepthModel.forward(rgb01[B,3,H,W]) -> {"inv_depths": [4 x [B,1,H/2^s,W/2^s]],
"sem_logits": [B,C,H,W] | None}`. The semantic net runs once per image; its features feed the
pixel-adaptive convolutions (when `cfg.guidance`) and its logits are returned as `sem_logits`.
Unless `cfg.semantic.finetune` (Table 3 "D+S"), the semantic net is frozen: no gradients,
always in eval mode (also after `model.train()`), run under no_grad, and its parameters are left
out of `depth_parameters()` (what the depth optimiser gets).
"""
from __future__ import annotations

import math

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth_core.config import ModelConfig

from .layers import check_rgb_input, load_state_dict_file

DEPTH_NETS = ("resnet18", "resnet50", "mobilenetv2", "packnet01")


class DepthModel(nn.Module):
    """Depth network (ResNet/MobileNetV2 encoder + DepthDecoder, or PackNet01) with an optional
    semantic network. `semantic_net` may be passed in to share one instance (else it is built
    with `build_semantic_net(cfg.semantic)` when `cfg.semantic.enabled`)."""

    def __init__(self, cfg: ModelConfig, semantic_net: nn.Module | None = None) -> None:
        super().__init__()
        if cfg.depth_net not in DEPTH_NETS:
            raise ValueError(f"model.depth_net: {cfg.depth_net!r} is not one of {DEPTH_NETS}")
        if cfg.guidance and not cfg.semantic.enabled:
            raise ValueError("model.guidance: requires model.semantic.enabled: true")
        self.cfg = cfg
        self.depth_net_name = cfg.depth_net
        self.semantic_frozen = not cfg.semantic.finetune

        # semantic network (Fig. 2, top) -----------------------------------------------------
        self.semantic: nn.Module | None = None
        guidance_channels = None
        if cfg.semantic.enabled:
            if semantic_net is None:
                from .semantic import build_semantic_net

                semantic_net = build_semantic_net(cfg.semantic)
            for attr in ("feature_channels", "feature_strides", "num_classes"):
                if not hasattr(semantic_net, attr):
                    raise TypeError(f"semantic net {type(semantic_net).__name__} lacks attribute {attr!r}")
            self.semantic = semantic_net
            if cfg.guidance:
                guidance_channels = {int(s): int(c) for s, c in
                                     zip(semantic_net.feature_strides, semantic_net.feature_channels)}
            if self.semantic_frozen:
                self.semantic.requires_grad_(False)
                self.semantic.eval()
        elif semantic_net is not None:
            raise ValueError("DepthModel: a semantic_net was given but model.semantic.enabled is false")
        self.guidance_channels = guidance_channels

        # depth network ----------------------------------------------------------------------
        pretrained = cfg.pretrained or None
        if pretrained and not Path(pretrained).is_file():
            raise FileNotFoundError(f"model.pretrained: encoder weights file not found: {pretrained}")
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.packnet: nn.Module | None = None
        if cfg.depth_net == "packnet01":
            if pretrained:
                raise ValueError("model.pretrained: packnet01 has no ImageNet-pretrained encoder; leave it empty")
            from .packnet import PackNet01

            self.packnet = PackNet01(cfg.min_depth, cfg.max_depth, version=cfg.packnet_version,
                                     guidance_channels=guidance_channels, pac_sigma_mode=cfg.pac_sigma_mode)
        else:
            if cfg.depth_net == "mobilenetv2":
                from .mobilenetv2 import MobileNetV2Encoder

                self.encoder = MobileNetV2Encoder(pretrained, last_block=cfg.mobilenet_last_block)
            else:
                from .resnet import ResNetEncoder

                self.encoder = ResNetEncoder(int(cfg.depth_net[len("resnet"):]), 3, pretrained)
            from .depth_decoder import DepthDecoder

            self.decoder = DepthDecoder(self.encoder.num_ch_enc, cfg.min_depth, cfg.max_depth, num_scales=4,
                                        guidance_channels=guidance_channels, pac_sigma_mode=cfg.pac_sigma_mode,
                                        num_ch_dec=cfg.decoder_channels)
        if cfg.init_depth:
            init_inv_depth_heads(self, cfg.init_depth, cfg.min_depth, cfg.max_depth)

    # training helpers -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> "DepthModel":
        super().train(mode)
        if self.semantic is not None and self.semantic_frozen:
            self.semantic.eval()  # a frozen semantic net keeps its BatchNorm statistics fixed
        return self

    def depth_parameters(self) -> list[nn.Parameter]:
        """Parameters the depth optimiser updates (the semantic net's only when fine-tuned)."""
        skip = set()
        if self.semantic is not None and self.semantic_frozen:
            skip = {id(p) for p in self.semantic.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # forward --------------------------------------------------------------------------------
    def run_semantic(self, rgb01: torch.Tensor):
        """The semantic net's SemanticOutput (no_grad when frozen), or None without one.

        With `semantic.input_scale` s != 1 the net sees the image resized by s (a net trained on
        Cityscapes at 1024x512 needs about 2x on KITTI at 640x192, where objects are ~3x smaller in
        pixels); its features are resized back to strides 2/4/8 of the depth input and its logits
        to the input size, so guidance and the semantic output keep their shapes.
        """
        if self.semantic is None:
            return None
        scale = float(self.cfg.semantic.input_scale)
        x = rgb01
        if scale != 1.0:
            # python ints: an exported graph is built per input size, and a traced shape is a tensor
            h, w = (int(v) for v in rgb01.shape[-2:])
            x = F.interpolate(rgb01, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.semantic_frozen):
            out = self.semantic(x)
        if scale == 1.0:
            return out
        h, w = rgb01.shape[-2:]
        feats = [F.interpolate(f, size=(h // s, w // s), mode="bilinear", align_corners=False)
                 for f, s in zip(out.features, self.semantic.feature_strides)]
        logits = F.interpolate(out.logits, size=(h, w), mode="bilinear", align_corners=False)
        return type(out)(logits, feats)

    def forward(self, rgb01: torch.Tensor, semantic=None, with_semantics: bool = True) -> dict[str, object]:
        """semantic: the frozen semantic net's output for this batch when already known (training's
        feature cache, `training.train.SemanticCache`); its logits may be None. with_semantics=False
        skips the semantic net when nothing needs it (training without guidance or SegDepth):
        "sem_logits" is then None."""
        check_rgb_input(rgb01, f"DepthModel({self.depth_net_name})")
        if semantic is not None:
            sem = semantic
        elif with_semantics or self.guidance_channels:
            sem = self.run_semantic(rgb01)
        else:
            sem = None
        guidance = None
        if self.guidance_channels:
            strides = list(self.semantic.feature_strides)
            if len(sem.features) != len(strides):
                raise ValueError(f"semantic net returned {len(sem.features)} feature maps for strides {strides}")
            guidance = {int(s): f for s, f in zip(strides, sem.features)}  # stride -> [B, Cs, H/s, W/s]
        if self.packnet is not None:
            inv_depths = self.packnet(rgb01, guidance)
        else:
            inv_depths = self.decoder(self.encoder(rgb01), guidance)
        return {"inv_depths": inv_depths, "sem_logits": None if sem is None else sem.logits}


def _pose_encoder_for(path: str) -> str:
    """Pick the pose encoder that matches a pretrained checkpoint's key layout."""
    keys = load_state_dict_file(path, "model.pose_pretrained").keys()
    if "features.0.0.weight" in keys:
        return "mobilenetv2"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "resnet18"
    raise ValueError(f"model.pose_pretrained: {path} is neither a torchvision ResNet-18 nor a "
                     "MobileNetV2 features state_dict")


def build_models(cfg: ModelConfig, num_context: int = 2,
                 semantic_net: nn.Module | None = None) -> tuple[DepthModel, nn.Module]:
    """ModelConfig -> (DepthModel, PoseNet). The pose net gets `num_context` context frames
    (len(data.context)) and the encoder `cfg.pose_encoder`, initialised from `cfg.pose_pretrained`
    when set (the file's layout must match the encoder). The config alone fixes the architecture,
    so inference rebuilds both networks from a checkpoint's embedded config."""
    from .posenet import PoseNet

    depth = DepthModel(cfg, semantic_net=semantic_net)
    pretrained = cfg.pose_pretrained or None
    if pretrained:
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"model.pose_pretrained: weights file not found: {pretrained}")
        found = _pose_encoder_for(pretrained)
        if found != cfg.pose_encoder:
            raise ValueError(f"model.pose_encoder: {cfg.pose_encoder!r} does not match model.pose_pretrained "
                             f"({pretrained} holds a {found} state_dict); set model.pose_encoder: {found}")
    pose = PoseNet(num_context, cfg.pose_encoder, pretrained, width=cfg.pose_width, last_block=cfg.pose_last_block)
    return depth, pose


def init_inv_depth_heads(model: nn.Module, depth: float, min_depth: float, max_depth: float) -> int:
    """Set the bias of every inverse-depth head so an untrained net predicts `depth` metres everywhere
    (the logit of (1/depth - 1/max) / (1/min - 1/max)); returns the number of heads set."""
    if not min_depth < depth < max_depth:
        raise ValueError(f"model.init_depth must lie in ({min_depth}, {max_depth}), got {depth}")
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    p = (1.0 / depth - lo) / (hi - lo)
    logit = math.log(p / (1.0 - p))
    heads = []
    if getattr(model, "decoder", None) is not None:
        heads = [h.conv for h in model.decoder.dispconv]
    if getattr(model, "packnet", None) is not None:
        heads = [getattr(model.packnet, f"disp{i}").conv for i in range(1, 5)]
    for conv in heads:
        nn.init.constant_(conv.bias, logit)
    return len(heads)
