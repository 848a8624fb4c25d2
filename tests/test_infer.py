"""infer/: one Predictor over torch / ONNX Runtime / TensorRT, shared pre/post-processing, pose
convention, checkpoint errors, TensorRT fallback, and the odometry ScaleEstimator."""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest
import torch

from semdepth_core.checkpoint import CheckpointError, save_checkpoint
from semdepth_core.config import config_from_dict, config_to_dict
from semdepth_core.geometry.se3 import invert_se3, mat_to_pose_vec, pose_vec_to_mat
from semdepth_core.infer import ScaleEstimator, load_predictor, odometry_scale, resolve_backend
from semdepth_core.infer import processing
from semdepth_core.infer.predictor import CPU_DEFAULT_BACKEND, CPU_GUIDED_BACKEND, Predictor, tensorrt_available
from semdepth_core.nets.model import build_models

H, W = 96, 320


def _make_ckpt(path, model: dict, data: dict | None = None, loss: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    cfg = config_from_dict({"model": model, "data": {"height": H, "width": W, **(data or {})}, "loss": loss or {}})
    depth, pose = build_models(cfg.model, num_context=len(cfg.data.context))
    save_checkpoint(path, {"config": config_to_dict(cfg), "depth_model": depth.state_dict(),
                           "pose_net": pose.state_dict()})
    return path


@pytest.fixture(scope="module")
def guided_ckpt(tmp_path_factory):
    """MobileNetV2 depth net guided by ESPNet through PAC (the paper's architecture, small)."""
    d = tmp_path_factory.mktemp("ckpt")
    return _make_ckpt(d / "mbv2_guided.pt", {"depth_net": "mobilenetv2", "guidance": True,
                                              "semantic": {"enabled": True, "arch": "espnet"}})


@pytest.fixture(scope="module")
def kitti_rgb(kitti_drive_dir):
    path = kitti_drive_dir / "image_02" / "data" / "0000000000.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def predictors(guided_ckpt, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    pt = load_predictor(guided_ckpt, backend="torch")
    ort = load_predictor(guided_ckpt, backend="onnxruntime", engine_cache_dir=cache)
    return pt, ort, cache


# ------------------------------------------------------------------------ processing

def test_preprocess_layout_and_range():
    rgb = np.zeros((375, 1242, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    x = processing.preprocess(rgb, (W, H))
    assert x.shape == (1, 3, H, W) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[0, 0], 1.0)
    np.testing.assert_allclose(x[0, 1:], 0.0)
    with pytest.raises(ValueError, match="uint8"):
        processing.preprocess(rgb.astype(np.float32), (W, H))
    with pytest.raises(ValueError, match="HxWx3"):
        processing.preprocess(rgb[..., 0], (W, H))


def test_postprocess_inverse_depth_upsampling_and_labels():
    inv = np.full((H, W), 0.25, np.float32)
    inv[:, W // 2:] = 0.05
    labels = np.zeros((H, W), np.int64)
    labels[: H // 2] = 19  # void class -> ignore
    labels[H // 2:, :10] = 13
    inv_o, depth, lab = processing.postprocess(inv, labels, (1242, 375), 0.1, 100.0)
    assert depth.shape == (375, 1242) and depth.dtype == np.float32
    assert lab.shape == (375, 1242) and lab.dtype == np.uint8
    assert set(np.unique(lab)) == {0, 13, 255}
    np.testing.assert_allclose(depth[:, :500], 4.0, rtol=1e-5)  # 1 / 0.25
    np.testing.assert_allclose(depth[:, 700:], 20.0, rtol=1e-5)  # 1 / 0.05
    mid = depth[0, 610:632]  # the step is interpolated on *inverse* depth: 1/depth is between
    assert np.all((1 / mid >= 0.05 - 1e-6) & (1 / mid <= 0.25 + 1e-6))
    # clamping keeps depth finite inside [min_depth, max_depth]
    _, d2, _ = processing.postprocess(np.array([[0.0, 1e9]], np.float32), None, (2, 1), 0.1, 100.0)
    np.testing.assert_allclose(d2, [[100.0, 0.1]], rtol=1e-5)


def test_network_intrinsics_half_pixel_rule():
    K = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]])
    Kn = processing.network_intrinsics(K, (1242, 375), (W, H))
    sx, sy = W / 1242, H / 375
    assert Kn[0, 0] == pytest.approx(721.5 * sx) and Kn[1, 1] == pytest.approx(721.5 * sy)
    assert Kn[0, 2] == pytest.approx((609.6 + 0.5) * sx - 0.5)
    assert Kn[1, 2] == pytest.approx((172.9 + 0.5) * sy - 0.5)


# ---------------------------------------------------------------------- predictors

def test_torch_predictor_outputs(predictors, kitti_rgb, guided_ckpt):
    pt, _, _ = predictors
    assert pt.backend_name == "torch" and pt.input_size == (W, H)
    assert pt.is_metric is False and pt.has_semantics and pt.has_pose
    out = pt.predict(kitti_rgb)
    assert out.inv_depth.shape == (H, W) and out.inv_depth.dtype == np.float32
    assert out.depth.shape == kitti_rgb.shape[:2] and out.depth.dtype == np.float32
    assert out.labels.shape == kitti_rgb.shape[:2] and out.labels.dtype == np.uint8
    assert np.all(np.isfinite(out.depth))
    assert out.depth.min() >= 0.1 - 1e-6 and out.depth.max() <= 100.0 + 1e-3
    assert set(np.unique(out.labels)) <= set(range(19)) | {255}
    assert set(out.timings) == {"preprocess", "network", "postprocess"}
    assert all(v >= 0 for v in out.timings.values())
    # depth is exactly the shared postprocess of the network's inverse depth
    _, ref_depth, _ = processing.postprocess(out.inv_depth, None, (kitti_rgb.shape[1], kitti_rgb.shape[0]), 0.1, 100.0)
    np.testing.assert_array_equal(out.depth, ref_depth)


def test_torch_vs_onnxruntime_predictor_parity(predictors, kitti_rgb):
    pt, ort, _ = predictors
    assert ort.backend_name == "onnxruntime" and ort.has_semantics and ort.has_pose
    a, b = pt.predict(kitti_rgb), ort.predict(kitti_rgb)
    rel = np.abs(a.depth - b.depth) / a.depth
    assert rel.max() <= 1e-3, f"depth differs by {rel.max():.2e} relative"
    agree = (a.labels == b.labels).mean()
    assert agree >= 0.999, f"labels agree on only {agree:.4%}"
    prev = np.ascontiguousarray(kitti_rgb[:, ::-1])  # any second frame
    Ta, Tb = pt.relative_pose(prev, kitti_rgb), ort.relative_pose(prev, kitti_rgb)
    assert Ta.dtype == np.float64 and Ta.shape == (4, 4)
    np.testing.assert_allclose(Ta[3], [0, 0, 0, 1])
    np.testing.assert_allclose(Ta[:3, :3] @ Ta[:3, :3].T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(Ta, Tb, atol=1e-5)


def test_semantics_apart_from_depth_match_the_joint_pass(predictors, kitti_rgb, tmp_path):
    """Unguided model: depth without the semantic net + labels from it alone == the one joint pass, on torch
    and on a split ONNX export (two graphs); a guided model cannot be split and says so."""
    unguided = _make_ckpt(tmp_path / "unguided.pt", {"depth_net": "mobilenetv2",
                                                    "semantic": {"enabled": True, "arch": "espnet"}})
    joint = load_predictor(unguided, backend="torch").predict(kitti_rgb)
    ort_joint = load_predictor(unguided, backend="onnxruntime", engine_cache_dir=tmp_path)
    assert not ort_joint.semantics_separable  # one graph: depth and labels come together
    for backend in ("torch", "onnxruntime"):
        p = load_predictor(unguided, backend=backend, engine_cache_dir=tmp_path, split_semantics=True)
        assert p.semantics_separable and p.has_semantics
        depth_only = p.predict(kitti_rgb, semantics=False)
        assert depth_only.labels is None
        np.testing.assert_allclose(depth_only.depth, joint.depth, rtol=1e-3)
        labels, timings = p.predict_labels(kitti_rgb)
        assert labels.shape == kitti_rgb.shape[:2] and timings["semantics"] > 0
        assert (labels == joint.labels).mean() >= 0.999, backend
        both = p.predict(kitti_rgb)  # the split graphs still serve a joint request
        assert (both.labels == joint.labels).mean() >= 0.999
    assert sorted(f.name.split("_", 1)[1] for f in (tmp_path / "onnx").glob("*_split*.onnx")) == [
        "320x96_decomposed_split.onnx", "320x96_decomposed_split.pose.onnx", "320x96_decomposed_split.semantic.onnx"]
    pt, _, _ = predictors  # guided: the depth net needs the semantic features of the same frame
    assert not pt.semantics_separable
    with pytest.raises(RuntimeError, match="cannot run apart"):
        pt.predict(kitti_rgb, semantics=False)
    from semdepth_core.export.onnx_export import export_loaded
    from semdepth_core.infer.loading import load_models

    with pytest.raises(ValueError, match="split_semantics needs a semantic net that guides nothing"):
        export_loaded(load_models(pt.checkpoint), tmp_path / "g.onnx", (W, H), split_semantics=True)


def test_onnx_graph_from_another_checkpoint_is_refused(predictors, tmp_path):
    _, ort, cache = predictors
    other = _make_ckpt(tmp_path / "other.pt", {"depth_net": "mobilenetv2", "guidance": True,
                                               "semantic": {"enabled": True}}, seed=1)
    graph = next((cache / "onnx").glob("*_decomposed.onnx"))
    with pytest.raises(ValueError, match="another checkpoint"):
        load_predictor(other, backend="onnxruntime", onnx_path=graph)


class _FakeRunner:
    """Returns fixed pose vectors per slot: lets the pose convention be checked exactly."""
    name = "fake"
    has_semantics = False
    has_pose = True

    def __init__(self, vecs):
        self.vecs = np.asarray(vecs, np.float64)
        self.num_context = len(self.vecs)
        self.calls = []

    def run_depth(self, x):
        return np.ones(x.shape[-2:], np.float32), None

    def run_pose(self, tgt, ctxs):
        self.calls.append((tgt, ctxs))
        return self.vecs


def test_relative_pose_convention():
    cur = np.full((64, 96, 3), 200, np.uint8)
    prev = np.full((64, 96, 3), 10, np.uint8)
    fwd = [0.0, 0.0, 0.8, 0.0, 0.02, 0.0]  # cur camera 0.8 ahead of prev: T_prev_cur translation +z
    T_fwd = pose_vec_to_mat(torch.tensor([fwd], dtype=torch.float64))
    other = mat_to_pose_vec(invert_se3(T_fwd))[0].tolist()  # the exact reverse motion
    # context [-1, 1]: target = current frame, previous frame in the -1 slot, the other slot gets the target
    cfg = config_from_dict({"data": {"context": [-1, 1]}})
    runner = _FakeRunner([fwd, other])
    T = Predictor(runner, cfg, (96, 64)).relative_pose(prev, cur)
    tgt, ctxs = runner.calls[-1]
    assert tgt.mean() > 0.7 and ctxs[0].mean() < 0.1 and ctxs[1].mean() > 0.7
    np.testing.assert_allclose(T[:3, 3], [0, 0, 0.8])
    np.testing.assert_allclose(T, T_fwd[0].numpy(), atol=1e-12)
    # a point 10 m ahead of the current camera is 10.8 m ahead of the previous one
    assert (T @ np.array([0, 0, 10.0, 1]))[2] == pytest.approx(10.8, abs=0.05)
    # context [1] only: previous frame is the target, result inverted back to T_prev_cur
    cfg1 = config_from_dict({"data": {"context": [1]}})
    T1 = Predictor(_FakeRunner([other]), cfg1, (96, 64)).relative_pose(prev, cur)
    np.testing.assert_allclose(T1, T, atol=1e-9)


def test_metric_flag_from_velocity_supervision(tmp_path):
    p = _make_ckpt(tmp_path / "vel.pt", {"depth_net": "resnet18"}, loss={"velocity_weight": 0.1})
    pred = load_predictor(p, backend="torch", height=64, width=128)
    assert pred.is_metric is True and pred.input_size == (128, 64) and not pred.has_semantics
    out = pred.predict(np.zeros((100, 200, 3), np.uint8))
    assert out.labels is None and out.depth.shape == (100, 200)
    with pytest.raises(ValueError, match="multiple of 32"):
        load_predictor(p, backend="torch", height=100, width=128)


# ------------------------------------------------------------------- errors, fallback

def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_predictor(tmp_path / "missing.pt", backend="torch")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError):
        load_predictor(junk, backend="torch")
    # config says resnet50 but the weights are a resnet18's: clear architecture mismatch
    cfg = config_from_dict({"model": {"depth_net": "resnet50"}})
    depth18, _ = build_models(config_from_dict({"model": {"depth_net": "resnet18"}}).model)
    bad = tmp_path / "mismatch.pt"
    save_checkpoint(bad, {"config": config_to_dict(cfg), "depth_model": depth18.state_dict()})
    with pytest.raises(CheckpointError, match="does not match"):
        load_predictor(bad, backend="onnxruntime")


def test_tensorrt_falls_back_to_onnxruntime_with_warning(guided_ckpt, predictors, caplog):
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip("TensorRT and a CUDA device are available here: no fallback to test")
    _, _, cache = predictors
    with caplog.at_level(logging.WARNING):
        pred = load_predictor(guided_ckpt, backend="tensorrt", engine_cache_dir=cache)
    assert pred.backend_name == "onnxruntime"
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("tensorrt" in m and "falling back to 'onnxruntime'" in m for m in msgs), msgs


def test_auto_backend_resolution():
    assert resolve_backend("auto", "cpu") == CPU_DEFAULT_BACKEND
    assert resolve_backend("auto", "cpu", guided=True) == CPU_GUIDED_BACKEND
    assert {CPU_DEFAULT_BACKEND, CPU_GUIDED_BACKEND} <= {"torch", "onnxruntime"}
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("openvino", "cpu")


def test_tensorrt_predictor_matches_torch(request):
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        pytest.skip(f"TensorRT not importable ({type(exc).__name__}: {exc}); the TensorRT backend cannot run here")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA device is visible")
    guided_ckpt, kitti_rgb = request.getfixturevalue("guided_ckpt"), request.getfixturevalue("kitti_rgb")
    pt, _, cache = request.getfixturevalue("predictors")
    trt_pred = load_predictor(guided_ckpt, backend="tensorrt", device="cuda", engine_cache_dir=cache)
    assert trt_pred.backend_name == "tensorrt"
    a, b = pt.predict(kitti_rgb), trt_pred.predict(kitti_rgb)
    assert (np.abs(a.depth - b.depth) / a.depth).max() <= 1e-3
    assert (a.labels == b.labels).mean() >= 0.999


# -------------------------------------------------------------------------- scale

def test_odometry_scale():
    assert odometry_scale([0, 0, 0.5], speed=10.0, dt=0.1) == pytest.approx(2.0)
    assert odometry_scale([0.3, 0, 0.4], speed=-5.0, dt=0.1) == pytest.approx(1.0)  # reversing: |speed|
    assert odometry_scale([0, 0, 0], speed=10.0, dt=0.1) is None
    assert odometry_scale([0, 0, 0.5], speed=float("nan"), dt=0.1) is None
    with pytest.raises(ValueError):
        odometry_scale([0, 0, 0.5], speed=10.0, dt=0.0)


def test_scale_estimator_median_of_noisy_ratios():
    rng = np.random.default_rng(0)
    true_scale, dt = 2.5, 0.1
    est = ScaleEstimator(window=30, min_speed=1.0)
    assert est.value is None and est.confidence == 0.0
    confs = []
    for _ in range(60):
        speed = rng.uniform(5, 15)
        t = speed * dt / true_scale * (1 + rng.normal(0, 0.05))  # 5 % pose noise
        est.update([0, 0, t], speed, dt)
        confs.append(est.confidence)
    assert est.value == pytest.approx(true_scale, rel=0.03)
    assert est.num_samples == 30
    assert confs[-1] > confs[2] and 0.5 < confs[-1] <= 1.0


def test_scale_estimator_holds_when_still_and_rejects_outliers():
    est = ScaleEstimator(window=20, min_speed=1.0, outlier_ratio=0.3, min_samples=5, max_rejections=10)
    for _ in range(10):
        est.update([0, 0, 0.4], 10.0, 0.1)  # ratio 2.5
    assert est.value == pytest.approx(2.5)
    # standing still: garbage translations are ignored, value held
    for _ in range(20):
        v = est.update([0, 0, 0.001], 0.05, 0.1)
    assert v == pytest.approx(2.5) and est.holding
    # sporadic outliers (10x off) are rejected and do not move the median
    n_before = est.num_samples
    for i in range(5):
        est.update([0, 0, 0.04], 10.0, 0.1)  # ratio 25
        est.update([0, 0, 0.4], 10.0, 0.1)
    assert est.value == pytest.approx(2.5) and est.rejected == 5 and not est.holding
    assert est.num_samples == n_before + 5
    # a persistent change (e.g. another model) is adopted after max_rejections samples
    for _ in range(12):
        est.update([0, 0, 0.2], 10.0, 0.1)  # ratio 5.0
    assert est.value == pytest.approx(5.0)
    assert math.isfinite(est.confidence)
