"""Reproduce the embedded default weights (semdepth_ros/weights/default.ckpt) from scratch.

    python -m training.make_default [--out semdepth_ros/weights/default.ckpt] [--quick]

1. Synthetic KITTI-format drives: seeds 301-303 (+311 for validation) for the semantic net, and the
   depth config's train/val seeds (1-4, 101) — disjoint, as the paper's semantic net is pretrained
   on a held-out dataset.
2. The semantic net: `training.train_semantic` with training/configs/default_semantic.yaml (ESPNet
   from scratch on the synthetic ground-truth labels).
3. The depth + pose networks: `training.train` with training/configs/default_sg.yaml, the semantic
   net frozen (its weights from step 2), velocity supervision for metric depth.
4. The best-by-validation checkpoint, slimmed to fp16 network weights (`semdepth_core.checkpoint.
   slim_checkpoint`), with the recipe, seeds and measured metrics recorded under "provenance".

Each step resumes/reuses finished work under runs/default (delete it to start over). --quick runs a
seconds-long version (tiny drives and budgets) that produces a checkpoint of the same architecture.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from semdepth_core.checkpoint import atomic_write_bytes, load_checkpoint, slim_checkpoint
from semdepth_core.config import load_config
from semdepth_core.paths import REPO_ROOT

SEMANTIC_CONFIG = REPO_ROOT / "training" / "configs" / "default_semantic.yaml"
DEPTH_CONFIG = REPO_ROOT / "training" / "configs" / "default_sg.yaml"
DEFAULT_OUT = REPO_ROOT / "semdepth_ros" / "weights" / "default.ckpt"
SEMANTIC_TRAIN_SEEDS = (301, 302, 303)
SEMANTIC_VAL_SEEDS = (311,)


def make_default(out: Path, quick: bool = False, work_dir: str | None = None,
                 semantic_minutes: float | None = None, depth_minutes: float | None = None) -> dict:
    import torch

    from training import train, train_semantic

    work = work_dir or ("runs/default_quick" if quick else "runs/default")
    depth_over = [f"train.out_dir={work}"]
    if quick:
        depth_over += ["data.synthetic.frames=6", "data.synthetic.train_seeds=[1]", "data.synthetic.val_seeds=[101]",
                       "train.max_steps=2", "train.epochs=1", "data.batch_size=2", "train.tensorboard=false"]
    if depth_minutes is not None:
        depth_over.append(f"train.max_minutes={depth_minutes}")
    cfg = load_config(DEPTH_CONFIG, depth_over)

    # 1. drives for the semantic net (same renderer settings as the depth drives, other seeds)
    sem_cfg = copy.deepcopy(cfg)
    roots = [str(train.synthetic_drive_root(sem_cfg, s)) for s in SEMANTIC_TRAIN_SEEDS[: 1 if quick else None]]
    val_roots = [str(train.synthetic_drive_root(sem_cfg, s)) for s in SEMANTIC_VAL_SEEDS]

    # 2. semantic net (reused when already trained)
    sem_dir = train.resolve_path(work) / "semantic"
    sem_ckpt = sem_dir / "semantic_last.pth"
    sem_metrics: dict = {}
    if not sem_ckpt.is_file():
        over = [f"data.roots={json.dumps(roots)}", f"data.val_roots={json.dumps(val_roots)}",
                f"train.out_dir={train.resolve_path(work)}", "train.name=semantic"]
        if quick:
            over += ["optim.iterations=3", "data.batch_size=2"]
        if semantic_minutes is not None:
            over.append(f"train.max_minutes={semantic_minutes}")
        sem_metrics = train_semantic.train(train_semantic.load_train_config(str(SEMANTIC_CONFIG), over))
    else:
        print(f"reusing semantic net {sem_ckpt}")
        log = sem_dir / "log.jsonl"
        if log.is_file():  # its final validation, for the provenance record
            vals = [json.loads(line) for line in log.read_text().splitlines() if '"pixel_acc"' in line]
            sem_metrics = vals[-1] if vals else {}

    # 3. depth + pose, guided by the frozen semantic net (resumes an interrupted run)
    t0 = time.time()
    argv = ["--config", str(DEPTH_CONFIG), "--resume", "auto", "--set", f"model.semantic.weights={sem_ckpt}"]
    for o in depth_over:
        argv += ["--set", o]
    rc = train.main(argv)
    if rc != 0:
        raise RuntimeError(f"depth training failed (exit {rc})")
    run_dir = train.resolve_path(work) / cfg.train.name
    best = run_dir / "best.ckpt"
    src = best if best.is_file() else run_dir / "last.ckpt"
    ckpt = load_checkpoint(src)

    # 4. slim, record provenance, write atomically
    provenance = {
        "recipe": "python -m training.make_default" + (" --quick" if quick else ""),
        "depth_config": str(DEPTH_CONFIG.relative_to(REPO_ROOT)),
        "semantic_config": str(SEMANTIC_CONFIG.relative_to(REPO_ROOT)),
        "semantic_seeds": list(SEMANTIC_TRAIN_SEEDS), "semantic_val_seeds": list(SEMANTIC_VAL_SEEDS),
        "depth_seed": cfg.train.seed, "train_seeds": list(cfg.data.synthetic.train_seeds),
        "val_seeds": list(cfg.data.synthetic.val_seeds), "source_checkpoint": src.name,
        "semantic_val": {k: v for k, v in sem_metrics.items() if isinstance(v, (int, float))},
        "depth_budget_minutes": cfg.train.max_minutes, "depth_steps": int(ckpt.get("global_step", 0)), "best_val_abs_rel": float(ckpt.get("best_abs_rel", float("nan"))),
        "depth_train_seconds_this_call": round(time.time() - t0, 1),
    }
    slim = slim_checkpoint(ckpt, half=True, provenance=provenance)
    slim["config"] = copy.deepcopy(slim["config"])
    slim["config"]["model"]["semantic"]["weights"] = ""  # the weights live in depth_model; no external file
    slim["config"]["model"]["pretrained"] = ""
    atomic_write_bytes(out, lambda f: torch.save(slim, f))
    size_kib = out.stat().st_size // 1024
    print(f"wrote {out} ({size_kib} KiB) from {src}: steps {provenance['depth_steps']}, "
          f"best val abs_rel {provenance['best_val_abs_rel']:.4f}")
    return {"out": str(out), "size_kib": size_kib, **provenance}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.make_default", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="tiny drives and budgets (checks the recipe, not the weights)")
    p.add_argument("--work-dir", help="where the runs go (default runs/default, runs/default_quick with --quick)")
    p.add_argument("--semantic-minutes", type=float, help="override the semantic training budget")
    p.add_argument("--depth-minutes", type=float, help="override the depth training budget")
    args = p.parse_args(argv)
    make_default(Path(args.out).resolve(), args.quick, args.work_dir, args.semantic_minutes, args.depth_minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
