"""Supervised training of a semantic guidance net (paper §4.2 / §5.2 protocol) on (image, trainId) folders.

    python -m training.train_semantic --config FILE.yaml [--set key.sub=value ...]

Data: every `.../image_02/data/NAME.png` under `data.roots` whose label `.../semantic/image_02/NAME.png`
(Cityscapes trainIds, 255 = ignore) exists -- the layout the synthetic drives are written in.
Protocol of §5.2: cross-entropy (ignore 255), SGD with momentum 0.9 and weight decay 1e-4, poly
or step learning-rate decay, random scaling in [0.7, 1.3], horizontal flips and random crops.
Outputs in `train.out_dir/train.name/`: `semantic_last.pth` (atomic; `{"format", "semantic_net",
"config", "iteration", "optimizer"}` -- `model.semantic.weights` accepts it), `log.jsonl`, `config.yaml`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset

from semdepth_core.checkpoint import atomic_write_bytes
from semdepth_core.config import ConfigError, SemanticConfig, from_dict, load_config_data
from semdepth_core.data.labels import IGNORE, NUM_CLASSES
from semdepth_core.nets.semantic import build_semantic_net

FORMAT = "semdepth-semantic-v1"


@dataclass
class SemData:
    roots: list[str] = field(default_factory=list)  # folders searched for image_02/data/*.png
    val_roots: list[str] = field(default_factory=list)
    crop_height: int = 192
    crop_width: int = 384
    scale_min: float = 0.7
    scale_max: float = 1.3
    flip: bool = True
    batch_size: int = 4
    num_workers: int = 0


@dataclass
class SemOptim:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # poly | step
    power: float = 0.9  # poly: lr * (1 - it / iterations) ** power
    milestones: list[float] = field(default_factory=lambda: [36 / 48, 44 / 48])  # step: fractions (36k, 44k of 48k)
    gamma: float = 0.1
    iterations: int = 48000


@dataclass
class SemRun:
    name: str = "semantic"
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    log_every: int = 10
    val_every: int = 0  # iterations between validations (0 = only at the end)
    max_minutes: float = 0.0  # wall-clock budget (0 = none); a checkpoint is written when it runs out


@dataclass
class SemanticTrainConfig:
    semantic: SemanticConfig = field(default_factory=lambda: SemanticConfig(enabled=True, arch="fpn_resnet18"))
    data: SemData = field(default_factory=SemData)
    optim: SemOptim = field(default_factory=SemOptim)
    train: SemRun = field(default_factory=SemRun)


def load_train_config(path: str | None, overrides: list[str] | None = None) -> SemanticTrainConfig:
    """YAML file (or defaults) + `key.sub=value` overrides -> validated SemanticTrainConfig."""
    data = load_config_data(path, overrides)  # the one config system: same file format, bases and overrides
    data.setdefault("semantic", {}).setdefault("arch", "fpn_resnet18")
    cfg = from_dict(SemanticTrainConfig, data)
    checks = [
        ("semantic.arch", cfg.semantic.arch in ("espnet", "fpn_resnet18", "fpn_resnet50"),
         "must be espnet | fpn_resnet18 | fpn_resnet50"),
        ("data.roots", len(cfg.data.roots) > 0, "must list at least one folder"),
        ("data.crop_height", cfg.data.crop_height >= 32, "must be >= 32"),
        ("data.crop_width", cfg.data.crop_width >= 32, "must be >= 32"),
        ("data.scale_min", 0 < cfg.data.scale_min <= cfg.data.scale_max, "need 0 < scale_min <= scale_max"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("optim.lr", cfg.optim.lr > 0, "must be > 0"),
        ("optim.schedule", cfg.optim.schedule in ("poly", "step"), "must be poly | step"),
        ("optim.iterations", cfg.optim.iterations >= 1, "must be >= 1"),
        ("optim.milestones", all(0 < m < 1 for m in cfg.optim.milestones), "fractions of iterations in (0, 1)"),
        ("train.device", cfg.train.device in ("cpu", "cuda", "auto"), "must be cpu | cuda | auto"),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(f"{key}: {msg}")
    return cfg


def find_pairs(roots: list[str]) -> list[tuple[Path, Path]]:
    """(image, label) pairs: DRIVE/image_02/data/N.png with DRIVE/semantic/image_02/N.png."""
    pairs = []
    for root in roots:
        r = Path(root)
        if not r.is_dir():
            raise FileNotFoundError(f"data root not found: {r}")
        for img in sorted(r.rglob("image_02/data/*.png")):
            lab = img.parent.parent.parent / "semantic" / "image_02" / img.name
            if lab.is_file():
                pairs.append((img, lab))
    if not pairs:
        raise FileNotFoundError(f"no image_02/data/*.png with a semantic/image_02 label under {roots}")
    return pairs


def augment(rgb: np.ndarray, label: np.ndarray, rng: random.Random, crop_hw: tuple[int, int],
            scale: tuple[float, float], flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """§5.2 augmentation: random scale, horizontal flip, random crop (padding: black image, ignore label)."""
    s = rng.uniform(*scale)
    h, w = label.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if flip and rng.random() < 0.5:
        rgb, label = rgb[:, ::-1], label[:, ::-1]
    ch, cw = crop_hw
    ph, pw = max(0, ch - nh), max(0, cw - nw)
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE)
    y0 = rng.randint(0, label.shape[0] - ch)
    x0 = rng.randint(0, label.shape[1] - cw)
    return np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw]), np.ascontiguousarray(label[y0:y0 + ch, x0:x0 + cw])


def _read_pair(img: Path, lab: Path) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and its uint8 trainId map (the KITTI-layout readers: clear errors)."""
    from semdepth_core.data.kitti import read_label_png, read_rgb

    rgb, label = read_rgb(img), read_label_png(lab)
    if label.shape != rgb.shape[:2]:
        raise ValueError(f"{lab}: trainId map of size {label.shape} does not match its image {rgb.shape[:2]}")
    return rgb, label


class SegmentationFolder(Dataset):
    """(rgb [3,h,w] float in [0,1], label [h,w] int64) pairs, augmented when `train`."""

    def __init__(self, pairs, cfg: SemData, train: bool, seed: int = 0):
        self.pairs, self.cfg, self.train, self.seed = pairs, cfg, train, seed
        self.epoch = 0

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        rgb, label = _read_pair(*self.pairs[i])
        if self.train:
            rng = random.Random(hash((self.seed, self.epoch, i)))
            rgb, label = augment(rgb, label, rng, (self.cfg.crop_height, self.cfg.crop_width),
                                 (self.cfg.scale_min, self.cfg.scale_max), self.cfg.flip)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
        return x, torch.from_numpy(label.astype(np.int64))


def lr_factor(it: int, cfg: SemOptim) -> float:
    """Learning-rate multiplier at iteration `it` (poly or step decay)."""
    if cfg.schedule == "poly":
        return (1.0 - min(it, cfg.iterations) / cfg.iterations) ** cfg.power
    return cfg.gamma ** sum(it >= round(m * cfg.iterations) for m in cfg.milestones)


@torch.no_grad()
def evaluate(net, loader, device) -> dict:
    """Pixel accuracy and mIoU over the 19 trainIds (ignore 255 excluded)."""
    net.eval()
    n = NUM_CLASSES
    conf = torch.zeros(n, n + 1, dtype=torch.int64)  # rows: truth; last column: predicted "ignore" (wrong)
    for x, y in loader:
        pred = net.predict(x.to(device)).cpu().clamp(max=n)  # 255 -> n
        valid = y < n  # 255 = ignore
        conf += torch.bincount(y[valid] * (n + 1) + pred[valid], minlength=n * (n + 1)).reshape(n, n + 1)
    net.train()
    tp = conf[:, :n].diag().double()
    gt, pr = conf.sum(1).double(), conf[:, :n].sum(0).double()
    present = gt > 0
    iou = tp / (gt + pr - tp).clamp(min=1)
    return {"pixel_acc": float(tp.sum() / conf.sum().clamp(min=1)),
            "miou": float(iou[present].mean()) if present.any() else 0.0}


def save_semantic_checkpoint(path: Path, net, cfg: SemanticTrainConfig, it: int, optimizer) -> None:
    """Atomic write of the semantic net (+ config, iteration, optimiser state)."""
    payload = {"format": FORMAT, "semantic_net": net.state_dict(), "config": dataclasses.asdict(cfg),
               "iteration": it, "optimizer": optimizer.state_dict()}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def train(cfg: SemanticTrainConfig) -> dict:
    """Run the training loop; returns the final metrics and paths."""
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    device = torch.device("cuda" if cfg.train.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.train.device == "auto" else cfg.train.device))
    out = Path(cfg.train.out_dir) / cfg.train.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    net = build_semantic_net(cfg.semantic).to(device).train()
    if net.num_classes < NUM_CLASSES:
        raise ConfigError(f"semantic.num_classes: need >= {NUM_CLASSES} for Cityscapes trainIds, got {net.num_classes}")
    train_ds = SegmentationFolder(find_pairs(cfg.data.roots), cfg.data, train=True, seed=cfg.train.seed)
    loader = DataLoader(train_ds, batch_size=cfg.data.batch_size, shuffle=True, drop_last=len(train_ds) >= cfg.data.batch_size,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.train.seed))
    val_loader = None
    if cfg.data.val_roots:
        val_loader = DataLoader(SegmentationFolder(find_pairs(cfg.data.val_roots), cfg.data, train=False), batch_size=1)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg.optim))
    ckpt = out / "semantic_last.pth"
    log = (out / "log.jsonl").open("a")
    t0, it, metrics = time.time(), 0, {}
    try:
        while it < cfg.optim.iterations:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = net(x).logits  # [B,C,h,w]
                loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at iteration {it}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                it += 1
                if it % cfg.train.log_every == 0 or it == 1:
                    rec = {"it": it, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "time": time.time() - t0}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    print(f"it {it}/{cfg.optim.iterations} loss {rec['loss']:.4f} lr {rec['lr']:.2e}", flush=True)
                if val_loader is not None and cfg.train.val_every and it % cfg.train.val_every == 0:
                    metrics = evaluate(net, val_loader, device)
                    log.write(json.dumps({"it": it, **metrics}) + "\n")
                out_of_time = cfg.train.max_minutes and time.time() - t0 > 60 * cfg.train.max_minutes
                if it >= cfg.optim.iterations or out_of_time:
                    break
            train_ds.epoch += 1
            if cfg.train.max_minutes and time.time() - t0 > 60 * cfg.train.max_minutes:
                print(f"time budget of {cfg.train.max_minutes} min reached at iteration {it}", flush=True)
                break
        save_semantic_checkpoint(ckpt, net, cfg, it, opt)
        if val_loader is not None:
            metrics = evaluate(net, val_loader, device)
            log.write(json.dumps({"it": it, **metrics}) + "\n")
            print(f"val: pixel_acc {metrics['pixel_acc']:.4f} mIoU {metrics['miou']:.4f}", flush=True)
    finally:
        log.close()
    return {"iterations": it, "checkpoint": str(ckpt), **metrics}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="YAML file (SemanticTrainConfig)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=0.005")
    args = ap.parse_args(argv)
    return train(load_train_config(args.config, args.set))


if __name__ == "__main__":
    main()
