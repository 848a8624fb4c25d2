"""Fast checks of the training-budget benchmark (benchmarks/train_synthetic.py): arguments, targets, curves."""
from __future__ import annotations

import json

import pytest

from benchmarks import train_synthetic as ts
from training import budgeted as tb


def test_train_synthetic_args_defaults_and_quick():
    a = ts.parse_args([])
    assert not a.quick and a.only is None and a.threads == 0
    assert ts.budget_of(a, ts.FULL_BUDGET_MIN) == 20.0
    q = ts.parse_args(["--quick", "--only", "resnet18_velocity", "--only", "mobilenetv2", "--threads", "1"])
    assert q.quick and q.only == ["resnet18_velocity", "mobilenetv2"] and q.threads == 1
    assert ts.budget_of(q, ts.FULL_BUDGET_MIN) == tb.QUICK_BUDGET_MIN
    assert ts.budget_of(ts.parse_args(["--quick", "--budget-minutes", "3"]), 20.0) == 3.0
    with pytest.raises(SystemExit):
        ts.parse_args(["--only", "resnet50"])
    with pytest.raises(SystemExit):
        ts.budget_of(ts.parse_args(["--budget-minutes", "0"]), 20.0)


def test_runs_load_with_the_quick_overrides_and_never_train_on_the_test_seeds():
    from semdepth_core.config import load_config

    for name in ts.RUNS.values():
        cfg = load_config(ts.CONFIGS / name, tb.data_overrides(True))
        assert cfg.data.synthetic.frames == tb.QUICK_FRAMES and cfg.data.width == 320 and cfg.data.height == 96
        assert not set(tb.TEST_SEEDS) & (set(cfg.data.synthetic.train_seeds) | set(cfg.data.synthetic.val_seeds))


def test_read_log_reconstructs_wall_time_and_curve(tmp_path):
    (tmp_path / "config.yaml").write_text("data:\n  batch_size: 4\n")
    lines = [{"step": i, "epoch": 0, "total": 1.0 / i, "images_per_s": 2.0} for i in range(1, 5)]
    lines.append({"step": 4, "epoch": 1, "val": {"abs_rel": 0.3, "a1": 0.5, "unscaled": {"abs_rel": 0.9}}})
    lines.append({"step": 4, "event": "stop", "message": "stopped"})
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = tb.read_log(tmp_path)
    assert [s["wall_s"] for s in log["steps"]] == [2.0, 4.0, 6.0, 8.0]
    assert log["val"][0]["abs_rel"] == 0.3 and log["val"][0]["wall_s"] == 8.0
    assert log["events"][-1]["event"] == "stop"
    curve = ts.curve_summary(log, points=2)
    assert [p["step"] for p in curve["steps"]] == [2, 4]
    assert curve["steps"][0]["loss"] == pytest.approx((1 + 0.5) / 2)
    stats = tb.run_stats(tmp_path)
    assert stats["steps"] == 4 and stats["train_min"] == pytest.approx(8 / 60) and stats["images_per_s"] == 2.0
    assert tb.read_log(tmp_path / "missing") == {"steps": [], "val": [], "events": []}


def test_targets():
    ok = ts.targets("resnet18_velocity", {"abs_rel": 0.09}, {"abs_rel": 0.12, "ratio_spread": {"median": 1.04}})
    assert all(ok.values()) and len(ok) == 3
    bad = ts.targets("resnet18_velocity", {"abs_rel": 0.09}, {"abs_rel": 0.12, "ratio_spread": {"median": 0.9}})
    assert not bad["median_ratio_in_1+-0.05"]
    assert list(ts.targets("resnet18", {"abs_rel": 0.2}, {"abs_rel": 0.5}).values()) == [False]
