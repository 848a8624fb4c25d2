"""Evaluate a trained depth checkpoint with the KITTI metrics (Eigen et al. 2014; paper Table 1).

    python -m training.evaluate --checkpoint CKPT --data ROOT [--split FILE]
                                [--no-median-scaling | --camera-height H]
                                [--flip] [--out metrics.json] [--height H --width W]

The model is rebuilt from the config embedded in the checkpoint (loaded with weights_only=True).
Predictions are upsampled to the ground-truth resolution in inverse depth, then scored; with
median scaling each frame is scaled by median(gt)/median(pred) and the spread of those ratios is
reported. Per-class metrics and the infinite-depth fraction are added when semantic labels are
available (ground truth, or else the model's own semantic output).

Scaling (the JSON's "scaling" key):
  median         (default) per image, median(gt) / median(pred): the usual protocol for
                 scale-ambiguous models (uses the ground truth).
  none           (--no-median-scaling) the prediction is scored as metric depth as it is.
  camera_height  (--camera-height H) a ground-truth-free metric scale: each image's prediction is
                 multiplied by the scale that puts the RANSAC ground plane fitted to that image's
                 own predicted depth (network resolution, network-resolution K, rows below 60% of
                 the height) H metres below the camera (semdepth_core.geometry.ground_plane.
                 camera_height_scale). Images where no ground can be fitted are still scored, with
                 the median of the other images' camera-height scales; they are listed in the
                 JSON. Replaces median scaling (mutually exclusive with --no-median-scaling).
                 JSON block "camera_height": height_m, scale_spread (median/mean/std/min/max of the
                 fitted images' scales), scale_over_gt_ratio (scale / median(gt)/median(pred); 1 =
                 agrees with median scaling), no_ground_fit, no_ground_fit_images, fallback_scale,
                 per_image [{image, scale, ground_fit, gt_ratio}].
The existing keys (metrics, ratio_spread, median_scaling, ...) are written in every mode.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semdepth_core.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from semdepth_core.config import Config, ConfigError, config_from_dict
from semdepth_core.geometry.ground_check import DEFAULT_ROW_FRACTION, frame_camera_height_scale
from training.runtime import resolved_model_config


def load_depth_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """Depth network rebuilt from the checkpoint's embedded config, weights checked against it."""
    from semdepth_core.nets.model import build_models

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


def _camera_height(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of metres, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be > 0 metres, got {text!r}")
    return v


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0],
                                epilog=__doc__[__doc__.index("Scaling (the JSON"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="semdepth checkpoint (best.ckpt / last.ckpt)")
    p.add_argument("--data", required=True, help="KITTI raw root (YYYY_MM_DD folders)")
    p.add_argument("--split", help="split file (Eigen or Eigen-Zhou format); default: every frame under --data")
    scaling = p.add_mutually_exclusive_group()
    scaling.add_argument("--no-median-scaling", action="store_true",
                         help="score metric depth without per-frame scaling (JSON scaling: none)")
    scaling.add_argument("--camera-height", type=_camera_height, metavar="H",
                         help="instead of median scaling with the ground truth, scale each image's prediction so "
                              "that the ground plane fitted to its own predicted depth lies H metres (> 0; KITTI: "
                              "1.65) below the camera: a GT-free metric scale (JSON scaling: camera_height). "
                              "Images without a ground fit use the median of the other images' scales")
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
    height_m = getattr(args, "camera_height", None)
    scaling = "camera_height" if height_m is not None else ("none" if args.no_median_scaling else "median")
    median_scaling = scaling == "median"
    garg_crop = not args.no_garg_crop

    acc = M.MetricAccumulator(median_scaling=median_scaling, garg_crop=garg_crop, max_depth=args.max_depth)
    label_source = None
    per_image_scale: list[dict] = []  # camera_height: one entry per image, in data order
    deferred: list[tuple] = []  # camera_height: images without a ground fit, scored after the loop

    def add(name, gt, pred, semantic, dynamic, scale=None) -> dict:
        try:
            return acc.add(gt, pred, semantic=semantic, dynamic=dynamic, scale=scale)
        except ValueError as exc:
            raise SystemExit(f"error: {name}: {exc}") from exc

    for batch in loader:
        name = batch["filename"][0]
        if "depth_gt" not in batch:
            raise SystemExit(f"error: no ground-truth depth for {name} (gt_source={args.gt_source})")
        gt = batch["depth_gt"][0][0]  # [H0,W0] metres, 0 = invalid
        inv, sem_logits = predict(model, batch["rgb"].to(device), args.flip)  # [1,1,H,W]
        depth_net = 1.0 / inv[0, 0].clamp(min=1e-6).cpu()  # [H,W] model units, network resolution
        pred = M.upsample_depth(depth_net, tuple(gt.shape))  # [H0,W0]
        semantic = dynamic = None
        if "semantic_gt" in batch:
            semantic, label_source = batch["semantic_gt"][0], "ground truth"
        elif sem_logits is not None:
            up = F.interpolate(sem_logits, size=tuple(gt.shape), mode="bilinear", align_corners=False)
            semantic, label_source = up.argmax(1)[0].cpu(), "model prediction"
        if "dynamic_gt" in batch:
            dynamic = batch["dynamic_gt"][0]
        if scaling != "camera_height":
            add(name, gt, pred, semantic, dynamic)
            continue
        # GT-free metric scale from the image's own prediction (K is already at the network resolution)
        s = frame_camera_height_scale(depth_net.double().numpy(), batch["K"][0].double().numpy(), height_m,
                                      DEFAULT_ROW_FRACTION)  # None: no ground region / no plane
        entry = {"image": name, "scale": s, "ground_fit": s is not None}
        per_image_scale.append(entry)
        if s is None:
            deferred.append((entry, name, gt, pred, semantic, dynamic))
        else:
            entry["gt_ratio"] = _finite_or_none(add(name, gt, pred, semantic, dynamic, scale=s)["ratio"])

    fitted = [e["scale"] for e in per_image_scale if e["ground_fit"]]
    fallback = None
    if deferred:
        if not fitted:
            raise SystemExit(f"error: --camera-height: no ground plane could be fitted in any of the "
                             f"{len(deferred)} images, so there is no camera-height scale to use")
        fallback = float(np.median(fitted))
        for entry, name, gt, pred, semantic, dynamic in deferred:
            entry["scale"] = fallback
            entry["gt_ratio"] = _finite_or_none(add(name, gt, pred, semantic, dynamic, scale=fallback)["ratio"])

    if len(acc) == 0:
        raise SystemExit(f"error: no frames to evaluate under {args.data}")
    out = acc.summary()
    out.update(median_scaling=median_scaling, flip=bool(args.flip), checkpoint=str(args.checkpoint))
    if label_source is not None:
        out["label_source"] = label_source
    out["scaling"] = scaling
    if scaling == "camera_height":
        rel = [e["scale"] / e["gt_ratio"] for e in per_image_scale
               if e["ground_fit"] and e["gt_ratio"] is not None and e["gt_ratio"] > 0]
        out["camera_height"] = {
            "height_m": float(height_m),
            "row_fraction": DEFAULT_ROW_FRACTION,
            "scale_spread": M.spread_stats(fitted),  # per-image camera-height scales of the images with a ground fit
            # camera-height scale / GT median ratio (1 = the GT-free scale agrees with median scaling)
            "scale_over_gt_ratio": M.spread_stats(rel) if rel else None,
            "no_ground_fit": len(deferred),
            "no_ground_fit_images": [e["image"] for e, *_ in deferred],
            "fallback": "median of the other images' camera-height scales",
            "fallback_scale": fallback,
            "per_image": per_image_scale,
        }
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
    ch = metrics.get("camera_height")
    if ch:
        sp = ch["scale_spread"]
        print(f"camera-height scale (H = {ch['height_m']:g} m): median {sp['median']:.3f}  std {sp['std']:.3f}  "
              f"min {sp['min']:.3f}  max {sp['max']:.3f}; {ch['no_ground_fit']} image(s) without a ground fit "
              f"scored with the median of the others")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
