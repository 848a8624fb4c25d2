"""training/budgeted.py: overrides, combined drive roots and the reuse of finished budgeted runs (no training)."""
from __future__ import annotations

import json

import pytest

from training import budgeted as tb


def test_sets_and_data_overrides():
    assert tb.sets(["a=1", "b.c=x"]) == ["--set", "a=1", "--set", "b.c=x"]
    assert tb.data_overrides(False) == ["data.synthetic.cache_dir=runs/bench/synthetic_cache"]
    assert tb.data_overrides(False, 30, 7)[1:] == ["train.max_steps=7", "data.synthetic.frames=30"]
    quick = tb.data_overrides(True)
    assert "data.synthetic.render_width=320" in quick
    assert "data.synthetic.cache_dir=runs/bench/quick/synthetic_cache" in quick


def test_combined_root_links_drives(tmp_path):
    for seed in (1, 2):
        d = tmp_path / f"r{seed}" / "2030_01_01"
        (d / f"2030_01_01_drive_{seed:04d}_sync").mkdir(parents=True)
        (d / "calib_cam_to_cam.txt").write_text("x")
    out = tb.combined_root([tmp_path / "r1", tmp_path / "r2"], tmp_path / "all")
    names = sorted(p.name for p in (out / "2030_01_01").iterdir())
    assert names == ["2030_01_01_drive_0001_sync", "2030_01_01_drive_0002_sync", "calib_cam_to_cam.txt"]
    assert sorted(p.name for p in out.glob("*/*_drive_*_sync") if p.is_dir()) == names[:2]
    tb.combined_root([tmp_path / "r1"], tmp_path / "all")  # rebuilt, the linked drives untouched
    assert (tmp_path / "r2" / "2030_01_01" / "2030_01_01_drive_0002_sync").is_dir()


def test_finished_run_is_reused_only_with_the_same_effective_config(tmp_path):
    cfg = tb.CONFIGS / "synthetic_mobilenetv2.yaml"
    over = tb.data_overrides(True)
    fp = tb.config_fingerprint(cfg, over)
    assert fp == tb.config_fingerprint(cfg, over + ["train.name=other", "train.max_minutes=3", "two_stage.margin=2"])
    assert fp != tb.config_fingerprint(cfg, over + ["loss.smoothness_weight=0.01"])
    assert fp != tb.config_fingerprint(tb.CONFIGS / "synthetic_resnet18.yaml", over)
    run = tmp_path / "run"
    run.mkdir()
    marker = {"budget_min": 20.0, "event": "stop", "overrides": over, "config_sha256": fp}
    (run / tb.DONE_MARKER).write_text(json.dumps(marker))
    assert tb.run_training(cfg, run, 20.0, over)["config_sha256"] == fp  # reused: no training started
    (run / tb.DONE_MARKER).write_text(json.dumps({**marker, "config_sha256": "0" * 64}))  # the YAML changed since
    with pytest.raises(SystemExit, match="another effective config"):
        tb.run_training(cfg, run, 20.0, over)
