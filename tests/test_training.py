"""Training and evaluation CLIs on a tiny synthetic KITTI-format drive (64x192, a few steps).

Covers: checkpoints (weights_only, embedded config), --set overrides, budgets, NaN skipping,
exact resume after SIGKILL, 2-process DDP (gloo), the evaluate CLI, synthetic drive caching,
and the acceptance check that ground-truth depth + pose explain the frames better than the
untrained networks while gradients reach both networks.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from semdepth_core.checkpoint import load_checkpoint
from semdepth_core.config import ConfigError, LossConfig, config_from_dict, load_config
from semdepth_core.paths import REPO_ROOT

DATE = "2030_01_01"
DRIVE = f"{DATE}_drive_0007_sync"  # the conftest drive (seed 7, 12 frames, 320x96)
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """2 shared cores: a single intra-op thread is several times faster than two under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return env


@pytest.fixture(scope="module")
def config_file(synthetic_root, tmp_path_factory) -> Path:
    """A tiny training config on the conftest drive, validated on two of its frames."""
    d = tmp_path_factory.mktemp("cfg")
    split = d / "val.txt"
    split.write_text(f"{DATE}/{DRIVE} 4 l\n{DATE}/{DRIVE} 8 l\n")
    cfg = {
        "data": {"kind": "kitti", "root": str(synthetic_root), "val_split": str(split), "height": 64,
                 "width": 192, "batch_size": 2, "num_workers": 0},
        "model": {"depth_net": "mobilenetv2"},
        "optim": {"step_epochs": 2},
        "train": {"name": "tiny", "out_dir": str(d / "runs"), "epochs": 3, "steps_per_epoch": 3,
                  "tensorboard": False, "seed": 3},
    }
    path = d / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(argv: list[str]) -> int:
    from training.train import main

    return main(argv)


def _log_steps(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in rows if "total" in r}


@pytest.fixture(scope="module")
def short_run(config_file, tmp_path_factory) -> Path:
    """3 steps (one epoch, with validation) and TensorBoard summaries; returns the run directory."""
    out = tmp_path_factory.mktemp("short")
    rc = _train(["--config", str(config_file), "--set", "optim.depth_lr=1e-4", "--set", "train.max_steps=3",
                 "--set", f"train.out_dir={out}", "--set", "train.tensorboard=true",
                 "--set", "train.image_every=2", "--device", "cpu"])
    assert rc == 0
    return out / "tiny"


# ----------------------------------------------------------------------------- checkpoints, config

def test_short_run_writes_weights_only_checkpoint_with_config(short_run):
    ckpt = load_checkpoint(short_run / "last.ckpt")  # weights_only=True inside
    torch.load(short_run / "last.ckpt", weights_only=True)  # and loadable directly that way
    cfg = config_from_dict(ckpt["config"])
    assert cfg.optim.depth_lr == 1e-4, "--set override must reach the embedded config"
    assert cfg.train.max_steps == 3 and cfg.model.depth_net == "mobilenetv2"
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 0
    for key in ("depth_model", "pose_net", "optimizer", "scheduler", "rng"):
        assert key in ckpt, key
    lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
    assert lrs == [1e-4, 5e-4], "two Adam groups: depth and pose learning rates"
    assert isinstance(ckpt["rng"]["numpy"][1], list) and isinstance(ckpt["rng"]["python"][1], list)

    steps = _log_steps(short_run)
    assert sorted(steps) == [1, 2, 3]
    assert all(0 < steps[s]["total"] < 1 and steps[s]["images_per_s"] > 0 for s in steps)
    # the wall-clock budget is for the whole run: elapsed time is logged and checkpointed
    assert 0 < steps[1]["elapsed_s"] <= steps[2]["elapsed_s"] <= steps[3]["elapsed_s"] <= ckpt["elapsed_s"]
    # validation ran after the epoch and produced best.ckpt with both metric flavours
    val = [json.loads(x) for x in (short_run / "log.jsonl").read_text().splitlines() if '"val"' in x]
    assert len(val) == 1 and 0 < val[0]["val"]["abs_rel"] < 10 and "abs_rel" in val[0]["val"]["unscaled"]
    best = load_checkpoint(short_run / "best.ckpt")
    assert best["best_abs_rel"] == pytest.approx(val[0]["val"]["abs_rel"])
    assert any((short_run / "tb").glob("events.out.tfevents.*")), "TensorBoard event file missing"


def test_bad_override_key_is_a_config_error_naming_the_key(config_file, capsys):
    with pytest.raises(ConfigError, match="train.bogus"):
        load_config(config_file, ["train.bogus=1"])
    assert _train(["--config", str(config_file), "--set", "train.bogus=1"]) == 2
    assert "train.bogus" in capsys.readouterr().err
    assert _train(["--config", str(config_file), "--set", "optim.depth_lr=fast"]) == 2
    assert "optim.depth_lr" in capsys.readouterr().err
    assert _train(["--config", str(config_file), "--set", "data.root=/nonexistent/kitti"]) == 2
    assert "data.root" in capsys.readouterr().err


def test_unwritable_output_dir_fails_early_with_its_path(config_file, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the output directory should be")
    with pytest.raises(SystemExit, match="not writable"):
        _train(["--config", str(config_file), "--set", f"train.out_dir={blocker / 'runs'}"])


def test_max_minutes_budget_stops_cleanly_with_a_checkpoint(config_file, tmp_path):
    assert _train(["--config", str(config_file), "--set", f"train.out_dir={tmp_path}",
                   "--set", "train.max_minutes=1e-6", "--set", "loss.velocity_weight=0.1"]) == 0
    ckpt = load_checkpoint(tmp_path / "tiny" / "last.ckpt")
    assert ckpt["global_step"] == 1
    step = _log_steps(tmp_path / "tiny")[1]
    assert step["velocity"] > 0, "velocity supervision must be active with loss.velocity_weight=0.1"
    assert step["total"] == pytest.approx(step["photometric"] + 1e-3 * step["smoothness"] + 0.1 * step["velocity"],
                                          rel=1e-5)
    events = [json.loads(x) for x in (tmp_path / "tiny" / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stop" and "max_minutes" in events[-1]["message"]


def test_non_finite_loss_skips_the_optimizer_step(config_file, tmp_path, monkeypatch):
    import training.train as T

    class NanOnSecondCall(T.SfmLoss):
        calls = 0

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            NanOnSecondCall.calls += 1
            if NanOnSecondCall.calls == 2:
                out["total"] = out["total"] * float("nan")
            return out

    monkeypatch.setattr(T, "SfmLoss", NanOnSecondCall)
    assert _train(["--config", str(config_file), "--set", f"train.out_dir={tmp_path}",
                   "--set", "train.max_steps=3"]) == 0
    steps = _log_steps(tmp_path / "tiny")
    assert steps[2].get("skipped") is True and steps[2]["total"] is None
    assert not steps[1].get("skipped") and not steps[3].get("skipped")
    ckpt = load_checkpoint(tmp_path / "tiny" / "last.ckpt")
    assert ckpt["skipped_steps"] == 1
    adam_steps = {float(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert adam_steps == {2.0}, "3 batches, one skipped: Adam must have stepped twice"


# ----------------------------------------------------------------------------- exact resume

def _cli(config_file: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.train", "--config", str(config_file), "--device", "cpu",
            "--set", f"train.out_dir={out}", "--set", f"train.name={name}",
            "--set", "train.checkpoint_every_steps=2", "--set", "optim.step_epochs=1", *extra]


def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(config_file, tmp_path):
    steps = 5  # crosses an epoch end (3 steps) with validation and a LR-scheduler step
    ref = subprocess.run(_cli(config_file, tmp_path, "ref", "--set", f"train.max_steps={steps}"),
                         cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert ref.returncode == 0, ref.stderr[-2000:]

    ckpt_path = tmp_path / "killed" / "last.ckpt"
    proc = subprocess.Popen(_cli(config_file, tmp_path, "killed", "--set", "train.max_steps=1000",
                                 "--set", "train.epochs=50"),
                            cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not ckpt_path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt_path.exists(), "the run never wrote a mid-run checkpoint"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = load_checkpoint(ckpt_path)["global_step"]
    assert 2 <= killed_at < steps, f"killed too late (checkpoint at step {killed_at})"

    resumed = subprocess.run(_cli(config_file, tmp_path, "killed", "--set", f"train.max_steps={steps}",
                                  "--resume", "auto"),
                             cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {killed_at}" in resumed.stdout

    a, b = _log_steps(tmp_path / "ref"), _log_steps(tmp_path / "killed")
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    after = range(killed_at + 1, steps + 1)
    keys = ("total", "photometric", "smoothness", "automask_fraction")
    worst = max(abs(a[s][k] - b[s][k]) for s in after for k in keys)
    print(f"resumed at step {killed_at}: max |difference| over steps {list(after)} = {worst:.3g}")
    assert worst <= 1e-5
    assert all(b[s]["lr_depth"] == a[s]["lr_depth"] for s in after)
    assert a[steps]["lr_depth"] == pytest.approx(a[1]["lr_depth"] / 2), "StepLR halves after step_epochs=1"


# ----------------------------------------------------------------------------- DDP

def test_two_process_ddp_gloo_run_completes(config_file, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.train",
           "--config", str(config_file), "--device", "cpu", "--set", f"train.out_dir={tmp_path}",
           "--set", "train.max_steps=2", "--set", "data.batch_size=1"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "tiny" / "last.ckpt")
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == 2
    assert sorted(_log_steps(tmp_path / "tiny")) == [1, 2], "only rank 0 logs, once per step"


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_cli_writes_kitti_metrics_json(short_run, synthetic_root, tmp_path, capsys):
    from training.evaluate import main

    out = tmp_path / "metrics.json"
    assert main(["--checkpoint", str(short_run / "last.ckpt"), "--data", str(synthetic_root),
                 "--flip", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    for key in METRIC_KEYS:
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert 0 < metrics["a1"] <= 1 and metrics["abs_rel"] > 0
    assert metrics["num_images"] == 12 and metrics["ratio_spread"]["std"] >= 0
    assert metrics["per_class"] and metrics["label_source"] == "ground truth"
    assert "abs_rel" in capsys.readouterr().out

    unscaled = tmp_path / "unscaled.json"
    assert main(["--checkpoint", str(short_run / "last.ckpt"), "--data", str(synthetic_root),
                 "--no-median-scaling", "--out", str(unscaled), "--height", "96", "--width", "320"]) == 0
    assert json.loads(unscaled.read_text())["median_scaling"] is False


def test_evaluate_rejects_a_checkpoint_of_another_architecture(short_run, synthetic_root, tmp_path, capsys):
    from semdepth_core.checkpoint import save_checkpoint
    from training.evaluate import main

    ckpt = load_checkpoint(short_run / "last.ckpt")
    ckpt["config"]["model"]["depth_net"] = "resnet18"  # config says ResNet, weights are MobileNetV2
    bad = tmp_path / "bad.ckpt"
    save_checkpoint(bad, ckpt)
    assert main(["--checkpoint", str(bad), "--data", str(synthetic_root)]) == 2
    assert "does not match the configured architecture" in capsys.readouterr().err


def test_flip_blend_uses_the_mirrored_prediction_at_the_left_border():
    from training.evaluate import flip_blend

    a = torch.full((1, 1, 4, 100), 1.0)
    b = torch.full((1, 1, 4, 100), 3.0)
    out = flip_blend(a, b)[0, 0, 0]
    assert out[0] == pytest.approx(3.0)  # left border: the prediction made on the mirrored image
    assert out[-1] == pytest.approx(1.0)  # right border: the direct prediction
    assert out[50] == pytest.approx(2.0)  # centre: the mean


# ----------------------------------------------------------------------------- synthetic data kind

def test_synthetic_drives_are_generated_once_and_reused(tmp_path):
    from training.data import build_datasets

    cfg_overrides = [
        "data.kind=synthetic", f"data.synthetic.cache_dir={tmp_path}", "data.synthetic.frames=5",
        "data.synthetic.render_width=320", "data.synthetic.render_height=96",
        "data.synthetic.train_seeds=[3]", "data.synthetic.val_seeds=[5]", "data.height=64", "data.width=192",
    ]
    cfg = load_config(None, cfg_overrides)
    train, val = build_datasets(cfg, rank=0, world=1)
    assert len(train) == 3 and len(val) == 5  # 5 frames: 3 with both neighbours; all 5 for validation
    markers = sorted(tmp_path.glob("*/.complete"))
    assert len(markers) == 2
    stamps = [m.stat().st_mtime_ns for m in markers]
    build_datasets(cfg, rank=0, world=1)
    assert [m.stat().st_mtime_ns for m in markers] == stamps, "existing drives must be reused"
    item = val[0]
    assert item["depth_gt"].shape == (1, 96, 320)

    # data.train_split selects frames of the synthetic drives (two-stage training, §4.3)
    drive = next(tmp_path.glob("seed3_*/*/*_sync"))
    split = tmp_path / "kept.txt"
    split.write_text(f"{drive.parent.name}/{drive.name} 1 l\n{drive.parent.name}/{drive.name} 3 l\n")
    kept, _ = build_datasets(load_config(None, cfg_overrides + [f"data.train_split={split}"]), rank=0, world=1)
    assert len(kept) == 2
    split.write_text(f"{drive.parent.name}/2030_01_01_drive_0999_sync 1 l\n")
    with pytest.raises(ConfigError, match="train_split"):
        build_datasets(load_config(None, cfg_overrides + [f"data.train_split={split}"]), rank=0, world=1)
    bad = load_config(None, ["data.kind=synthetic", f"data.synthetic.cache_dir={tmp_path}",
                             "data.synthetic.train_seeds=[3]", "data.synthetic.val_seeds=[3]"])
    with pytest.raises(ConfigError, match="val_seeds"):
        build_datasets(bad, rank=0, world=1)


# ----------------------------------------------------------------------------- acceptance

def test_ground_truth_geometry_beats_the_initial_prediction_and_gradients_reach_both_nets(synthetic_root):
    """On a synthetic drive, Eq. 2 with GT depth + GT pose is lower than with the untrained networks."""
    from semdepth_core.config import ModelConfig
    from semdepth_core.data.dataset import KittiDataset, collate
    from semdepth_core.geometry.se3 import mat_to_pose_vec
    from semdepth_core.losses.sfm import SfmLoss
    from semdepth_core.nets.model import build_models

    ds = KittiDataset(synthetic_root, height=96, width=320, context=[-1, 1], augment=None, with_gt=True,
                      training=False)
    batch = collate([ds[2], ds[6]])
    assert batch["depth_gt"].shape == (2, 1, 96, 320)  # dense GT at the network size
    gt = batch["depth_gt"]  # [B,1,H,W], 0 = no return (sky): infinitely far
    gt_inv = torch.where(gt > 0, 1.0 / gt.clamp(min=1e-3), torch.zeros_like(gt))
    gt_pose = mat_to_pose_vec(batch["pose_gt"])  # [B,N,6] of T_ctx_tgt
    loss_fn = SfmLoss(LossConfig(num_scales=1))
    with_gt = loss_fn(batch, [gt_inv], gt_pose, batch["K"])

    torch.manual_seed(0)
    depth_net, pose_net = build_models(ModelConfig(depth_net="resnet18"))
    inv_depths = depth_net(batch["rgb"])["inv_depths"]
    pose = pose_net(batch["rgb"], [batch["rgb_context"][:, j] for j in range(2)])
    initial = loss_fn(batch, inv_depths, pose, batch["K"])
    assert with_gt["photometric"].item() < 0.8 * initial["photometric"].item(), (
        with_gt["photometric"].item(), initial["photometric"].item())

    initial["total"].backward()
    depth_grads = [p.grad.abs().sum().item() for p in depth_net.depth_parameters() if p.grad is not None]
    pose_grads = [p.grad.abs().sum().item() for p in pose_net.parameters() if p.grad is not None]
    assert depth_grads and sum(depth_grads) > 0, "no gradient reached the depth network"
    assert pose_grads and sum(pose_grads) > 0, "no gradient reached the pose network"


def test_collapse_detector_warns_once(capsys):
    """A constant depth map (smoothness exactly 0) for COLLAPSE_STEPS steps is reported once."""
    from training.train import Trainer

    t = Trainer.__new__(Trainer)  # only the detector's state is needed
    t._flat_steps, t.is_main, t.global_step = 0, True, 0
    flagged = []
    for step in range(1, 2 * Trainer.COLLAPSE_STEPS + 1):
        t.global_step = step
        rec = {}
        t._check_collapse({"smoothness": 0.0}, rec)
        flagged.append(rec.get("collapse_warning", False))
    assert flagged.count(True) == 1 and flagged.index(True) == Trainer.COLLAPSE_STEPS - 1
    assert "collapsed" in capsys.readouterr().err
    rec = {}
    t._check_collapse({"smoothness": 0.01}, rec)
    assert t._flat_steps == 0 and not rec


def test_init_from_starts_a_new_run_from_another_runs_weights(short_run, config_file, tmp_path, capsys):
    """train.init_from (fine-tuning, e.g. CS+K): matching tensors copied, new layers initialised, fresh schedule."""
    from semdepth_core.checkpoint import load_matching
    from semdepth_core.config import load_config
    from semdepth_core.nets.model import build_models

    src = load_checkpoint(short_run / "last.ckpt")
    guided = load_config(config_file, ["model.guidance=true", "model.semantic.enabled=true",
                                       "model.semantic.arch=espnet"]).model
    depth, _ = build_models(guided, 2)
    report = load_matching(depth, src["depth_model"])
    assert report["copied"] and any("pac" in k.lower() or "guid" in k.lower() for k in report["new"])
    for k in report["copied"]:
        torch.testing.assert_close(depth.state_dict()[k], src["depth_model"][k].to(depth.state_dict()[k].dtype))
    out = tmp_path / "ft"
    rc = _train(["--config", str(config_file), "--set", f"train.init_from={short_run / 'last.ckpt'}",
                 "--set", "train.max_steps=1", "--set", f"train.out_dir={out}", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "depth_model: " in text and " 0 new" in text  # same architecture: everything copied
    ckpt = load_checkpoint(out / "tiny" / "last.ckpt")
    assert ckpt["global_step"] == 1  # a new run, not a resumed one
    rc = _train(["--config", str(config_file), "--set", f"train.init_from={short_run / 'last.ckpt'}",
                 "--set", "model.depth_net=resnet18", "--set", f"train.out_dir={out}2", "--device", "cpu"])
    assert rc != 0 and "shares no depth-network weights" in capsys.readouterr().err
