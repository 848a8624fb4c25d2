"""Real-image transfer: train on the real data except KITTI drive 0023, score on drive 0023's LiDAR.

    python benchmarks/real_transfer.py [--quick] [--minutes 85] [--config training/configs/real.yaml]
                                       [--set key=value ...] [--checkpoint CKPT] [--tag NAME]

Training (through `python -m training.train`, run dir runs/bench/real_transfer[_TAG]) uses the config's
sources: the KITTI raw drives under ../shared/data/kitti_raw except 0023 (drive 0001, stereo, OXTS) and
the two KITTI odometry snippets (greyscale stereo, metric poses). `--checkpoint` skips training and
scores that checkpoint instead (e.g. the shipped default, which `python -m training.make_default`
trains with this same config).

Evaluation on drive 0023, camera 2, all 7 frames: the packaged LiDAR projection as ground truth, Garg
crop, 1e-3 < gt < 80 m, prediction clamped to the same range, the product's own inference path
(`load_predictor(..., backend="torch").predict`). Reported median-scaled (per image, median(gt) /
median(pred)) and unscaled (metric), with the spread of the per-image GT/pred ratios. On exactly the
same pixels, two baselines that need no learning:
  constant     one depth for every pixel: median-scaled, its abs_rel is that of the best constant per
               image; unscaled, the median LiDAR depth of the real training drive (0001);
  flat_ground  the depth of a flat road 1.65 m below a level camera for each image row
               (h * fy / (v - cy)), capped at 80 m at and above the horizon: metric by construction.

Targets (one full run of at most 90 minutes on the 2-core CPU): median-scaled abs_rel <= 0.15 and
a1 >= 0.80; unscaled abs_rel <= 0.20 with the GT/pred ratio within 1 +- 0.10; both baselines beaten
by >= 0.10 abs_rel (median-scaled). Writes benchmarks/results/real_transfer[_TAG][_quick].json and a
picture (input | prediction | LiDAR) beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.common import REPO, RESULTS, print_table, write_result  # noqa: E402

CONFIG = REPO / "training" / "configs" / "real.yaml"
HELD_OUT_DATE, HELD_OUT_DRIVE = "2011_09_26", "2011_09_26_drive_0023_sync"
TRAIN_LIDAR_DRIVE = "2011_09_26_drive_0001_sync"
CAMERA_HEIGHT = 1.65
FULL_MINUTES = 85.0
QUICK_STEPS = 6
TARGETS = {"scaled_abs_rel": 0.15, "scaled_a1": 0.80, "unscaled_abs_rel": 0.20, "ratio_tol": 0.10,
           "baseline_margin": 0.10}
MAX_DEPTH = 80.0


def kitti_root() -> Path:
    from semdepth_core.paths import kitti_raw_dir

    return kitti_raw_dir()


def held_out_frames(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, rgb uint8, LiDAR depth [H,W], K) of every frame of drive 0023, camera 2."""
    from semdepth_core.data.kitti import KittiDrive

    drive = KittiDrive(root / HELD_OUT_DATE / HELD_OUT_DRIVE)
    if not drive.frames:
        raise SystemExit(f"error: no frames in {drive.path}")
    return [(f"{HELD_OUT_DRIVE}/{f:010d}", drive.load_image(f, 2), drive.depth_gt(f, 2, "velodyne"), drive.K(2))
            for f in drive.frames]


def training_lidar_median(root: Path) -> float:
    """Median LiDAR depth over the real training drive's frames (the unscaled constant baseline)."""
    from semdepth_core.data.kitti import KittiDrive

    drive = KittiDrive(root / HELD_OUT_DATE / TRAIN_LIDAR_DRIVE)
    vals = np.concatenate([d[(d > 1e-3) & (d < MAX_DEPTH)] for d in
                           (drive.depth_gt(f, 2, "velodyne") for f in drive.frames)])
    return float(np.median(vals))


def flat_ground_depth(K: np.ndarray, size: tuple[int, int], height: float = CAMERA_HEIGHT) -> np.ndarray:
    """[H,W] depth of a flat road `height` below a level camera (row v: h*fy/(v-cy)); MAX_DEPTH at and above
    the horizon."""
    W, H = size
    v = np.arange(H, dtype=np.float64)[:, None] - K[1, 2]
    with np.errstate(divide="ignore"):
        d = np.where(v > 0, height * K[1, 1] / np.maximum(v, 1e-9), MAX_DEPTH)
    return np.broadcast_to(np.minimum(d, MAX_DEPTH), (H, W)).astype(np.float32)


def score(frames, preds: list[np.ndarray]) -> dict:
    """Median-scaled and unscaled KITTI metrics of predictions [H,W] (metres) against the frames' LiDAR."""
    from semdepth_core.eval.metrics import MetricAccumulator

    scaled, unscaled = MetricAccumulator(median_scaling=True), MetricAccumulator(median_scaling=False)
    per_image = []
    for (name, _, gt, _), pred in zip(frames, preds):
        ms = scaled.add(gt, pred)
        mu = unscaled.add(gt, pred)
        per_image.append({"image": name, "abs_rel": ms["abs_rel"], "a1": ms["a1"],
                          "unscaled_abs_rel": mu["abs_rel"], "gt_over_pred": ms["ratio"]})
    s, u = scaled.summary(), unscaled.summary()
    keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
    return {"scaled": {k: s[k] for k in keys}, "unscaled": {k: u[k] for k in keys},
            "gt_over_pred": s["ratio_spread"], "per_image": per_image}


def picture(frames, preds: list[np.ndarray], path: Path, rows: int = 3) -> Path:
    """input | prediction | LiDAR (points dilated) for `rows` frames spread over the drive, one PNG.

    Both depth tiles share one colour scale (inverse depth, 3-80 m); the prediction is shown as it is
    published (metric), and its tile is labelled with the frame's GT/pred ratio."""
    import cv2

    from semdepth_core.viz import colorize_depth

    idx = np.linspace(0, len(frames) - 1, min(rows, len(frames))).round().astype(int)
    strips = []
    for i in idx:
        name, rgb, gt, _ = frames[i]
        H, W = gt.shape
        half = (W // 2, H // 2)
        valid = (gt > 1e-3) & (gt < MAX_DEPTH)
        ratio = float(np.median(gt[valid]) / np.median(preds[i][valid]))
        lidar = cv2.dilate(np.where(gt > 0, gt, 0).astype(np.float32), np.ones((3, 3), np.uint8))
        tiles = [cv2.resize(rgb, half, interpolation=cv2.INTER_AREA),
                 cv2.resize(colorize_depth(preds[i], MAX_DEPTH, 3.0), half, interpolation=cv2.INTER_AREA),
                 cv2.resize(np.where(lidar[..., None] > 0, colorize_depth(lidar, MAX_DEPTH, 3.0), 0).astype(np.uint8),
                            half, interpolation=cv2.INTER_NEAREST)]
        for tile, label in zip(tiles, (name.split("/")[-1], f"prediction (GT/pred {ratio:.2f})", "LiDAR")):
            cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        strips.append(np.concatenate(tiles, axis=1))
    img = np.concatenate(strips, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[..., ::-1])
    return path


def predict_all(checkpoint: Path, frames) -> tuple[list[np.ndarray], dict]:
    """Depth of every frame through the product's inference path (torch backend, the checkpoint's size policy)."""
    from semdepth_core.infer import load_predictor

    predictor = load_predictor(checkpoint, backend="torch")
    preds, ms = [], []
    for _, rgb, _, _ in frames:
        t0 = time.perf_counter()
        preds.append(predictor.predict(rgb).depth)
        ms.append((time.perf_counter() - t0) * 1e3)
    info = {"network_input": list(predictor.input_size), "metric": predictor.is_metric,
            "median_predict_ms": float(np.median(ms))}
    predictor.close()
    return preds, info


def targets_met(model: dict, baselines: dict) -> dict:
    t = TARGETS
    best_baseline = min(b["scaled"]["abs_rel"] for b in baselines.values())
    ratio = model["gt_over_pred"]["median"]
    return {
        "scaled_abs_rel": model["scaled"]["abs_rel"] <= t["scaled_abs_rel"],
        "scaled_a1": model["scaled"]["a1"] >= t["scaled_a1"],
        "unscaled_abs_rel": model["unscaled"]["abs_rel"] <= t["unscaled_abs_rel"],
        "ratio_within_tol": abs(ratio - 1.0) <= t["ratio_tol"],
        "beats_baselines_by_margin": model["scaled"]["abs_rel"] <= best_baseline - t["baseline_margin"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps: checks the pipeline")
    p.add_argument("--minutes", type=float, default=FULL_MINUTES, help="training budget (wall-clock minutes)")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--checkpoint", help="score this checkpoint instead of training one")
    p.add_argument("--tag", default="", help="suffix of the run folder and the result name (ablations)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = library default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from training.budgeted import bench_dir, run_stats, run_training

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    name = "real_transfer" + (f"_{args.tag}" if args.tag else "")
    root = kitti_root()
    training = None
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        from semdepth_core.checkpoint import load_checkpoint

        prov = load_checkpoint(ckpt).get("provenance")
        if prov:  # e.g. the shipped default: how it was trained (python -m training.make_default)
            training = {k: prov.get(k) for k in ("recipe", "depth_config", "trained_on", "seed", "depth_steps",
                                                 "train_minutes", "torch_threads", "date")}
    else:
        run_dir = bench_dir("real_transfer", args.quick) / (args.tag or "default")
        overrides = list(args.overrides)
        if args.threads > 0:
            overrides.append(f"train.num_threads={args.threads}")
        if args.quick:
            overrides += [f"train.max_steps={QUICK_STEPS}", "data.batch_size=2"]
        done = run_training(args.config, run_dir, 1e6 if args.quick else args.minutes, overrides)
        ckpt = run_dir / "last.ckpt"
        training = {"config": str(Path(args.config).resolve().relative_to(REPO)), "overrides": overrides,
                    "budget_min": None if args.quick else args.minutes, **run_stats(run_dir),
                    "torch_threads": done.get("torch_threads")}

    frames = held_out_frames(root)
    preds, info = predict_all(ckpt, frames)
    model = score(frames, preds)
    const_scaled = [np.ones_like(gt) for _, _, gt, _ in frames]  # any constant: median scaling sets it
    const_unscaled = training_lidar_median(root)
    constant = score(frames, const_scaled)
    constant["unscaled"] = score(frames, [np.full_like(gt, const_unscaled) for _, _, gt, _ in frames])["unscaled"]
    constant["unscaled_value_m"] = const_unscaled
    flat = score(frames, [flat_ground_depth(K, (gt.shape[1], gt.shape[0])) for _, _, gt, K in frames])
    baselines = {"constant": constant, "flat_ground": flat}

    rows = [{"what": what, "abs_rel": r["scaled"]["abs_rel"], "sq_rel": r["scaled"]["sq_rel"],
             "rmse": r["scaled"]["rmse"], "a1": r["scaled"]["a1"], "unscaled_abs_rel": r["unscaled"]["abs_rel"],
             "unscaled_a1": r["unscaled"]["a1"], "gt/pred": r["gt_over_pred"]["median"]}
            for what, r in (("model", model), ("constant", constant), ("flat_ground", flat))]
    print(f"drive 0023 (held out), {len(frames)} frames, Garg crop, 80 m; checkpoint {ckpt}")
    print_table(rows)
    met = targets_met(model, baselines)
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    pic = picture(frames, preds, RESULTS / f"{name}{'_quick' if args.quick else ''}.png")
    out = write_result(name, {
        "held_out": f"{HELD_OUT_DATE}/{HELD_OUT_DRIVE}, camera 2, {len(frames)} frames, LiDAR "
                    "(proj_depth/velodyne npz), Garg crop, 1e-3..80 m",
        "checkpoint": str(ckpt), "inference": info, "training": training, "model": model,
        "baselines": baselines, "targets": TARGETS, "targets_met": met, "table": rows,
        "picture": str(pic.relative_to(REPO)),
    }, quick=args.quick)
    print(f"wrote {out} and {pic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
