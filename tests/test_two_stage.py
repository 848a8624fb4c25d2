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


def _tiny_two_stage_overrides(tmp_path) -> list[str]:
    return ["data.kind=synthetic", f"data.synthetic.cache_dir={tmp_path / 'drives'}", "data.synthetic.frames=6",
            "data.synthetic.render_width=320", "data.synthetic.render_height=96",
            "data.synthetic.train_seeds=[3]", "data.synthetic.val_seeds=[5]", "data.height=64", "data.width=192",
            "data.batch_size=2", "model.depth_net=mobilenetv2", "model.pretrained=", "model.pose_encoder=basic",
            "model.pose_pretrained=", "train.max_steps=2", f"train.out_dir={tmp_path / 'runs'}",
            "train.name=ts", "train.tensorboard=false"]


def test_two_stage_pipeline_runs_resumes_and_refuses_an_empty_split(tmp_path, capsys, monkeypatch):
    from training import two_stage

    config = tmp_path / "tiny.yaml"
    config.write_text("data:\n  kind: synthetic\n")
    sets = ["--config", str(config)] + [a for o in _tiny_two_stage_overrides(tmp_path) for a in ("--set", o)]
    # margin 100 m: nothing lies that far below the road, so every image is kept
    assert two_stage.main([*sets, "--set", "two_stage.margin=100"]) == 0
    runs = tmp_path / "runs"
    state = json.loads((runs / "ts_two_stage.json").read_text())
    assert state["done"] == ["stage1", "filter", "stage2"]
    report = json.loads((runs / "ts_filter" / "report.json").read_text())
    assert report["images"] == 4 and report["dropped"] == 0  # 6 frames, 4 with both neighbours
    assert len((runs / "ts_filter" / "kept.txt").read_text().split("\n")) >= 4
    stage2 = runs / "ts_stage2" / "last.ckpt"
    stamp = stage2.stat().st_mtime_ns
    assert two_stage.main([*sets, "--set", "two_stage.margin=100"]) == 0  # resumed: all done
    assert stage2.stat().st_mtime_ns == stamp

    # a filter that drops everything (every frame "has" a hole) stops before stage 2 with the reason
    from training import filter_dataset

    monkeypatch.setattr(filter_dataset, "check_frame",
                        lambda depth, K, tcfg, metric: (5000, 1.0, True, np.zeros(depth.shape, bool)))
    sets2 = ["--config", str(config)] + [a for o in _tiny_two_stage_overrides(tmp_path) + ["train.name=all_dropped"]
                                         for a in ("--set", o)]
    capsys.readouterr()
    assert two_stage.main(sets2) == 2
    err = capsys.readouterr().err
    assert "dropped all 4 training images (median 5000 pixels" in err and "two_stage.margin" in err
    assert not (runs / "all_dropped_stage2").exists()
