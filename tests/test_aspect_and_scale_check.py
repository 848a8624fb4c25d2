"""Network input at the camera's aspect ratio, and the live check of a metric model's scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semdepth_core.infer import load_predictor
from semdepth_core.infer.scale import ModelScaleCheck
from semdepth_core.infer.processing import network_size_for

from conftest import CAM_HEIGHT, ROAD_K as K, TINY_NODE_MODEL, road_depth, write_test_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ aspect ratio
@pytest.mark.parametrize("image, expected", [
    ((1242, 375), (416, 128)),   # KITTI: the training shape itself
    ((1226, 370), (416, 128)),   # KITTI odometry rig
    ((2048, 1024), (320, 160)),  # Cityscapes, 2:1
    ((1920, 1080), (320, 160)),  # 16:9
    ((640, 480), (256, 192)),    # 4:3
])
def test_network_size_keeps_the_aspect_ratio_at_the_pixel_budget(image, expected):
    w, h = network_size_for(image, 416 * 128)
    assert (w, h) == expected and w % 32 == 0 and h % 32 == 0
    assert 0.75 < w * h / (416 * 128) < 1.25
    assert abs(math.log((w / h) / (image[0] / image[1]))) < 0.25


def test_network_size_rejects_nonsense():
    with pytest.raises(ValueError, match="image size must be positive"):
        network_size_for((0, 10), 1000)
    with pytest.raises(ValueError, match="pixel_budget"):
        network_size_for((10, 10), 0)
    assert network_size_for((5000, 10), 100) == (224, 32)  # never below one stride


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_predictor_runs_each_camera_at_its_own_aspect_ratio(tmp_path, backend):
    ckpt = write_test_checkpoint(tmp_path / "tiny.ckpt", TINY_NODE_MODEL)  # trained shape 192x64
    rng = np.random.default_rng(0)
    pred = load_predictor(ckpt, backend=backend, engine_cache_dir=tmp_path / "cache")
    assert pred.size_policy == "aspect"
    wide = pred.predict(rng.integers(0, 256, (120, 360, 3), dtype=np.uint8))  # 3:1 like the training shape
    assert pred.input_size == (192, 64) and wide.inv_depth.shape == (64, 192) and wide.depth.shape == (120, 360)
    square = pred.predict(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    assert pred.input_size == (96, 96) and square.inv_depth.shape == (96, 96)  # not squashed to 192x64
    assert square.depth.shape == (200, 200) and square.labels.shape == (200, 200)
    K2 = np.array([[100.0, 0, 99.5], [0, 100.0, 99.5], [0, 0, 1]])
    np.testing.assert_allclose(pred.network_intrinsics(K2, (200, 200)), [[48, 0, 47.5], [0, 48, 47.5], [0, 0, 1]])
    T = pred.relative_pose(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                           rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    assert T.shape == (4, 4)
    fixed = load_predictor(ckpt, backend=backend, height=64, width=192, engine_cache_dir=tmp_path / "cache")
    assert fixed.size_policy == "fixed"
    assert fixed.predict(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).inv_depth.shape == (64, 192)
    pred.close()
    fixed.close()


# ------------------------------------------------------------------------------ model scale check
def test_model_scale_check_agrees_on_metric_depth_and_refutes_a_wrong_scale():
    chk = ModelScaleCheck(camera_height=CAM_HEIGHT, factor=1.5, window=3, period_s=1.0)
    assert chk.ratio is None and chk.implied_camera_height is None and chk.agrees is None and chk.confidence == 0.0
    assert chk.due(0.0)
    chk.add(road_depth(), K, 0.0)  # metric depth of a road 1.65 m below
    assert not chk.due(0.5) and chk.due(1.0)
    assert chk.implied_camera_height == pytest.approx(CAM_HEIGHT, rel=1e-6) and chk.agrees
    assert chk.confidence == pytest.approx(1 / 3, rel=1e-6)  # one frame of a 3-frame window, no spread
    for t in (1.0, 2.0):
        chk.add(road_depth(), K, t)
    assert chk.confidence == pytest.approx(1.0, rel=1e-6)
    # depth half the truth: the ground plane puts the camera 0.825 m up, a factor 2 off
    low = ModelScaleCheck(camera_height=CAM_HEIGHT, factor=1.5, window=3, period_s=0.0)
    for t in range(3):
        low.add(road_depth() / 2.0, K, float(t))
    assert low.implied_camera_height == pytest.approx(CAM_HEIGHT / 2, rel=1e-6)
    assert low.agrees is False and low.confidence == 0.0
    # 20 % off, inside the factor: agrees, with a confidence that says how far off it is
    near = ModelScaleCheck(camera_height=CAM_HEIGHT, factor=1.5, window=1, period_s=0.0)
    near.add(road_depth() * 1.2, K, 0.0)
    assert near.agrees and near.confidence == pytest.approx(1 - math.log(1.2) / math.log(1.5), rel=1e-6)
    # no ground in the frame: no evidence, nothing changes
    near.add(np.full_like(road_depth(), np.nan), K, 1.0)
    assert near.estimator.no_fit == 1 and near.frames_checked == 2
    for bad in (dict(factor=1.0), dict(factor=math.inf), dict(period_s=-1.0), dict(camera_height=0.0)):
        with pytest.raises(ValueError):
            ModelScaleCheck(**bad)
