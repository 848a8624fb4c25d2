"""Fast checks of the synthetic training benchmarks: imports, argument parsing and pure helpers (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import guided_vs_baseline as gvb
from benchmarks import train_synthetic as ts
from benchmarks import two_stage_synthetic as tss


# ---------------------------------------------------------------- argument parsing

def test_train_synthetic_args_defaults_and_quick():
    a = ts.parse_args([])
    assert not a.quick and a.only is None and a.threads == 0
    assert ts.budget_of(a, ts.FULL_BUDGET_MIN) == 20.0
    q = ts.parse_args(["--quick", "--only", "resnet18_velocity", "--only", "mobilenetv2", "--threads", "1"])
    assert q.quick and q.only == ["resnet18_velocity", "mobilenetv2"] and q.threads == 1
    assert ts.budget_of(q, ts.FULL_BUDGET_MIN) == ts.QUICK_BUDGET_MIN
    assert ts.budget_of(ts.parse_args(["--quick", "--budget-minutes", "3"]), 20.0) == 3.0
    with pytest.raises(SystemExit):
        ts.parse_args(["--only", "resnet50"])
    with pytest.raises(SystemExit):
        ts.budget_of(ts.parse_args(["--budget-minutes", "0"]), 20.0)


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
    assert tss.budget_of(tss.parse_args(["--quick"]), tss.FULL_BUDGET_MIN) == ts.QUICK_BUDGET_MIN


def test_configs_exist_and_load_with_bench_overrides():
    from semdepth_core.config import load_config

    for name in ts.RUNS.values():
        cfg = load_config(ts.CONFIGS / name, ts.data_overrides(True))
        assert cfg.data.synthetic.frames == ts.QUICK_FRAMES and cfg.data.width == 320 and cfg.data.height == 96
        assert not set(ts.TEST_SEEDS) & (set(cfg.data.synthetic.train_seeds) | set(cfg.data.synthetic.val_seeds))
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
    # held-out seeds of all three benchmarks are disjoint from training/validation and semantic drives
    used = {s for seeds, _ in tss.DRIVE_SETS.values() for s in seeds} | set(tss.VAL_SEEDS)
    used |= set(gvb.SEMANTIC_TRAIN_SEEDS) | set(gvb.SEMANTIC_VAL_SEEDS)
    assert not used & (set(ts.TEST_SEEDS) | set(tss.LEAD_TEST_SEEDS))


def test_collapse_probe_variants_load():
    from benchmarks import collapse_probe as cp
    from semdepth_core.config import load_config

    for name, (config, extra) in cp.VARIANTS.items():
        extra = [e.replace("{semantic}", "") for e in extra]
        cfg = load_config(ts.CONFIGS / config, ts.data_overrides(True) + extra)
        if name.startswith("velocity") and "depth_scale" not in name:  # the blog's form on ||t||
            assert not cfg.loss.depth_normalization and cfg.loss.velocity_weight > 0, name
    for name in ("synthetic_resnet18.yaml", "synthetic_resnet18_velocity.yaml", "synthetic_mobilenetv2_velocity.yaml"):
        cfg = load_config(ts.CONFIGS / name)
        assert cfg.loss.depth_normalization and cfg.loss.scale_anchor_weight > 0, name
        assert cfg.model.init_depth == cfg.loss.scale_anchor_depth, name


def test_sets_and_data_overrides():
    assert ts.sets(["a=1", "b.c=x"]) == ["--set", "a=1", "--set", "b.c=x"]
    assert ts.data_overrides(False) == ["data.synthetic.cache_dir=runs/bench/synthetic_cache"]
    assert ts.data_overrides(False, 30, 7)[1:] == ["train.max_steps=7", "data.synthetic.frames=30"]
    quick = ts.data_overrides(True)
    assert "data.synthetic.render_width=320" in quick
    assert "data.synthetic.cache_dir=runs/bench/quick/synthetic_cache" in quick


# ---------------------------------------------------------------- boundary band

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


# ---------------------------------------------------------------- log parsing / curve

def test_read_log_reconstructs_wall_time_and_curve(tmp_path):
    (tmp_path / "config.yaml").write_text("data:\n  batch_size: 4\n")
    lines = [{"step": i, "epoch": 0, "total": 1.0 / i, "images_per_s": 2.0} for i in range(1, 5)]
    lines.append({"step": 4, "epoch": 1, "val": {"abs_rel": 0.3, "a1": 0.5, "unscaled": {"abs_rel": 0.9}}})
    lines.append({"step": 4, "event": "stop", "message": "stopped"})
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = ts.read_log(tmp_path)
    assert [s["wall_s"] for s in log["steps"]] == [2.0, 4.0, 6.0, 8.0]
    assert log["val"][0]["abs_rel"] == 0.3 and log["val"][0]["wall_s"] == 8.0
    assert log["events"][-1]["event"] == "stop"
    curve = ts.curve_summary(log, points=2)
    assert [p["step"] for p in curve["steps"]] == [2, 4]
    assert curve["steps"][0]["loss"] == pytest.approx((1 + 0.5) / 2)
    stats = ts.run_stats(tmp_path)
    assert stats["steps"] == 4 and stats["train_min"] == pytest.approx(8 / 60) and stats["images_per_s"] == 2.0
    assert ts.read_log(tmp_path / "missing") == {"steps": [], "val": [], "events": []}


def test_targets():
    ok = ts.targets("resnet18_velocity", {"abs_rel": 0.09}, {"abs_rel": 0.12, "ratio_spread": {"median": 1.04}})
    assert all(ok.values()) and len(ok) == 3
    bad = ts.targets("resnet18_velocity", {"abs_rel": 0.09}, {"abs_rel": 0.12, "ratio_spread": {"median": 0.9}})
    assert not bad["median_ratio_in_1+-0.05"]
    assert list(ts.targets("resnet18", {"abs_rel": 0.2}, {"abs_rel": 0.5}).values()) == [False]


def test_combined_root_links_drives(tmp_path):
    for seed in (1, 2):
        d = tmp_path / f"r{seed}" / "2030_01_01"
        (d / f"2030_01_01_drive_{seed:04d}_sync").mkdir(parents=True)
        (d / "calib_cam_to_cam.txt").write_text("x")
    out = ts.combined_root([tmp_path / "r1", tmp_path / "r2"], tmp_path / "all")
    names = sorted(p.name for p in (out / "2030_01_01").iterdir())
    assert names == ["2030_01_01_drive_0001_sync", "2030_01_01_drive_0002_sync", "calib_cam_to_cam.txt"]
    assert sorted(p.name for p in out.glob("*/*_drive_*_sync") if p.is_dir()) == names[:2]
    ts.combined_root([tmp_path / "r1"], tmp_path / "all")  # rebuilt, the linked drives untouched
    assert (tmp_path / "r2" / "2030_01_01" / "2030_01_01_drive_0002_sync").is_dir()


def test_every_benchmark_runs_as_a_script():
    """`python benchmarks/NAME.py --help` works from the repository root (how the README runs them)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    for script in sorted((root / "benchmarks").glob("*.py")):
        if script.name in ("common.py", "__init__.py"):
            continue
        r = subprocess.run([sys.executable, str(script), "--help"], cwd=root, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"{script.name}: {r.stderr[-1500:]}"


def test_pose_oracle_arms_and_pose_errors():
    import math

    import torch

    from benchmarks import pose_oracle as po
    from semdepth_core.config import load_config
    from semdepth_core.geometry.se3 import mat_to_pose_vec, pose_vec_to_mat

    for name, (config, extra) in po.ARMS.items():
        cfg = load_config(ts.CONFIGS / config, ts.data_overrides(True) + extra)
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
    from benchmarks import error_breakdown as eb

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
    from benchmarks import error_breakdown as eb

    gt = np.array([[1.0, 2.0, 3.0, 0.0]])
    out = eb.median_scale(np.array([[2.0, 4.0, 6.0, 9.0]]), gt, 0.0, 80.0)
    np.testing.assert_allclose(out, [[1.0, 2.0, 3.0, 4.5]])
    with pytest.raises(ValueError, match="no ground-truth"):
        eb.median_scale(gt, np.zeros_like(gt), 0.0, 80.0)


def test_loss_basin_summary_finds_plateaus_and_false_minima():
    from benchmarks import loss_basin as lb

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
    from benchmarks import common
    from benchmarks import loss_basin as lb

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert lb.main(["--data", str(synthetic_root), "--every", "5", "--threads", "1"]) == 0
    out = json.loads((tmp_path / "loss_basin.json").read_text())
    assert out["frames"] == 2 and out["scales"] == list(lb.SCALES)
    curves = [c for cell in out["cells"].values() for c in cell.values()]
    assert curves and all(c["relative"][lb.SCALES.index(1.0)] == pytest.approx(1.0) for c in curves)
    # the true depth beats half of it wherever the loss is the photometric one
    assert all(c["relative"][0] > 1.0 for cell in out["cells"].values() for k, c in cell.items() if k == "eq2")


def test_finished_run_is_reused_only_with_the_same_effective_config(tmp_path):
    cfg = ts.CONFIGS / "synthetic_mobilenetv2.yaml"
    over = ts.data_overrides(True)
    fp = ts.config_fingerprint(cfg, over)
    assert fp == ts.config_fingerprint(cfg, over + ["train.name=other", "train.max_minutes=3", "two_stage.margin=2"])
    assert fp != ts.config_fingerprint(cfg, over + ["loss.smoothness_weight=0.01"])
    assert fp != ts.config_fingerprint(ts.CONFIGS / "synthetic_resnet18.yaml", over)
    run = tmp_path / "run"
    run.mkdir()
    marker = {"budget_min": 20.0, "event": "stop", "overrides": over, "config_sha256": fp}
    (run / ts.DONE_MARKER).write_text(json.dumps(marker))
    assert ts.run_training(cfg, run, 20.0, over)["config_sha256"] == fp  # reused: no training started
    (run / ts.DONE_MARKER).write_text(json.dumps({**marker, "config_sha256": "0" * 64}))  # the YAML changed since
    with pytest.raises(SystemExit, match="another effective config"):
        ts.run_training(cfg, run, 20.0, over)
