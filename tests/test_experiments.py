"""Fast checks of the research probes in experiments/: arguments, configs, pure helpers, one loss-basin run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import guided_vs_baseline as gvb
from experiments import two_stage_synthetic as tss
from training import budgeted as tb


def test_guided_and_two_stage_args():
    a = gvb.parse_args([])
    assert gvb.budget_of(a, gvb.FULL_BUDGET_MIN) == 15.0 and a.semantic_init == "cityscapes" and a.band_px == 3
    b = gvb.parse_args(["--quick", "--skip", "guided_random", "--semantic-init", "scratch", "--band-px", "2"])
    assert b.skip == ["guided_random"] and b.semantic_init == "scratch" and b.band_px == 2.0
    assert a.depth_net == "resnet18" and gvb.parse_args(["--depth-net", "mobilenetv2"]).depth_net == "mobilenetv2"
    with pytest.raises(SystemExit):
        gvb.parse_args(["--depth-net", "resnet50"])
    t = tss.parse_args([])
    assert tss.budget_of(t, tss.FULL_BUDGET_MIN) == 12.0 and t.depth_net == "resnet18"
    assert tss.parse_args(["--depth-net", "mobilenetv2"]).depth_net == "mobilenetv2"
    assert t.automask == "on" and tss.parse_args(["--automask", "off"]).automask == "off"
    with pytest.raises(SystemExit):
        tss.parse_args(["--automask", "maybe"])
    v = tss.parse_args(["--set", "loss.upsample_scales=false", "--tag", "coarse_losses"])
    assert v.sets == ["loss.upsample_scales=false"] and v.tag == "coarse_losses"
    for bad in (["--set", "loss.automask=false"], ["--tag", "../x"]):  # a variant needs a safe name
        with pytest.raises(SystemExit):
            tss.parse_args(bad)
    assert tss.budget_of(tss.parse_args(["--quick"]), tss.FULL_BUDGET_MIN) == tb.QUICK_BUDGET_MIN


def test_configs_load_with_the_quick_overrides():
    from semdepth_core.config import load_config

    sg = load_config(gvb.GUIDED_CFG, ["model.semantic.weights="])
    assert sg.model.guidance and sg.model.semantic.enabled and sg.model.semantic.arch == "espnet"
    assert not sg.model.semantic.finetune
    base = load_config(gvb.BASELINE_CFG)
    assert (sg.data, sg.loss, sg.optim, sg.train.seed) == (base.data, base.loss, base.optim, base.train.seed)
    # every family: guided and SegDepth arms share data, losses, optimiser and seed with their baseline
    for base_p, guided_p, seg_p, seg_extra in gvb.FAMILIES.values():
        b, g = load_config(base_p), load_config(guided_p, ["model.semantic.weights="])
        sd = load_config(seg_p, seg_extra + ["model.semantic.weights="])
        assert g.model.guidance and not b.model.guidance and not sd.model.guidance
        assert sd.loss.segdepth_weight > 0 and sd.model.semantic.enabled and sd.model.depth_net == b.model.depth_net
        assert (g.data, g.loss, g.optim, g.train.seed) == (b.data, b.loss, b.optim, b.train.seed)
        assert (sd.data, sd.optim, sd.train.seed) == (b.data, b.optim, b.train.seed)
    for net, path in tss.CONFIGS_BY_NET.items():
        assert load_config(path).model.depth_net == net
    two = load_config(tss.CONFIG, tss.stage_overrides())
    assert set(two.data.synthetic.lead_car_seeds) <= set(two.data.synthetic.train_seeds)
    for n, (train_seeds, lead_seeds) in tss.DRIVE_SETS.items():
        two = load_config(tss.CONFIG, tss.stage_overrides(train_seeds, lead_seeds))
        assert len(two.data.synthetic.train_seeds) == n == len(set(train_seeds))
        assert set(two.data.synthetic.lead_car_seeds) == set(lead_seeds) < set(train_seeds)
        assert tss.parse_args(["--train-drives", str(n)]).train_drives == n
    # held-out seeds of the probes are disjoint from training/validation and semantic drives
    used = {s for seeds, _ in tss.DRIVE_SETS.values() for s in seeds} | set(tss.VAL_SEEDS)
    used |= set(gvb.SEMANTIC_TRAIN_SEEDS) | set(gvb.SEMANTIC_VAL_SEEDS)
    assert not used & (set(tb.TEST_SEEDS) | set(tss.LEAD_TEST_SEEDS))


def test_collapse_probe_variants_load():
    from experiments import collapse_probe as cp
    from semdepth_core.config import load_config

    for name, (config, extra) in cp.VARIANTS.items():
        extra = [e.replace("{semantic}", "") for e in extra]
        cfg = load_config(tb.CONFIGS / config, tb.data_overrides(True) + extra)
        if name.startswith("velocity") and "depth_scale" not in name:  # the blog's form on ||t||
            assert not cfg.loss.depth_normalization and cfg.loss.velocity_weight > 0, name
    for name in ("synthetic_resnet18.yaml", "synthetic_resnet18_velocity.yaml", "synthetic_mobilenetv2_velocity.yaml"):
        cfg = load_config(tb.CONFIGS / name)
        assert cfg.loss.depth_normalization and cfg.loss.scale_anchor_weight > 0, name
        assert cfg.model.init_depth == cfg.loss.scale_anchor_depth, name


def test_label_edges_and_band_on_constructed_map():
    lab = np.zeros((12, 20), dtype=np.int64)
    lab[:, 10:] = 13  # one vertical edge between columns 9 and 10
    edges = gvb.label_edges(lab)
    assert set(np.nonzero(edges.any(0))[0]) == {9, 10} and edges[:, 9].all() and edges[:, 10].all()
    band = gvb.boundary_band_mask(lab, radius=3)
    cols = np.nonzero(band.all(0))[0]
    assert cols.min() == 6 and cols.max() == 13 and not band[:, :6].any() and not band[:, 14:].any()
    assert gvb.boundary_band_mask(lab, radius=0).sum() == edges.sum()


def test_band_uniform_map_is_empty_and_square_object():
    assert not gvb.boundary_band_mask(np.full((8, 8), 7), 3).any()
    lab = np.zeros((30, 30), dtype=np.int64)
    lab[10:20, 10:20] = 5
    band = gvb.boundary_band_mask(lab, radius=2)
    assert band[15, 8] and band[15, 11] and not band[15, 15] and not band[15, 5] and not band[2, 2]
    with pytest.raises(ValueError):
        gvb.label_edges(np.zeros((2, 2, 2)))


def test_band_masked_gt_scores_only_the_band():
    from semdepth_core.eval.metrics import compute_depth_metrics

    lab = np.zeros((40, 60), dtype=np.int64)
    lab[:, 30:] = 1
    gt = np.full(lab.shape, 10.0)
    pred = gt.copy()
    band = gvb.boundary_band_mask(lab, 3)
    pred[band] = 12.0  # errors only inside the band
    m = compute_depth_metrics(np.where(band, gt, 0.0), pred, median_scaling=False, garg_crop=False)
    assert m["abs_rel"] == pytest.approx(0.2) and m["num_pixels"] == band.sum()


def test_precision_recall():
    r = tss.precision_recall([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    none = tss.precision_recall([False, False], [False, False])
    assert none["precision"] is None and none["recall"] is None
    with pytest.raises(ValueError):
        tss.precision_recall([True], [True, False])


def test_frame_has_infinite_case(tmp_path):
    import cv2

    empty, car = tmp_path / "e.png", tmp_path / "c.png"
    m = np.zeros((4, 6), np.uint8)
    cv2.imwrite(str(empty), m)
    m[1, 2] = 1
    cv2.imwrite(str(car), m)
    assert tss.frame_has_infinite_case(car, lead_drive=True)
    assert not tss.frame_has_infinite_case(car, lead_drive=False)
    assert not tss.frame_has_infinite_case(empty, lead_drive=True)
    assert not tss.frame_has_infinite_case(tmp_path / "missing.png", lead_drive=True)


def test_pose_oracle_arms_and_pose_errors():
    import math

    import torch

    from experiments import pose_oracle as po
    from semdepth_core.config import load_config
    from semdepth_core.geometry.se3 import mat_to_pose_vec, pose_vec_to_mat

    for name, (config, extra) in po.ARMS.items():
        cfg = load_config(tb.CONFIGS / config, tb.data_overrides(True) + extra)
        assert cfg.loss.depth_normalization == (name != "gt_pose"), name  # metric poses fix the scale
    true = torch.tensor([[[0.0, 0.0, -1.0, 0.0, 0.01, 0.0], [0.0, 0.0, 1.0, 0.0, -0.01, 0.0]]])  # [1,2,6]
    T = pose_vec_to_mat(true.reshape(-1, 6)).reshape(1, 2, 4, 4)
    cos, rot = po.pose_errors(true, T)
    assert cos == pytest.approx(1.0) and rot == pytest.approx(0.0, abs=1e-2)
    turned = mat_to_pose_vec(T).clone()
    turned[..., 4] += math.radians(2.0)  # 2 degrees more yaw, same translation
    cos, rot = po.pose_errors(turned, T)
    assert cos == pytest.approx(1.0, abs=1e-6) and rot == pytest.approx(2.0, abs=1e-3)
    backwards = true.clone()
    backwards[..., :3] *= -1
    assert po.pose_errors(backwards, T)[0] == pytest.approx(-1.0)


def test_error_breakdown_cells_on_constructed_maps():
    from experiments import error_breakdown as eb

    gt = np.array([[2.0, 2.0, 10.0, 10.0], [30.0, 30.0, 0.0, 100.0]])  # 0: no GT, 100: beyond the last bin
    pred = np.array([[4.0, 4.0, 10.0, 5.0], [30.0, 60.0, 7.0, 7.0]])
    sem = np.array([[26, 26, 0, 0], [0, 0, 0, 0]])
    dyn = np.zeros_like(sem, dtype=bool)
    dyn[1, 1] = True
    groups = eb.group_masks(sem, dyn, car_id=26)
    assert sum(m.astype(int) for m in groups.values()).max() == 1  # disjoint
    bd = eb.Breakdown(bins=(0, 4, 20, 80))
    bd.add(pred, gt, groups, {"gt": np.full(gt.shape, 0.5)})
    rows = {(r["group"], r["gt_depth_m"]): r for r in bd.rows()}
    assert bd.total_pixels == 6
    car = rows[("parked car", "0-4")]
    assert car["abs_rel"] == pytest.approx(1.0) and car["mean_log_pred_over_gt"] == pytest.approx(np.log(2))
    assert car["pixel_share"] == pytest.approx(2 / 6) and car["photo_gt"] == pytest.approx(0.5)
    assert rows[("other", "4-20")]["abs_rel"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert rows[("moving object", "20-80")]["abs_rel"] == pytest.approx(1.0)
    assert bd.abs_rel == pytest.approx((2 * 1.0 + 0.5 + 0 + 1.0) / 6)
    assert sum(r["abs_rel_share"] for r in bd.rows()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        eb.Breakdown(bins=(0, 4, 4))
    with pytest.raises(ValueError):
        bd.add(pred[:1], gt, groups)


def test_error_breakdown_median_scale():
    from experiments import error_breakdown as eb

    gt = np.array([[1.0, 2.0, 3.0, 0.0]])
    out = eb.median_scale(np.array([[2.0, 4.0, 6.0, 9.0]]), gt, 0.0, 80.0)
    np.testing.assert_allclose(out, [[1.0, 2.0, 3.0, 4.5]])
    with pytest.raises(ValueError, match="no ground-truth"):
        eb.median_scale(gt, np.zeros_like(gt), 0.0, 80.0)


def test_loss_basin_summary_finds_plateaus_and_false_minima():
    from experiments import loss_basin as lb

    scales = lb.SCALES  # 0.5 ... 2.5 with 1.0 in the middle
    bowl = np.array([abs(np.log(s)) + 0.1 for s in scales])  # rises at every step away from the truth
    out = lb.basin_summary(bowl, scales)
    assert out["relative"][scales.index(1.0)] == pytest.approx(1.0) and out["loss_at_gt"] == pytest.approx(0.1)
    assert out["rise_far"] > 1.0 and out["rise_near"] > 1.0
    dipped = bowl.copy()
    dipped[scales.index(2.0)] = dipped[scales.index(1.7)] * 0.9  # a false minimum at 2x too far
    assert lb.basin_summary(dipped, scales)["rise_far"] == pytest.approx(0.9)
    assert lb.basin_summary(dipped, scales)["rise_near"] == pytest.approx(out["rise_near"])
    with pytest.raises(ValueError, match="s=1"):
        lb.basin_summary(np.zeros(len(scales)), scales)
    with pytest.raises(ValueError, match="increasing"):
        lb.basin_summary(bowl[:-1], scales)

    acc = lb.BasinAccumulator(scales)
    mask = np.array([[True, False], [True, True]])
    for j in range(len(scales)):
        acc.add("eq2", "cell", j, np.full((2, 2), float(j)), mask)
    np.testing.assert_allclose(acc.curve("eq2", "cell"), np.arange(len(scales), dtype=float))
    assert acc.counts[("eq2", "cell")] == 3 and acc.curve("eq2", "empty") is None
    with pytest.raises(ValueError, match="1.0"):
        lb.BasinAccumulator((0.5, 2.0))


def test_loss_basin_runs_on_a_synthetic_drive(synthetic_root, tmp_path, monkeypatch):
    from experiments import common
    from experiments import loss_basin as lb

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert lb.main(["--data", str(synthetic_root), "--every", "5", "--threads", "1"]) == 0
    out = json.loads((tmp_path / "loss_basin.json").read_text())
    assert out["frames"] == 2 and out["scales"] == list(lb.SCALES)
    curves = [c for cell in out["cells"].values() for c in cell.values()]
    assert curves and all(c["relative"][lb.SCALES.index(1.0)] == pytest.approx(1.0) for c in curves)
    # the true depth beats half of it wherever the loss is the photometric one
    assert all(c["relative"][0] > 1.0 for cell in out["cells"].values() for k, c in cell.items() if k == "eq2")
