"""Camera-height metric scale and the infinite-depth hole check (issue 7; paper §4.3).

Pure pieces (semdepth_core/geometry/ground_check.py, infer/scale.py) on constructed depth maps of a flat road 1.65 m below
the camera, and `training.evaluate --camera-height` on a 4-frame synthetic drive: once with a
constructed "prediction" (the drive's dense ground truth divided by a known factor, so the GT-free
scale must recover that factor and the metrics must be near perfect), once through a real
(randomly initialised) network, plus the fallback for images without a ground fit and the
argument checks.
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from semdepth_core.geometry.ground_plane import camera_height_scale
from semdepth_core.geometry.ground_check import HoleCheckStats, frame_camera_height_scale, infinite_depth_check
from semdepth_core.infer.scale import CameraHeightScaleEstimator

from conftest import CAM_HEIGHT, road_depth as _road_depth, ROAD_H as H, ROAD_K as K, ROAD_W as W


# ------------------------------------------------------------------ camera-height scale estimator
def test_frame_camera_height_scale_recovers_the_factor_and_returns_none_without_ground():
    assert frame_camera_height_scale(_road_depth() / 2.5, K, CAM_HEIGHT) == pytest.approx(2.5, rel=1e-6)
    assert frame_camera_height_scale(np.full((H, W), np.nan), K, CAM_HEIGHT) is None  # no valid pixel
    assert frame_camera_height_scale(np.zeros((H, W)), K, CAM_HEIGHT) is None
    with pytest.raises(ValueError, match="camera_height"):
        frame_camera_height_scale(_road_depth(), K, 0.0)


def test_estimator_rolling_median_over_the_window():
    est = CameraHeightScaleEstimator(camera_height=CAM_HEIGHT, window=3)
    assert est.value is None and est.confidence == 0.0 and est.num_samples == 0
    assert est.add_scale(1.0) == 1.0
    assert est.add_scale(2.0) == 1.5
    assert est.add_scale(10.0) == 2.0  # median of [1, 2, 10]: the outlier does not drag it
    assert est.add_scale(3.0) == 3.0  # window 3: 1.0 has left -> median of [2, 10, 3]
    assert est.num_samples == 3 and est.accepted == 4 and est.last_ratio == 3.0 and not est.holding
    est.reset()
    assert est.value is None and est.accepted == 0


def test_estimator_holds_on_no_fit_and_rejects_non_finite():
    est = CameraHeightScaleEstimator(camera_height=CAM_HEIGHT, window=5)
    # from depth maps: a road in model units (metric / 2.5), then frames without any ground
    assert est.add_depth(_road_depth() / 2.5, K) == pytest.approx(2.5, rel=1e-6)
    assert not est.holding and est.num_samples == 1
    for no_ground in (np.full((H, W), np.nan), np.zeros((H, W))):
        assert est.add_depth(no_ground, K) == pytest.approx(2.5, rel=1e-6)  # held
        assert est.holding and est.last_ratio is None
    for bad in (None, math.nan, math.inf, -math.inf, 0.0, -1.0):
        assert est.add_scale(bad) == pytest.approx(2.5, rel=1e-6)
        assert est.holding
    assert est.num_samples == 1 and est.no_fit == 8 and est.accepted == 1
    assert est.add_depth(_road_depth() / 4.0, K) == pytest.approx(3.25, rel=1e-6)  # median of [2.5, 4]
    assert not est.holding
    # before any accepted frame: no value (the node publishes model units then)
    fresh = CameraHeightScaleEstimator(window=5)
    assert fresh.add_scale(math.nan) is None and fresh.holding and fresh.value is None


def test_estimator_confidence_and_argument_checks():
    est = CameraHeightScaleEstimator(window=4)
    for _ in range(4):
        est.add_scale(2.0)
    assert est.confidence == pytest.approx(1.0) and est.spread == 0.0
    est2 = CameraHeightScaleEstimator(window=4)
    est2.add_scale(2.0)
    assert est2.confidence == pytest.approx(0.25)  # a quarter of the window filled
    with pytest.raises(ValueError, match="camera_height"):
        CameraHeightScaleEstimator(camera_height=0.0)
    with pytest.raises(ValueError, match="camera_height"):
        CameraHeightScaleEstimator(camera_height=math.nan)
    with pytest.raises(ValueError, match="window"):
        CameraHeightScaleEstimator(window=0)


# ------------------------------------------------------------------------ infinite-depth check
def _hole(depth, r0=60, r1=90, c0=40, c1=100, far=100.0):
    """Push a lower-image block to `far` metres; returns (depth, expected below-ground count at margin 0.5)."""
    d = depth.copy()
    d[r0:r1, c0:c1] = far
    y = far * (np.arange(r0, r1) - K[1, 2]) / K[1, 1]  # height below the camera of each hole row
    return d, int((y > CAM_HEIGHT + 0.5).sum()) * (c1 - c0)


def test_flat_ground_is_not_flagged():
    r = infinite_depth_check(_road_depth(), K, margin_slope=0.0, margin=0.5, max_below_pixels=10, metric_scale=1.0)
    assert r.checked and r.count == 0 and not r.flagged and r.scale == 1.0 and r.reason == ""
    # scale-free depth (metric / 2.5): made metric by the camera height first, still clean
    r = infinite_depth_check(_road_depth() / 2.5, K, margin_slope=0.0, camera_height=CAM_HEIGHT)
    assert r.checked and r.count == 0 and not r.flagged and r.scale == pytest.approx(2.5, rel=1e-6)


def test_hole_pushed_to_100m_is_flagged_with_the_right_count():
    depth, expected = _hole(_road_depth())
    assert expected == 30 * 60  # every hole row is > 2.15 m "below" the camera at 100 m
    r = infinite_depth_check(depth, K, margin_slope=0.0, margin=0.5, max_below_pixels=10, metric_scale=1.0)
    assert r.checked and r.flagged and r.count == expected
    assert r.below_mask.sum() == expected and r.below_mask[60:90, 40:100].all()
    # the same map in model units: the camera height restores metres, same count
    r2 = infinite_depth_check(depth / 2.5, K, margin_slope=0.0, margin=0.5, max_below_pixels=10, camera_height=CAM_HEIGHT)
    assert r2.checked and r2.flagged and r2.count == expected and r2.scale == pytest.approx(2.5, rel=1e-6)
    # ... or a metric scale known from elsewhere (e.g. the node's scale.mode)
    r3 = infinite_depth_check(depth / 2.5, K, margin_slope=0.0, margin=0.5, max_below_pixels=10, metric_scale=2.5)
    assert r3.count == expected and r3.flagged
    # threshold: flagged only when the count exceeds max_below_pixels
    assert not infinite_depth_check(depth, K, margin_slope=0.0, max_below_pixels=expected, metric_scale=1.0).flagged
    assert infinite_depth_check(depth, K, margin_slope=0.0, max_below_pixels=expected - 1, metric_scale=1.0).flagged
    # the default margin grows by 0.05 m per metre of depth: at 100 m, 5 m more
    y = 100.0 * (np.arange(60, 90) - K[1, 2]) / K[1, 1]
    r4 = infinite_depth_check(depth, K, metric_scale=1.0)
    assert r4.flagged and r4.count == int((y > CAM_HEIGHT + 0.5 + 0.05 * 100.0).sum()) * 60 < expected


def test_margin_is_in_metres_and_a_small_hole_rows_split_at_the_margin():
    # hole at 15 m straddling the margin: rows whose point is > margin below the road count
    depth, _ = _hole(_road_depth(), r0=60, r1=90, far=15.0)
    y = 15.0 * (np.arange(60, 90) - K[1, 2]) / K[1, 1]
    for margin in (0.2, 0.5, 1.0):
        expected = int((y > CAM_HEIGHT + margin).sum()) * 60
        r = infinite_depth_check(depth, K, margin_slope=0.0, margin=margin, max_below_pixels=10, metric_scale=1.0)
        assert r.count == expected and 0 < expected < 30 * 60, margin


def test_no_ground_fit_is_unchecked_never_an_exception():
    for depth in (np.full((H, W), np.nan), np.zeros((H, W)), np.full((H, W), 100.0)):
        r = infinite_depth_check(depth, K, margin_slope=0.0, metric_scale=1.0)
        assert not r.checked and not r.flagged and r.count == 0 and r.reason
        r = infinite_depth_check(depth, K)  # no camera-height scale either
        assert not r.checked and not r.flagged and r.reason
    stats = HoleCheckStats()
    stats.record(infinite_depth_check(np.zeros((H, W)), K))
    stats.record(infinite_depth_check(_road_depth(), K, margin_slope=0.0, metric_scale=1.0))
    stats.record(infinite_depth_check(_hole(_road_depth())[0], K, margin_slope=0.0, metric_scale=1.0))
    assert (stats.checked, stats.flagged, stats.unchecked, stats.last_count) == (2, 1, 1, 1800)
    with pytest.raises(ValueError, match="margin"):
        infinite_depth_check(_road_depth(), K, margin=-0.1)
    with pytest.raises(ValueError, match="max_below_pixels"):
        infinite_depth_check(_road_depth(), K, max_below_pixels=-1)
    with pytest.raises(ValueError, match="margin_slope"):
        infinite_depth_check(_road_depth(), K, margin_slope=-0.01)


# ------------------------------------------------------------------- training.evaluate --camera-height
DATE, SEED = "2030_01_01", 201
FACTOR = 2.5  # the constructed prediction is the ground truth / FACTOR (model units)


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory):
    from semdepth_core.data.synthetic import generate_drive

    root = tmp_path_factory.mktemp("syn201")
    generate_drive(root, frames=4, seed=SEED, width=320, height=96)
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from conftest import write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt",
                                 {"data": {"height": 96, "width": 320}, "model": {"depth_net": "resnet18"}})


@pytest.fixture(scope="module")
def items(drive_root):
    """The evaluation items (network resolution 320x96 = the image size) keyed by a hash of their rgb."""
    from semdepth_core.data.dataset import KittiDataset

    ds = KittiDataset(drive_root, height=96, width=320, context=(), augment=None, with_gt=True, training=False)
    out = {}
    for i in range(len(ds)):
        it = ds.load(i)
        out[_key(it["rgb"])] = it
    assert len(out) == 4
    return out


def _key(rgb: torch.Tensor) -> str:
    return hashlib.sha1(rgb.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def constructed_prediction(monkeypatch, items):
    """training.evaluate.predict returns the image's dense ground truth / FACTOR as inverse depth."""
    import training.evaluate as E

    def fake_predict(model, rgb, flip):
        gt = items[_key(rgb[0])]["depth_gt"][0].double()
        depth = torch.where(gt > 0, gt, torch.full_like(gt, 200.0)) / FACTOR  # sky: far
        return (1.0 / depth)[None, None].float(), None

    monkeypatch.setattr(E, "predict", fake_predict)


def _net_depth_and_K(item):
    gt = item["depth_gt"][0].double()
    depth = torch.where(gt > 0, gt, torch.full_like(gt, 200.0)) / FACTOR
    depth = 1.0 / (1.0 / depth).float().clamp(min=1e-6)  # exactly what evaluate computes from the fake inv
    return depth.double().numpy(), item["K"].double().numpy()


def _run(args, tmp_path, name):
    from training.evaluate import main

    out = tmp_path / f"{name}.json"
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    return json.loads(out.read_text())


def test_evaluate_camera_height_recovers_the_metric_scale_without_gt(constructed_prediction, items, drive_root,
                                                                     tiny_ckpt, tmp_path, capsys):
    base = ["--checkpoint", str(tiny_ckpt), "--data", str(drive_root)]
    m = _run([*base, "--camera-height", "1.65"], tmp_path, "ch")
    assert m["scaling"] == "camera_height" and m["median_scaling"] is False and m["num_images"] == 4
    ch = m["camera_height"]
    assert ch["height_m"] == 1.65 and ch["no_ground_fit"] == 0 and ch["no_ground_fit_images"] == []
    assert ch["fallback_scale"] is None and "median of the other images" in ch["fallback"]
    by_name = {it["filename"]: it for it in items.values()}
    assert [e["image"] for e in ch["per_image"]] == sorted(by_name)
    for e in ch["per_image"]:
        depth, Kn = _net_depth_and_K(by_name[e["image"]])
        assert e["ground_fit"] is True
        assert e["scale"] == pytest.approx(camera_height_scale(depth, Kn, 1.65), rel=1e-9)
        assert e["scale"] == pytest.approx(FACTOR, rel=0.01)  # the synthetic camera is 1.65 m above the road
    assert ch["scale_spread"]["num_images"] == 4 and ch["scale_spread"]["std"] < 0.01
    assert ch["scale_over_gt_ratio"]["median"] == pytest.approx(1.0, abs=0.01)
    # the scale is applied: near-perfect metrics, unlike the unscaled model units
    assert m["abs_rel"] < 0.01 and m["a1"] > 0.99
    assert "camera-height scale (H = 1.65 m)" in capsys.readouterr().out
    none = _run([*base, "--no-median-scaling"], tmp_path, "none")
    assert none["scaling"] == "none" and none["median_scaling"] is False and "camera_height" not in none
    assert none["abs_rel"] > 0.5
    med = _run(base, tmp_path, "median")
    assert med["scaling"] == "median" and med["median_scaling"] is True and "camera_height" not in med
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "num_images", "ratio_spread",
                "flip", "checkpoint"):  # the existing keys stay
        assert key in m and key in med, key


def test_evaluate_camera_height_falls_back_to_the_median_of_the_other_images(constructed_prediction, drive_root,
                                                                            tiny_ckpt, tmp_path, monkeypatch):
    import training.evaluate as E

    no_ground = f"{DATE}/{DATE}_drive_{SEED:04d}_sync/0000000001"
    calls = []

    def flaky(depth, K, known_height, *a):  # the second image has "no ground" (None, as without a fit)
        calls.append(1)
        if len(calls) == 2:
            return None
        return frame_camera_height_scale(depth, K, known_height, *a) * (1.0 + 0.1 * len(calls))

    monkeypatch.setattr(E, "frame_camera_height_scale", flaky)
    m = _run(["--checkpoint", str(tiny_ckpt), "--data", str(drive_root), "--camera-height", "1.65"], tmp_path, "fb")
    ch = m["camera_height"]
    assert m["num_images"] == 4 and ch["no_ground_fit"] == 1 and ch["no_ground_fit_images"] == [no_ground]
    per = {e["image"]: e for e in ch["per_image"]}
    fitted = [e["scale"] for e in per.values() if e["ground_fit"]]
    assert len(fitted) == 3 and per[no_ground]["ground_fit"] is False
    assert per[no_ground]["scale"] == pytest.approx(float(np.median(fitted))) == ch["fallback_scale"]
    assert ch["scale_spread"]["num_images"] == 3

    monkeypatch.setattr(E, "frame_camera_height_scale", lambda *a: None)
    with pytest.raises(SystemExit, match="no ground plane could be fitted in any of the 4 images"):
        E.main(["--checkpoint", str(tiny_ckpt), "--data", str(drive_root), "--camera-height", "1.65"])


def test_evaluate_camera_height_with_a_real_network(drive_root, tiny_ckpt, items, tmp_path):
    """No monkeypatching: per-image scale = camera_height_scale of the network's own depth and K."""
    from training.evaluate import load_depth_model, predict

    m = _run(["--checkpoint", str(tiny_ckpt), "--data", str(drive_root), "--camera-height", "1.2"], tmp_path, "net")
    model, _ = load_depth_model(tiny_ckpt, torch.device("cpu"))
    by_name = {it["filename"]: it for it in items.values()}
    expected = {}
    for name, it in by_name.items():
        inv, _ = predict(model, it["rgb"][None], False)
        depth = (1.0 / inv[0, 0].clamp(min=1e-6)).double().numpy()
        try:
            expected[name] = camera_height_scale(depth, it["K"].double().numpy(), 1.2)
        except ValueError:
            expected[name] = None
    fits = [s for s in expected.values() if s is not None]
    assert fits, "the random network gives no ground fit at all"
    ch = m["camera_height"]
    assert m["scaling"] == "camera_height" and ch["no_ground_fit"] == len(expected) - len(fits)
    for e in ch["per_image"]:
        want = expected[e["image"]]
        assert e["ground_fit"] is (want is not None)
        assert e["scale"] == pytest.approx(want if want is not None else float(np.median(fits)), rel=1e-4)


@pytest.mark.parametrize("value", ["0", "-1.65", "nan", "inf", "tall"])
def test_evaluate_rejects_a_bad_camera_height(value, capsys):
    from training.evaluate import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--checkpoint", "c.pt", "--data", "d", f"--camera-height={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--camera-height" in err and ("> 0" in err or "number" in err)


def test_evaluate_camera_height_excludes_no_median_scaling_and_is_in_help(capsys):
    from training.evaluate import parse_args

    assert parse_args(["--checkpoint", "c", "--data", "d", "--camera-height", "1.65"]).camera_height == 1.65
    assert parse_args(["--checkpoint", "c", "--data", "d"]).camera_height is None
    with pytest.raises(SystemExit) as exc:
        parse_args(["--checkpoint", "c", "--data", "d", "--camera-height", "1.65", "--no-median-scaling"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--camera-height H" in out and "scaling: camera_height" in out
    assert "with the median of the other images' camera-height scales" in out  # the fallback, in the epilog
