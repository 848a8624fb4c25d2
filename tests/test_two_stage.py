"""Two-stage training filter (§4.3) on constructed depth maps, and the pipeline on a synthetic drive."""
from __future__ import annotations

import json

import numpy as np
import pytest

from semdepth_core.config import TwoStageConfig
from training.filter_dataset import check_frame

H, W = 96, 320
K = np.array([[200.0, 0, 159.5], [0, 200.0, 47.5], [0, 0, 1]])
CAM_HEIGHT = 1.65


def flat_road_depth(scale: float = 1.0) -> np.ndarray:
    """Depth (z) of a flat ground 1.65 m below a level camera, times `scale`; sky rows = far."""
    v = np.arange(H, dtype=np.float64)[:, None].repeat(W, 1)
    with np.errstate(divide="ignore"):
        z = CAM_HEIGHT * K[1, 1] / (v - K[1, 2])
    z = np.where(v > K[1, 2] + 1, z, 80.0)
    return (z * scale).astype(np.float32)


def test_flat_road_in_model_units_has_no_hole():
    count, scale, ok, below = check_frame(flat_road_depth(0.25), K, TwoStageConfig(), metric=False)
    assert ok and count == 0 and not below.any()
    assert scale == pytest.approx(4.0, rel=0.02)  # camera height recovers the metric scale


def test_infinite_depth_hole_is_counted():
    depth = flat_road_depth(0.25)
    depth[70:80, 150:170] = 100.0  # a lead car predicted at "infinity" sits on the road
    count, _, ok, below = check_frame(depth, K, TwoStageConfig(), metric=False)
    assert ok
    assert count == 200 and below[70:80, 150:170].all()
    assert count > TwoStageConfig().max_below_pixels


def test_metric_models_are_not_rescaled():
    depth = flat_road_depth(1.0)
    depth[80:84, 10:15] = 60.0
    count, scale, ok, _ = check_frame(depth, K, TwoStageConfig(camera_height=3.0), metric=True)
    assert scale == 1.0 and ok and count == 20
