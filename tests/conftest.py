"""Shared fixtures: the read-only real data (by path, never copied) and ROS localhost setup."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from semdepth_core.paths import kitti_raw_dir, shared_data_dir  # noqa: E402

# A level camera CAM_HEIGHT above a flat road, for the ground-plane and camera-height tests
ROAD_H, ROAD_W = 96, 160
ROAD_K = np.array([[200.0, 0.0, (ROAD_W - 1) / 2], [0.0, 200.0, (ROAD_H - 1) / 2], [0.0, 0.0, 1.0]])
CAM_HEIGHT = 1.65


def road_depth(height: float = CAM_HEIGHT, far: float = 60.0) -> np.ndarray:
    """[ROAD_H, ROAD_W] depth of the road `height` below the camera (ray-plane intersection); horizon and above: far."""
    v = np.arange(ROAD_H, dtype=np.float64)[:, None] - ROAD_K[1, 2]
    road = np.where(v > 0, height * ROAD_K[1, 1] / np.maximum(v, 1e-9), far)
    return np.broadcast_to(np.minimum(road, far), (ROAD_H, ROAD_W)).copy()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.fail(f"shared data not found at {d} (set SEMDEPTH_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def kitti_root(shared_data) -> Path:
    return kitti_raw_dir()


@pytest.fixture(scope="session")
def kitti_drive_dir(kitti_root) -> Path:
    return kitti_root / "2011_09_26" / "2011_09_26_drive_0001_sync"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """One small synthetic KITTI-format drive (seed 7, 12 frames, 320x96), generated once per session."""
    from semdepth_core.data.synthetic import generate_drive

    root = tmp_path_factory.mktemp("synthetic")
    generate_drive(root, frames=12, seed=7, width=320, height=96)
    return root


def write_test_checkpoint(path: Path, overrides: dict, seed: int = 0) -> Path:
    """A randomly initialised checkpoint of the architecture `overrides` describes (a partial config dict)."""
    import torch

    from semdepth_core.checkpoint import save_checkpoint
    from semdepth_core.config import config_from_dict, config_to_dict
    from semdepth_core.nets.model import build_models

    cfg = config_from_dict(overrides)
    torch.manual_seed(seed)
    depth, pose = build_models(cfg.model, num_context=len(cfg.data.context))
    save_checkpoint(path, {"config": config_to_dict(cfg), "depth_model": depth.state_dict(),
                           "pose_net": pose.state_dict()})
    return path


# ResNet-18 + ESPNet semantic head at 192x64, random weights: the node tests' model
TINY_NODE_MODEL = {"data": {"height": 64, "width": 192},
                   "model": {"depth_net": "resnet18", "semantic": {"enabled": True, "arch": "espnet"}}}
