"""`make demo`'s pipeline on a short synthetic drive, then on the real held-out KITTI drive: generator ->
bag -> real depth_node process over DDS -> collector -> strips, PLY, per-class chart, summary (with the
committed default weights), and the README picture of a real frame above a synthetic one."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np

from semdepth_core.paths import REPO_ROOT
from semdepth_core.viz import read_ply
from semdepth_ros.demo import DEFAULT_CHECKPOINT


def test_demo_pipeline_on_a_short_drive(tmp_path):
    out = tmp_path / "demo_output"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(120, 220)),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "semdepth_ros.demo", "--frames", "6", "--out", str(out),
                        "--checkpoint", str(DEFAULT_CHECKPOINT), "--backend", "torch", "--rate", "0.5",
                        "--seed", "77"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "semdepth demo summary" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= summary["frames_with_depth"] <= summary["frames_in_drive"] == 6
    for key in ("abs_rel", "a1", "rmse"):
        assert np.isfinite(summary["median_scaled"][key]) and np.isfinite(summary["unscaled"][key])
    assert summary["scale_mode"] == "model" and summary["fps"] > 0  # auto: the default weights are metric
    assert {"network", "total"} <= set(summary["latency_ms"])
    strips = sorted(out.glob("strip_*.png"))
    assert strips
    cloud = read_ply(out / "cloud.ply")
    assert len(cloud) > 100 and np.isfinite(cloud["z"]).all() and (cloud["z"] > 0).all()
    assert (out / "per_class_abs_rel.png").stat().st_size > 1000
    # the real KITTI drive 0023 (LiDAR ground truth), and the combined picture
    real = json.loads((out / "kitti" / "summary.json").read_text())
    assert 1 <= real["frames_with_depth"] <= 6 and real["frames_in_drive"] == 7
    assert np.isfinite(real["median_scaled"]["abs_rel"]) and real["median_scaled"]["abs_rel"] < 0.5
    # the shipped weights publish metres on a real street, through the node (scale.mode model)
    assert real["scale_mode"] == "model" and real["unscaled"]["abs_rel"] < 0.3, real["unscaled"]
    import cv2

    pic = cv2.imread(str(out / "demo_strip.png"))
    first = cv2.imread(str(out / "kitti" / "strip_000.png"))
    assert pic is not None and pic.shape[0] > first.shape[0] * pic.shape[1] / first.shape[1]  # two strips
