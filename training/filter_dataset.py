"""Stage-1 filter of two-stage training (paper §4.3): drop training images with infinite-depth holes.

For each training image the stage-1 depth is back-projected, the ground plane is fitted with
RANSAC on near, lower-image points, and the pixels whose 3D point lies more than `margin` metres
below it are counted; an image is dropped when the count exceeds `max_below_pixels` (10 in the
paper). Scale-ambiguous depth is first made metric with the known camera height, so the margin
is in metres.

    python -m training.filter_dataset --checkpoint STAGE1.ckpt --config CFG.yaml --out DIR [--set k=v]

Writes DIR/kept.txt (split file, Eigen-Zhou format), DIR/dropped.txt, DIR/report.json and a few
overlay PNGs of dropped images (below-ground pixels in red).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semdepth_core.checkpoint import CheckpointError
from semdepth_core.config import Config, ConfigError, TwoStageConfig, load_config
from semdepth_core.data.kitti import KittiDrive, read_rgb
from semdepth_core.data.splits import SampleRef, read_split_file, refs_for_root, write_split_file
from semdepth_core.geometry.ground_check import infinite_depth_check
from training.data import synthetic_drive_root
from training.runtime import resolve_path


@dataclass
class FrameCheck:
    ref: SampleRef
    count: int  # pixels more than margin below the ground plane (network resolution)
    scale: float  # factor applied to the depth before the check (1 when metric / no height)
    plane_ok: bool
    dropped: bool


def training_images(cfg: Config) -> list[tuple[Path, SampleRef]]:
    """(root, ref) of every training image, enumerated exactly as `training.data` does."""
    offsets = tuple(cfg.data.context)
    if cfg.data.kind == "synthetic":
        roots = [synthetic_drive_root(cfg, s) for s in cfg.data.synthetic.train_seeds]
        split = set(read_split_file(resolve_path(cfg.data.train_split))) if cfg.data.train_split else None
        out = []
        for root in roots:
            out += [(root, r) for r in refs_for_root(root, offsets, cam=cfg.data.cam) if split is None or r in split]
        return out
    if not cfg.data.root:
        raise ConfigError("data.root: required for data.kind: kitti")
    root = resolve_path(cfg.data.root)
    refs = read_split_file(resolve_path(cfg.data.train_split)) if cfg.data.train_split else refs_for_root(root, offsets)
    return [(root, r) for r in refs]


def check_frame(depth: np.ndarray, K: np.ndarray, tcfg: TwoStageConfig, metric: bool) -> tuple[int, float, bool, np.ndarray]:
    """(below-ground count, scale used, plane fitted, below mask) for one depth map [h,w] with K at [h,w].

    `semdepth_core.geometry.ground_check.infinite_depth_check` with the two_stage settings: metric depth (or
    camera_height 0) is tested as it is, scale-free depth is made metric with the camera height first.
    A frame without a ground fit counts 0 pixels (kept).
    """
    r = infinite_depth_check(depth, K, margin=tcfg.margin, margin_slope=tcfg.margin_slope,
                             max_below_pixels=tcfg.max_below_pixels, camera_height=tcfg.camera_height,
                             metric_scale=1.0 if metric or tcfg.camera_height <= 0 else None,
                             row_fraction=tcfg.row_fraction, max_range=tcfg.max_range)
    if not r.checked:
        return 0, 1.0, False, np.zeros(np.shape(depth), bool)
    return r.count, r.scale, True, r.below_mask


def _overlay(rgb: np.ndarray, below: np.ndarray) -> np.ndarray:
    import cv2

    mask = cv2.resize(below.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    out = rgb.copy()
    out[mask] = (0.3 * out[mask] + 0.7 * np.array([255, 0, 0])).astype(np.uint8)
    return out


def require_kept(report: dict) -> None:
    """Stage 2 needs training images: a clear error when the filter dropped every one of them."""
    if report["images"] and report["dropped"] >= report["images"]:
        counts = sorted(r["count"] for r in report.get("per_image", []))
        median = counts[len(counts) // 2] if counts else "?"
        raise ValueError(
            f"the ground-plane filter dropped all {report['images']} training images (median {median} pixels "
            f"below the plane, threshold {report['threshold_pixels']}, margin {report['margin_m']} m "
            f"+ {report.get('margin_slope', 0.0)} x depth): the "
            "stage-1 depth is too inaccurate near the ground for the §4.3 test; train stage 1 longer, or raise "
            "two_stage.margin, two_stage.margin_slope or two_stage.max_below_pixels")


def filter_dataset(cfg: Config, checkpoint: str | Path, out_dir: str | Path, backend: str = "torch",
                   device: str = "cpu", progress: bool = True) -> dict:
    """Run the stage-1 model over the training images; write kept/dropped splits and a report."""
    from semdepth_core.infer import load_predictor
    from semdepth_core.viz import write_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg.two_stage
    predictor = load_predictor(checkpoint, backend=backend, device=device)
    metric = predictor.is_metric
    images = training_images(cfg)
    if not images:
        raise ValueError("no training images found to filter (check data.root / data.train_split)")
    checks: list[FrameCheck] = []
    examples = 0
    drives: dict[Path, KittiDrive] = {}
    for root, ref in tqdm(images, desc="filter", disable=not progress):
        drive_dir = ref.drive_dir(root)
        drive = drives.setdefault(drive_dir, KittiDrive(drive_dir, cams=(ref.cam,)))
        rgb = read_rgb(drive.image_path(ref.frame, ref.cam))
        pred = predictor.predict(rgb)
        h, w = pred.inv_depth.shape
        K = drive.calib.K(ref.cam, size=(w, h))
        depth = 1.0 / np.maximum(pred.inv_depth, 1e-6)
        count, scale, ok, below = check_frame(depth, K, tcfg, metric)
        dropped = count > tcfg.max_below_pixels
        checks.append(FrameCheck(ref, count, scale, ok, dropped))
        if dropped and examples < tcfg.examples:
            write_png(out_dir / f"dropped_{examples:02d}_{ref.drive}_{ref.frame:010d}.png", _overlay(rgb, below))
            examples += 1
    kept = [c.ref for c in checks if not c.dropped]
    write_split_file(out_dir / "kept.txt", kept)
    write_split_file(out_dir / "dropped.txt", [c.ref for c in checks if c.dropped])
    report = {
        "checkpoint": str(checkpoint),
        "images": len(checks),
        "dropped": len(checks) - len(kept),
        "fraction_dropped": (len(checks) - len(kept)) / len(checks),
        "threshold_pixels": tcfg.max_below_pixels,
        "margin_m": tcfg.margin,
        "margin_slope": tcfg.margin_slope,
        "metric_model": metric,
        "no_ground_fit": sum(not c.plane_ok for c in checks),
        "per_image": [{"ref": c.ref.name, "count": c.count, "scale": c.scale, "dropped": c.dropped} for c in checks],
    }
    tmp = out_dir / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / "report.json")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.filter_dataset", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="stage-1 checkpoint")
    p.add_argument("--config", help="config whose data section lists the training images (default: the checkpoint's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="output directory for kept.txt, dropped.txt, report.json")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "auto"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        if args.config:
            cfg = load_config(args.config, args.overrides)
        else:
            from semdepth_core.checkpoint import load_checkpoint
            from semdepth_core.config import config_with_overrides

            cfg = config_with_overrides(load_checkpoint(args.checkpoint)["config"], args.overrides)
        report = filter_dataset(cfg, args.checkpoint, args.out, backend=args.backend, device=args.device)
    except (ConfigError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"filtered {report['images']} images: dropped {report['dropped']} "
          f"({100 * report['fraction_dropped']:.1f}%), kept split {Path(args.out) / 'kept.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
