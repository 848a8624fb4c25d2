"""Config system (YAML <-> dataclasses, CLI overrides, validation) and safe, atomic checkpoints."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from semdepth_core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from semdepth_core.config import Config, ConfigError, config_to_dict, load_config, save_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_paper():
    cfg = Config()
    assert cfg.loss.ssim_alpha == 0.85
    assert cfg.loss.smoothness_weight == 1e-3
    assert cfg.optim.depth_lr == 2e-4 and cfg.optim.pose_lr == 5e-4
    assert cfg.optim.gamma == 0.5


def test_yaml_round_trip_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  depth_net: mobilenetv2\ndata:\n  height: 96\n  width: 320\n")
    cfg = load_config(p, ["loss.velocity_weight=0.1", "data.context=[-1, 1]", "train.name=abc",
                          "model.semantic.enabled=true"])
    assert cfg.model.depth_net == "mobilenetv2"
    assert (cfg.data.height, cfg.data.width) == (96, 320)
    assert cfg.loss.velocity_weight == pytest.approx(0.1)
    assert cfg.model.semantic.enabled is True
    assert cfg.train.name == "abc"
    out = tmp_path / "o.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert yaml.safe_load(out.read_text())["loss"]["velocity_weight"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.depth_nett=resnet18", "model.depth_nett"),
        ("model.depth_net=vgg", "model.depth_net"),
        ("data.height=100", "data.height"),
        ("data.batch_size=two", "data.batch_size"),
        ("loss.ssim_alpha=1.5", "loss.ssim_alpha"),
        ("train.epochs=0", "train.epochs"),
        ("model.min_depth=500", "model.min_depth"),
        ("model.guidance=true", "model.guidance"),
        ("optim.depth_lr=[1]", "optim.depth_lr"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert key in str(exc.value)


def test_bad_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["novalue"])


def _payload(scale: float = 1.0):
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(scale)
    return {"config": config_to_dict(Config()), "depth_model": lin.state_dict(), "epoch": 3}


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "a" / "last.ckpt"
    save_checkpoint(path, _payload(2.0))
    data = load_checkpoint(path)
    assert data["epoch"] == 3
    assert torch.all(data["depth_model"]["weight"] == 2.0)
    assert data["config"]["loss"]["ssim_alpha"] == 0.85
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/semdepth_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = Path("/tmp/semdepth_pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "semdepth-ckpt-v1", "config": {}, "depth_model": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        load_checkpoint(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    p = tmp_path / "garbage.ckpt"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(empty)
    good = tmp_path / "good.ckpt"
    torch.save({"format": "x"}, good)
    for n in (1, 10, 60):  # truncated zips: one clear line, whatever torch's own message is
        cut = tmp_path / f"cut{n}.ckpt"
        cut.write_bytes(good.read_bytes()[:n])
        with pytest.raises(CheckpointError, match="refused or unreadable"):
            load_checkpoint(cut)
    q = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(1)}, q)
    with pytest.raises(CheckpointError, match="not a semdepth checkpoint"):
        load_checkpoint(q)


def test_wrong_architecture_is_a_clear_error():
    small = torch.nn.Sequential(torch.nn.Linear(3, 2))
    other = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="does not match the configured architecture") as exc:
        load_state_dict_checked(small, other.state_dict(), "depth_model")
    msg = str(exc.value)
    assert "wrong shape" in msg and "unexpected" in msg


def test_sigkill_during_write_keeps_previous_checkpoint(tmp_path):
    """A writer killed mid-save leaves the previous checkpoint intact and loadable."""
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, _payload(1.0))
    script = textwrap.dedent(
        f"""
        import torch, sys
        from semdepth_core.checkpoint import atomic_write_bytes
        big = {{"format": "semdepth-ckpt-v1", "config": {{}}, "depth_model": {{"w": torch.zeros(1)}}}}
        def slow_writer(f):
            f.write(b"partial-bytes" * 1000)
            f.flush()
            print("WRITING", flush=True)
            import time; time.sleep(30)
        atomic_write_bytes({str(path)!r}, slow_writer)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = load_checkpoint(path)
    assert torch.all(data["depth_model"]["weight"] == 1.0)


def test_unwritable_directory_fails_clearly(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            target = Path("/proc/semdepth/last.ckpt")
        else:
            target = ro / "last.ckpt"
        with pytest.raises(OSError):
            save_checkpoint(target, _payload())
    finally:
        ro.chmod(0o700)
    time.sleep(0)


@pytest.mark.parametrize("path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    if path.stem.endswith("_semantic") or path.stem.startswith("semantic_"):  # training.train_semantic configs
        from training.train_semantic import load_train_config

        sem = load_train_config(str(path), ["data.roots=[placeholder]"])
        assert sem.semantic.arch in ("espnet", "fpn_resnet18", "fpn_resnet50")
        return
    cfg = load_config(path)
    assert cfg.train.name == path.stem
    if cfg.model.guidance or cfg.loss.segdepth_weight > 0:
        assert cfg.model.semantic.enabled and cfg.model.semantic.weights


def test_issue_configs_are_shipped():
    names = {p.stem for p in (REPO / "training" / "configs").glob("*.yaml")}
    for n in ["kitti_resnet18", "kitti_packnet", "synthetic_resnet18", "synthetic_mobilenetv2",
              "kitti_packnet_sg", "kitti_resnet18_sg", "synthetic_resnet18_sg", "synthetic_mobilenetv2_sg",
              "synthetic_segdepth_resnet18", "kitti_segdepth_resnet18", "synthetic_resnet18_velocity"]:
        assert n in names, n


def test_atomic_writes_get_normal_permissions(tmp_path):
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, _payload())
    old = os.umask(0o022)
    os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_full_disk_mid_write_keeps_previous_checkpoint(tmp_path):
    """ENOSPC while a checkpoint is written: the error surfaces, the previous file and no temp remain."""
    import errno

    from semdepth_core.checkpoint import atomic_write_bytes

    path = tmp_path / "last.ckpt"
    save_checkpoint(path, _payload(1.0))

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as exc:
        atomic_write_bytes(path, full_disk)
    assert exc.value.errno == errno.ENOSPC
    assert torch.all(load_checkpoint(path)["depth_model"]["weight"] == 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_training_output_on_a_full_disk_fails_early_with_the_path(tmp_path, monkeypatch):
    """The trainer probes its output directory before any work; ENOSPC there is a clear error."""
    import errno

    from training.runtime import check_writable

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(SystemExit) as exc:
        check_writable(tmp_path / "run")
    assert str(tmp_path / "run") in str(exc.value) and "not writable" in str(exc.value)
    assert "No space left" in str(exc.value)
