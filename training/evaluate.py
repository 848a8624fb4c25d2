"""Evaluate a trained depth checkpoint with the KITTI metrics (Eigen et al. 2014; paper Table 1).

    python -m training.evaluate --checkpoint CKPT --data ROOT [--split FILE] [--no-median-scaling]
                                [--flip] [--out metrics.json] [--height H --width W]

The model is rebuilt from the config embedded in the checkpoint (loaded with weights_only=True).
Predictions are upsampled to the ground-truth resolution in inverse depth, then scored; with
median scaling each frame is scaled by median(gt)/median(pred) and the spread of those ratios is
reported. Per-class metrics and the infinite-depth fraction are added when semantic labels are
available (ground truth, or else the model's own semantic output).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from semdepth_core.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from semdepth_core.config import Config, ConfigError, config_from_dict


def load_depth_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """Depth network rebuilt from the checkpoint's embedded config, weights checked against it."""
    from semdepth_core.nets.model import build_models
    from training.train import resolved_model_config

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    # every weight comes from the checkpoint: do not read ImageNet initialisations again
    cfg.model.pretrained = ""
    cfg.model.pose_pretrained = ""
    cfg.model.semantic.pretrained_backbone = ""
    try:
        depth_model, _ = build_models(resolved_model_config(cfg), len(cfg.data.context))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot rebuild the model from its config: {exc}") from exc
    load_state_dict_checked(depth_model, ckpt["depth_model"], f"{path}: depth_model")
    return depth_model.to(device).eval(), cfg


def flip_blend(inv: torch.Tensor, inv_flipped_back: torch.Tensor) -> torch.Tensor:
    """Monodepth2 flip post-processing: mean of the two predictions, except near the image sides,
    where each uses the prediction whose border was not at that side (ramps over 5-10% of W).

    inv, inv_flipped_back: [B,1,H,W] (the second predicted on the mirrored image, mirrored back).
    """
    W = inv.shape[-1]
    x = torch.linspace(0.0, 1.0, W, dtype=inv.dtype, device=inv.device)  # [W]
    left = 1.0 - ((x - 0.05) * 20.0).clamp(0.0, 1.0)  # 1 on the left 5%, 0 beyond 10%
    right = left.flip(0)
    mean = 0.5 * (inv + inv_flipped_back)
    return right * inv + left * inv_flipped_back + (1.0 - left - right) * mean


@torch.no_grad()
def predict(model: torch.nn.Module, rgb: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(inverse depth [B,1,H,W] at the network resolution, semantic logits [B,C,h,w] or None)."""
    out = model(rgb)
    inv = out["inv_depths"][0]
    if flip:
        inv_flip = model(rgb.flip(-1))["inv_depths"][0].flip(-1)
        inv = flip_blend(inv, inv_flip)
    return inv, out.get("sem_logits")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="semdepth checkpoint (best.ckpt / last.ckpt)")
    p.add_argument("--data", required=True, help="KITTI raw root (YYYY_MM_DD folders)")
    p.add_argument("--split", help="split file (Eigen or Eigen-Zhou format); default: every frame under --data")
    p.add_argument("--no-median-scaling", action="store_true", help="score metric depth without per-frame scaling")
    p.add_argument("--flip", action="store_true", help="Monodepth2 flip post-processing")
    p.add_argument("--out", help="write the metrics as JSON here")
    p.add_argument("--height", type=int, help="network input height (default: the checkpoint's data.height)")
    p.add_argument("--width", type=int, help="network input width (default: the checkpoint's data.width)")
    p.add_argument("--gt-source", choices=["auto", "velodyne", "dense"], default="auto")
    p.add_argument("--no-garg-crop", action="store_true", help="score every valid pixel instead of the Garg crop")
    p.add_argument("--max-depth", type=float, default=80.0, help="depth cap of the protocol (80 m on KITTI)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader

    from semdepth_core.data.dataset import KittiDataset, collate
    from semdepth_core.eval import metrics as M

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    model, cfg = load_depth_model(args.checkpoint, device)
    height = args.height or cfg.data.height
    width = args.width or cfg.data.width
    if height % 32 or width % 32:
        raise ConfigError(f"--height/--width: {height}x{width} must be multiples of 32")
    try:
        dataset = KittiDataset(args.data, refs=args.split, height=height, width=width, context=(), augment=None,
                               with_gt=True, gt_source=args.gt_source, training=False)
    except (OSError, ValueError) as exc:  # KittiFormatError is a ValueError
        raise SystemExit(f"error: cannot read the evaluation data: {exc}") from exc
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate)
    median_scaling = not args.no_median_scaling
    garg_crop = not args.no_garg_crop

    acc = M.MetricAccumulator(median_scaling=median_scaling, garg_crop=garg_crop, max_depth=args.max_depth)
    label_source = None
    for batch in loader:
        name = batch["filename"][0]
        if "depth_gt" not in batch:
            raise SystemExit(f"error: no ground-truth depth for {name} (gt_source={args.gt_source})")
        gt = batch["depth_gt"][0][0]  # [H0,W0] metres, 0 = invalid
        inv, sem_logits = predict(model, batch["rgb"].to(device), args.flip)  # [1,1,H,W]
        pred = M.upsample_depth(1.0 / inv[0, 0].clamp(min=1e-6).cpu(), tuple(gt.shape))  # [H0,W0]
        semantic = dynamic = None
        if "semantic_gt" in batch:
            semantic, label_source = batch["semantic_gt"][0], "ground truth"
        elif sem_logits is not None:
            up = F.interpolate(sem_logits, size=tuple(gt.shape), mode="bilinear", align_corners=False)
            semantic, label_source = up.argmax(1)[0].cpu(), "model prediction"
        if "dynamic_gt" in batch:
            dynamic = batch["dynamic_gt"][0]
        try:
            acc.add(gt, pred, semantic=semantic, dynamic=dynamic)
        except ValueError as exc:
            raise SystemExit(f"error: {name}: {exc}") from exc

    if len(acc) == 0:
        raise SystemExit(f"error: no frames to evaluate under {args.data}")
    out = acc.summary()
    out.update(median_scaling=median_scaling, flip=bool(args.flip), checkpoint=str(args.checkpoint))
    if label_source is not None:
        out["label_source"] = label_source
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = evaluate(args)
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from semdepth_core.eval.metrics import format_metrics_table

    print(format_metrics_table(metrics))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
