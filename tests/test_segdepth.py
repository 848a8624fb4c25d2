"""SegDepth auxiliary head: U-Net weight map, weighted cross-entropy, and the head really trains."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semdepth_core.data.labels import ID, IGNORE
from semdepth_core.losses.segdepth import (
    foreground_mask,
    segdepth_loss,
    unet_weight_map,
    weighted_cross_entropy,
)
from semdepth_core.nets.unet import UNet


def test_foreground_mask_from_trainids():
    labels = torch.tensor([[ID["road"], ID["car"], ID["pole"], IGNORE, ID["sky"], ID["person"]]])
    assert foreground_mask(labels).tolist() == [[0, 1, 1, IGNORE, 0, 1]]


def test_weight_map_class_balance_and_ignore():
    mask = np.zeros((20, 40), np.int64)
    mask[5:10, 5:10] = 1  # one object: no border term (needs two objects)
    mask[0, :] = IGNORE
    w = unet_weight_map(mask)
    assert np.all(w[0] == 0)
    n_fg, n_bg = 25, 20 * 40 - 40 - 25
    assert w[7, 7] == pytest.approx((n_fg + n_bg) / (2 * n_fg))
    assert w[15, 30] == pytest.approx((n_fg + n_bg) / (2 * n_bg))
    # the mean weight over valid pixels is 1 (balanced)
    assert w[1:].mean() == pytest.approx(1.0, rel=1e-5)


def test_weight_map_border_between_close_objects():
    mask = np.zeros((40, 60), np.int64)
    mask[10:30, 10:25] = 1
    mask[10:30, 28:45] = 1  # gap of 3 px between the two objects
    w = unet_weight_map(mask, w0=10.0, sigma=5.0)
    gap = w[20, 26]  # background columns 25..27 separate the objects
    far = w[2, 55]
    d1, d2 = 2.0, 2.0  # column 26: 2 px to column 24, 2 px to column 28
    expected_border = 10.0 * np.exp(-((d1 + d2) ** 2) / (2 * 25.0))
    base = w[38, 2]
    assert gap == pytest.approx(base + expected_border, rel=1e-4)
    assert gap > 5 * far
    assert w[20, 15] == w[20, 35]  # foreground pixels get no border term


def test_weighted_ce_reduces_to_plain_ce_with_uniform_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    ours = weighted_cross_entropy(logits, target, torch.ones(2, 8, 8))
    assert ours.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    target[0, 0, 0] = IGNORE  # ignored pixels drop out
    ours = weighted_cross_entropy(logits, target, torch.ones(2, 8, 8))
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_unet_shapes_any_size():
    net = UNet(in_ch=1, num_classes=2, base=4, depth=3)
    out = net(torch.rand(2, 1, 37, 61))
    assert out.shape == (2, 2, 37, 61)


def test_unet_head_trains_and_feeds_gradient_to_depth():
    """Unlike the original SegDepth code (its optimizer was zeroed before the step), ours learns."""
    torch.manual_seed(0)
    h, w = 32, 64
    labels = torch.full((2, h, w), ID["road"], dtype=torch.long)
    labels[:, 8:20, 10:24] = ID["car"]
    labels[:, 6:26, 40:44] = ID["pole"]
    labels[:, :4] = ID["sky"]
    # a disparity map where objects stand out (closer = larger inverse depth)
    inv_depth = torch.full((2, 1, h, w), 0.05)
    inv_depth[:, :, 8:20, 10:24] = 0.2
    inv_depth[:, :, 6:26, 40:44] = 0.15
    inv_depth.requires_grad_(True)
    unet = UNet(in_ch=1, num_classes=2, base=8, depth=2)
    before = [p.detach().clone() for p in unet.parameters()]
    opt = torch.optim.Adam(unet.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = segdepth_loss(unet, inv_depth, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert inv_depth.grad is not None and inv_depth.grad.abs().sum() > 0
    changed = sum(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))
    assert changed == len(before)
    assert losses[-1] < 0.5 * losses[0]


def test_segdepth_trains_inside_the_trainer_and_is_not_exported(synthetic_root, tmp_path):
    """loss.segdepth_weight > 0: the U-Net gets its own Adam group, learns, is checkpointed and resumed."""
    import json

    import yaml

    from semdepth_core.checkpoint import load_checkpoint
    from semdepth_core.config import ConfigError, load_config
    from semdepth_core.infer.loading import load_models
    from training.train import main

    with pytest.raises(ConfigError, match="loss.segdepth_weight"):
        load_config(None, ["loss.segdepth_weight=5e-4"])
    cfg = {
        "data": {"kind": "kitti", "root": str(synthetic_root), "height": 64, "width": 192, "batch_size": 2},
        "model": {"depth_net": "mobilenetv2", "semantic": {"enabled": True, "arch": "espnet"}},
        "loss": {"segdepth_weight": 5e-4},
        "train": {"name": "seg", "out_dir": str(tmp_path / "runs"), "epochs": 1, "steps_per_epoch": 3,
                  "tensorboard": False, "seed": 1},
    }
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--config", str(path)]) == 0
        run = tmp_path / "runs" / "seg"
        ckpt = load_checkpoint(run / "last.ckpt")
        rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r.strip()]
        seg_losses = [r["segdepth"] for r in rows if "segdepth" in r]
        assert len(seg_losses) == 3 and all(np.isfinite(seg_losses))
        head = {k: v.clone() for k, v in ckpt["seg_head"].items()}
        assert set(head) == set(UNet(in_ch=1, num_classes=2).state_dict())
        assert "segdepth" in [g.get("name") for g in ckpt["optimizer"]["param_groups"]]
        # resuming restores the head, and three more steps move every one of its weights
        assert main(["--config", str(path), "--set", "train.epochs=2", "--resume", "auto"]) == 0
        after = load_checkpoint(run / "last.ckpt")["seg_head"]
        weights = [k for k in head if k.endswith(".weight")]
        assert weights and all(not torch.equal(head[k], after[k]) for k in weights)
        # the deployable model never contains the head
        models = load_models(run / "last.ckpt")
        names = [n for n, _ in models.depth_model.named_modules()]
        assert not any("seg_head" in n or isinstance(m, UNet) for n, m in models.depth_model.named_modules())
        assert names
    finally:
        torch.set_num_threads(threads)
