"""Semantic guidance vs baseline on synthetic drives (paper §4, Tables 2-3), same data, budget and seed.

    python -m experiments.guided_vs_baseline [--quick] [--budget-minutes 15] [--semantic-minutes 5]

1. Semantic pre-training: an ESPNet (initialised from the Cityscapes weights, or from scratch with
   --semantic-init scratch) is trained with pixel-wise cross-entropy on the GT trainId maps
   (255 = ignore) of OTHER synthetic drives (seeds 301-303; held-out seed 311 for its pixel
   accuracy / mIoU) at the depth network's 320x96 input by `training.train_semantic`; its
   checkpoint is what `model.semantic.weights` loads.
2. Three depth runs through `training.train.main`, identical data/budget/seed (runs/bench/guided_vs_baseline/):
     baseline        training/configs/synthetic_resnet18.yaml
     guided          training/configs/synthetic_resnet18_sg.yaml, frozen synthetic-trained ESPNet  ("CS, D"-like)
     guided_random   same, frozen randomly initialised ESPNet                                       ("I, D"-like ablation)
     segdepth        training/configs/synthetic_segdepth_resnet18.yaml: the baseline + SegDepth's auxiliary
                     U-Net fg/bg loss on the same frozen synthetic-trained ESPNet's labels (issue 7); its
                     U-Net's loss curve is reported, and the deployed model's parameter count vs the baseline's
3. Each final checkpoint is scored by `training.evaluate` on held-out drives (seeds 201, 202), median
   scaled, and on the object-boundary band: GT pixels within --band-px (3) pixels of a semantic-label
   edge of the GT semantic map, scored with the same metrics on the masked GT, each frame scaled by
   its whole-image median ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from experiments.common import REPO, print_table, write_result  # noqa: E402
from training.budgeted import (  # noqa: E402
    CONFIGS,
    TEST_SEEDS,
    add_common_args,
    apply_threads,
    bench_dir,
    budget_of,
    combined_root,
    data_overrides,
    drive_roots,
    evaluate_checkpoint,
    final_checkpoint,
    run_stats,
    run_training,
)

FULL_BUDGET_MIN = 15.0
FULL_SEMANTIC_MIN = 5.0
QUICK_SEMANTIC_MIN = 0.5
SEMANTIC_TRAIN_SEEDS = (301, 302, 303)
SEMANTIC_VAL_SEEDS = (311,)
BAND_PX = 3
SEMANTIC_CONFIG = REPO / "training" / "configs" / "default_semantic.yaml"
CITYSCAPES_ESPNET = REPO.parent / "shared" / "data" / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"
BASELINE_CFG = CONFIGS / "synthetic_resnet18.yaml"
GUIDED_CFG = CONFIGS / "synthetic_resnet18_sg.yaml"
SEGDEPTH_CFG = CONFIGS / "synthetic_segdepth_resnet18.yaml"
# --depth-net mobilenetv2: the same comparison on the ImageNet-initialised fast configs (the SegDepth
# arm is the baseline config plus the SegDepth loss and the frozen semantic net, as its R18 config is)
FAMILIES = {
    "resnet18": (BASELINE_CFG, GUIDED_CFG, SEGDEPTH_CFG, []),
    "mobilenetv2": (CONFIGS / "synthetic_mobilenetv2.yaml", CONFIGS / "synthetic_mobilenetv2_sg.yaml",
                    CONFIGS / "synthetic_mobilenetv2.yaml",
                    ["loss.segdepth_weight=0.0005", "model.semantic.enabled=true", "model.semantic.arch=espnet",
                     "model.semantic.num_classes=20"]),
}
ARMS = ("baseline", "guided", "guided_random", "segdepth")


# ============================================================================ pure helpers

def label_edges(labels: np.ndarray) -> np.ndarray:
    """Boolean [H,W]: pixels with a 4-neighbour of a different label (both sides of every edge)."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be [H,W], got shape {lab.shape}")
    e = np.zeros(lab.shape, dtype=bool)
    dx = lab[:, 1:] != lab[:, :-1]
    dy = lab[1:, :] != lab[:-1, :]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e


def boundary_band_mask(labels: np.ndarray, radius: float = BAND_PX) -> np.ndarray:
    """Boolean [H,W]: pixels within `radius` px (Euclidean) of a semantic-label edge pixel."""
    import cv2

    edges = label_edges(labels)
    if not edges.any():
        return np.zeros(edges.shape, dtype=bool)
    # distance of every pixel to the nearest edge pixel (edge pixels are the zeros)
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= radius


def train_semantic(out_dir: Path, train_roots: list[Path], val_roots: list[Path], budget_min: float,
                   init: str = "cityscapes", seed: int = 0) -> dict:
    """The guidance net: `training.train_semantic` (ESPNet, §5.2 recipe at the depth net's input scale,
    training/configs/default_semantic.yaml) on other drives' GT labels for `budget_min` minutes.

    init "cityscapes" starts from the shared Cityscapes weights ("CS"), "scratch" from random weights.
    Reused when OUT_DIR/meta.json records at least this budget with the same init.
    """
    from training import train_semantic as ts

    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("budget_min", 0) >= budget_min - 1e-9 and meta.get("init") == init and Path(meta["weights"]).is_file():
            print(f"[bench] reusing semantic net {meta['weights']}")
            return meta
    weights = str(CITYSCAPES_ESPNET) if init == "cityscapes" else ""
    if weights and not Path(weights).is_file():
        raise SystemExit(f"error: Cityscapes ESPNet weights not found: {weights} (use --semantic-init scratch)")
    over = [f"data.roots={json.dumps([str(r) for r in train_roots])}",
            f"data.val_roots={json.dumps([str(r) for r in val_roots])}",
            f"train.out_dir={out_dir.parent}", f"train.name={out_dir.name}", f"train.max_minutes={budget_min}",
            f"train.seed={seed}", "optim.iterations=1000000", f"semantic.weights={weights}"]
    t0 = time.monotonic()
    res = ts.train(ts.load_train_config(str(SEMANTIC_CONFIG), over))
    meta = {"weights": res["checkpoint"], "init": init, "budget_min": budget_min,
            "train_s": time.monotonic() - t0, "steps": res["iterations"],
            "val": {"pixel_acc": res.get("pixel_acc"), "miou": res.get("miou")}}
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def aux_loss_curve(run_dir: Path, key: str) -> dict:
    """Mean of a logged loss term over the first and the last 10 % of a run's logged steps."""
    recs = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines() if line.strip()]
    vals = [r[key] for r in recs if "total" in r and r.get(key) is not None]
    if len(vals) < 2:
        return {"logged_steps": len(vals)}
    k = max(1, len(vals) // 10)
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    return {"logged_steps": len(vals), "first_10pct_mean": first, "last_10pct_mean": last, "fell": last < first}


def deployed_parameters(ckpt: Path) -> dict:
    """Parameters of the depth model as the product loads it from the checkpoint (training-only heads such
    as SegDepth's U-Net are not part of it), in all and without the frozen semantic net."""
    import torch

    from training.evaluate import load_depth_model

    model, _ = load_depth_model(ckpt, torch.device("cpu"))
    total = sum(p.numel() for p in model.parameters())
    sem = getattr(model, "semantic", None)
    sem_n = sum(p.numel() for p in sem.parameters()) if sem is not None else 0
    return {"total": total, "without_semantic_net": total - sem_n}


# ============================================================================ boundary-band evaluation

def band_evaluation(ckpt: Path, data_root: Path, out_json: Path, radius: float = BAND_PX) -> dict:
    """Median-scaled metrics over all GT pixels and over the semantic-boundary band (same scale per frame)."""
    import torch

    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.eval.metrics import MetricAccumulator, upsample_depth
    from training.evaluate import load_depth_model, predict

    out_json = Path(out_json)
    if out_json.is_file() and out_json.stat().st_mtime >= Path(ckpt).stat().st_mtime:
        saved = json.loads(out_json.read_text())
        if saved.get("radius") == radius:
            return saved
    model, cfg = load_depth_model(ckpt, torch.device("cpu"))
    ds = KittiDataset(data_root, refs=None, height=cfg.data.height, width=cfg.data.width, context=(),
                      augment=None, with_gt=True, gt_source="auto", training=False)
    whole, band = MetricAccumulator(median_scaling=True), MetricAccumulator(median_scaling=False)
    skipped, band_px = 0, 0
    for i in range(len(ds)):
        item = ds[i]
        if "semantic_gt" not in item:
            raise RuntimeError(f"{item['filename']}: no GT semantic map (synthetic drives have one)")
        gt = item["depth_gt"][0].numpy()
        inv, _ = predict(model, item["rgb"][None], flip=False)
        pred = upsample_depth(1.0 / inv[0, 0].clamp(min=1e-6), gt.shape).numpy()
        m = whole.add(gt, pred)
        mask = boundary_band_mask(item["semantic_gt"].numpy(), radius)
        try:
            band.add(np.where(mask, gt, 0.0), pred, scale=m["scale"])
            band_px += int((mask & (gt > 0)).sum())
        except ValueError:  # no band pixel with valid GT inside the crop
            skipped += 1
    out = {"radius": radius, "all": whole.summary(), "band": band.summary() if len(band) else None,
           "band_frames_skipped": skipped, "band_gt_pixels": band_px}
    out_json.write_text(json.dumps(out, indent=2, default=float))
    return out


# ============================================================================ main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, FULL_BUDGET_MIN)
    p.add_argument("--semantic-minutes", type=float, default=None,
                   help=f"semantic pre-training budget (default {FULL_SEMANTIC_MIN:g}, {QUICK_SEMANTIC_MIN:g} with --quick)")
    p.add_argument("--semantic-init", choices=["cityscapes", "scratch"], default="cityscapes",
                   help="ESPNet initialisation before training on the synthetic labels")
    p.add_argument("--depth-net", choices=sorted(FAMILIES), default="resnet18",
                   help="config family: synthetic_resnet18[_sg] (the issue's) or synthetic_mobilenetv2[_sg]")
    p.add_argument("--band-px", type=float, default=BAND_PX, help="boundary band half-width (pixels)")
    p.add_argument("--skip", choices=list(ARMS), action="append", default=[],
                   help="leave out a depth run (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = budget_of(args, FULL_BUDGET_MIN)
    apply_threads(args)
    sem_budget = args.semantic_minutes if args.semantic_minutes is not None else (
        QUICK_SEMANTIC_MIN if args.quick else FULL_SEMANTIC_MIN)
    root = bench_dir("guided_vs_baseline", args.quick)
    base_cfg, guided_cfg, seg_cfg, seg_extra = FAMILIES[args.depth_net]
    if args.depth_net != "resnet18":
        root = root / args.depth_net  # the semantic net is shared: it is trained at the same input size
    overrides = data_overrides(args.quick, args.frames, args.max_steps)

    # 1. semantic net on other drives
    sem_dir = bench_dir("guided_vs_baseline", args.quick) / "semantic"
    sem_train = drive_roots(BASELINE_CFG, overrides, SEMANTIC_TRAIN_SEEDS)
    sem_val = drive_roots(BASELINE_CFG, overrides, SEMANTIC_VAL_SEEDS)
    sem = train_semantic(sem_dir, sem_train, sem_val, sem_budget, init=args.semantic_init)
    sem_path = Path(sem["weights"])
    print(f"[bench] semantic net: {sem['steps']} steps, held-out pixel acc {sem['val']['pixel_acc']:.3f}, "
          f"mIoU {sem['val']['miou']:.3f}")

    # 2. depth runs
    runs = {
        "baseline": (base_cfg, []),
        "guided": (guided_cfg, [f"model.semantic.weights={sem_path}"]),
        "guided_random": (guided_cfg, ["model.semantic.weights="]),
        "segdepth": (seg_cfg, seg_extra + [f"model.semantic.weights={sem_path}"]),
    }
    test = combined_root(drive_roots(BASELINE_CFG, overrides, TEST_SEEDS), root / "test_data")
    results, rows = {}, []
    for name, (config, extra) in runs.items():
        if name in args.skip:
            continue
        run_dir = root / name
        done = run_training(config, run_dir, budget, overrides + extra)
        ckpt = final_checkpoint(run_dir)
        cli = evaluate_checkpoint(ckpt, test, run_dir / "eval_test_scaled.json", True)
        bandm = band_evaluation(ckpt, test, run_dir / "eval_test_band.json", args.band_px)
        stats = run_stats(run_dir)
        b = bandm["band"] or {}
        results[name] = {
            "config": str(Path(config).relative_to(REPO)), "overrides": overrides + extra,
            "checkpoint": str(ckpt.relative_to(REPO)), **stats, "stop_event": done.get("event"),
            "abs_rel": cli["abs_rel"], "a1": cli["a1"], "rmse": cli["rmse"],
            "class_avg_abs_rel": cli.get("class_avg_abs_rel"),
            "car_abs_rel": cli.get("per_class", {}).get("car", {}).get("abs_rel"),
            "band_abs_rel": b.get("abs_rel"), "band_a1": b.get("a1"), "band_rmse": b.get("rmse"),
            "band_gt_pixels": bandm["band_gt_pixels"], "band_frames_skipped": bandm["band_frames_skipped"],
            "test_images": cli["num_images"],
            "deployed_parameters": deployed_parameters(ckpt),
        }
        if name == "segdepth":
            results[name]["segdepth_loss"] = aux_loss_curve(run_dir, "segdepth")
        rows.append({"run": name, "steps": stats["steps"], "train_min": stats["train_min"],
                     "img/s": stats["images_per_s"], "abs_rel": cli["abs_rel"], "a1": cli["a1"],
                     "class_avg_abs_rel": cli.get("class_avg_abs_rel", float("nan")),
                     f"band{args.band_px:g}px_abs_rel": b.get("abs_rel", float("nan")),
                     f"band{args.band_px:g}px_a1": b.get("a1", float("nan"))})
    print_table(rows)
    delta = {}
    if "baseline" in results:
        for name in ("guided", "guided_random", "segdepth"):
            if name in results:
                delta[name] = {k: results[name][k] - results["baseline"][k]
                               for k in ("abs_rel", "band_abs_rel") if results[name][k] is not None
                               and results["baseline"][k] is not None}
    name = "guided_vs_baseline" + ("" if args.depth_net == "resnet18" else f"_{args.depth_net}")
    path = write_result(name, {
        "depth_net": args.depth_net, "budget_minutes": budget, "resolution": "320x96", "test_seeds": list(TEST_SEEDS),
        "band_px": args.band_px, "semantic_pretraining": {**sem, "train_seeds": list(SEMANTIC_TRAIN_SEEDS),
                                                          "val_seeds": list(SEMANTIC_VAL_SEEDS)},
        "table3_ablation": {"guided_random (I, D-like)": results.get("guided_random", {}).get("abs_rel"),
                            "guided (CS, D-like)": results.get("guided", {}).get("abs_rel")},
        "delta_vs_baseline": delta, "runs": results, "table": rows}, quick=args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
