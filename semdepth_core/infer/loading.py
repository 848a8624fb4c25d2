"""Rebuild the depth and pose networks from a checkpoint's embedded config (never from defaults).

Used by every backend and by the exporters, so a model is always constructed the same way.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from semdepth_core.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from semdepth_core.config import Config, ConfigError, config_from_dict


@dataclass
class LoadedModels:
    config: Config
    depth_model: torch.nn.Module
    pose_net: torch.nn.Module | None
    checkpoint_path: Path
    checkpoint_sha256: str


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def config_from_checkpoint(ckpt: dict, path: str | Path = "<checkpoint>") -> Config:
    """The checkpoint's embedded config, with weight-file paths cleared (the state dicts hold all
    weights, and the original pretrained files need not exist on the inference machine)."""
    try:
        cfg = config_from_dict(copy.deepcopy(ckpt.get("config")))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: embedded config is invalid: {exc}") from exc
    cfg.model.pretrained = ""
    cfg.model.pose_pretrained = ""
    cfg.model.semantic.weights = ""
    cfg.model.semantic.pretrained_backbone = ""
    return cfg


def load_models(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedModels:
    """Load `checkpoint` safely, rebuild both networks from its config, load weights (strict), eval().

    Raises CheckpointError for a missing/unreadable/foreign checkpoint or an architecture mismatch.
    """
    from semdepth_core.nets.model import build_models  # late: heavy import

    path = Path(checkpoint)
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = config_from_checkpoint(ckpt, path)
    if not isinstance(ckpt.get("depth_model"), dict):
        raise CheckpointError(f"{path}: no 'depth_model' state dict")
    try:
        depth_model, pose_net = build_models(cfg.model, num_context=len(cfg.data.context))
    except (ValueError, FileNotFoundError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model from its config: {exc}") from exc
    load_state_dict_checked(depth_model, ckpt["depth_model"], "depth_model")
    pose_state = ckpt.get("pose_net")
    if isinstance(pose_state, dict):
        load_state_dict_checked(pose_net, pose_state, "pose_net")
    else:
        pose_net = None
    depth_model = depth_model.to(device).eval()
    if pose_net is not None:
        pose_net = pose_net.to(device).eval()
    return LoadedModels(cfg, depth_model, pose_net, path, file_sha256(path))
