"""training.train_semantic: §5.2 augmentation keeps image and label aligned; a short run on a
synthetic drive writes a checkpoint that `model.semantic.weights` loads."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from semdepth_core.config import ConfigError, SemanticConfig
from semdepth_core.nets.semantic import build_semantic_net
from training.train_semantic import augment, find_pairs, load_train_config, lr_factor, main


def test_augment_keeps_pixels_and_labels_aligned():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, size=(6, 10)).astype(np.uint8)
    label = np.kron(label, np.ones((16, 16), np.uint8))  # 96x160 in 16x16 blocks
    rgb = np.stack([label * 10, 255 - label * 10, np.full_like(label, 7)], -1).astype(np.uint8)
    seen_pad = False
    for seed in range(12):
        a_rgb, a_lab = augment(rgb, label, random.Random(seed), (112, 128), (0.7, 1.3), True)
        assert a_rgb.shape == (112, 128, 3) and a_lab.shape == (112, 128)
        seen_pad |= bool((a_lab == 255).any())
        # where the label is uniform over a 5x5 neighbourhood the (bilinear) colour must encode it exactly
        win = np.lib.stride_tricks.sliding_window_view(np.pad(a_lab, 2, mode="edge"), (5, 5))
        uniform = (win.min(axis=(-1, -2)) == win.max(axis=(-1, -2))) & (a_lab != 255)
        assert uniform.sum() > 0.2 * (a_lab != 255).sum()
        assert np.array_equal(a_rgb[..., 0][uniform], a_lab[uniform] * 10)
    assert seen_pad  # scales < 112/96 need padding with the ignore label
    # a flip mirrors image and label together
    flips = [augment(rgb, label, random.Random(s), (96, 160), (1.0, 1.0), True) for s in range(6)]
    assert any(np.array_equal(lab, label[:, ::-1]) for _, lab in flips)
    assert any(np.array_equal(lab, label) for _, lab in flips)


def test_lr_schedules_and_config_errors(tmp_path):
    cfg = load_train_config(None, ["data.roots=[x]", "optim.iterations=100"])
    assert cfg.semantic.arch == "fpn_resnet18"
    assert lr_factor(0, cfg.optim) == 1.0 and lr_factor(100, cfg.optim) == 0.0
    assert 0 < lr_factor(50, cfg.optim) < 1
    step = load_train_config(None, ["data.roots=[x]", "optim.iterations=48000", "optim.schedule=step"]).optim
    assert lr_factor(35999, step) == 1.0 and lr_factor(36000, step) == pytest.approx(0.1)
    assert lr_factor(44000, step) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="data.roots"):
        load_train_config(None, [])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_train_config(None, ["data.roots=[x]", "optim.schedule=cosine"])
    with pytest.raises(FileNotFoundError, match="no image_02"):
        find_pairs([str(tmp_path)])


def test_short_run_writes_loadable_checkpoint(synthetic_root, tmp_path):
    pairs = find_pairs([str(synthetic_root)])
    assert len(pairs) == 12
    result = main(["--set", f"data.roots=[{synthetic_root}]", "--set", f"data.val_roots=[{synthetic_root}]",
                   "--set", "semantic.arch=espnet", "--set", "data.crop_height=64", "--set", "data.crop_width=128",
                   "--set", "data.batch_size=2", "--set", "optim.iterations=8", "--set", "optim.lr=0.05",
                   "--set", f"train.out_dir={tmp_path}", "--set", "train.log_every=1"])
    assert result["iterations"] == 8
    ckpt = tmp_path / "semantic" / "semantic_last.pth"
    assert ckpt.is_file() and str(ckpt) == result["checkpoint"]
    log = [json.loads(line) for line in (tmp_path / "semantic" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert log[-1]["pixel_acc"] == result["pixel_acc"] and 0 <= result["miou"] <= result["pixel_acc"] <= 1
    # the poly schedule decayed the learning rate
    lrs = [r["lr"] for r in log if "lr" in r]
    assert lrs[-1] < lrs[0]
    net = build_semantic_net(SemanticConfig(arch="espnet", weights=str(ckpt)))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["iteration"] == 8 and saved["config"]["semantic"]["arch"] == "espnet"
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved["semantic_net"][k])
