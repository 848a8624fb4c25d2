"""Reproduce the embedded default weights (semdepth_ros/weights/default.ckpt) from scratch.

    python -m training.make_default [--out semdepth_ros/weights/default.ckpt] [--quick] [--work-dir DIR]

One training run, `python -m training.train --config training/configs/real.yaml`, seeded and
bounded by the config's step count (train.max_steps), so it is reproducible on any machine; about 75
minutes on the 2-core CPU this project is measured on. It trains on the real data in ../shared/data
except KITTI drive 0023 (the benchmark's held-out Eigen test drive):
  - KITTI raw drive 0001 (colour stereo, OXTS), both cameras as targets;
  - the two KITTI odometry snippets (greyscale stereo, metric poses), both cameras as targets;
and on four synthetic drives, with the ImageNet MobileNetV2 (MIT) as depth and pose encoder, the
stereo pair as a calibrated context, velocity supervision and SGBM depth hints. The frozen Cityscapes
ESPNet (MIT) is the model's semantic network (the node's labels); in this recipe it does not guide the
depth decoder (docs/experiments.md, "Real images": unguided was better at this step budget).
The last checkpoint is slimmed to fp16 network weights (`semdepth_core.checkpoint.slim_checkpoint`);
the frozen ESPNet's weights are part of the depth model's state, so no external file is needed at
inference. The recipe, data, seed, steps, training time and licences are recorded under "provenance".
`python -m benchmarks.real_transfer --checkpoint semdepth_ros/weights/default.ckpt` scores it on
drive 0023. A finished or interrupted run under the work dir is resumed (delete it to start over).
--quick runs a seconds-long version that produces a checkpoint of the same architecture.
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
from training import train
from training.runtime import resolve_path

DEPTH_CONFIG = REPO_ROOT / "training" / "configs" / "real.yaml"
DEFAULT_OUT = REPO_ROOT / "semdepth_ros" / "weights" / "default.ckpt"
LICENCES = {
    "weights": "CC BY-NC-SA 3.0 (non-commercial): trained on KITTI raw and KITTI odometry images "
               "(Geiger et al., CC BY-NC-SA 3.0)",
    "semantic_net": "ESPNet Cityscapes weights (Mehta et al., ECCV 2018), MIT licence "
                    "(semdepth_ros/weights/LICENSE-weights.md)",
    "encoder_init": "MobileNetV2 ImageNet weights, MIT licence",
}


def _sources(cfg) -> list[str]:
    out = []
    for s in cfg.data.sources:
        what = {"kitti": "KITTI raw", "odometry": "KITTI odometry", "synthetic": "synthetic drives"}[s.kind]
        detail = [f"root {s.root}"] if s.root else [f"seeds {s.seeds}"]
        if s.exclude_drives:
            detail.append(f"without {', '.join(s.exclude_drives)}")
        if s.drives:
            detail.append(f"only {', '.join(s.drives)}")
        detail.append(f"cameras {s.cams or 'default'}")
        if s.repeat > 1:
            detail.append(f"repeated x{s.repeat}")
        out.append(f"{what} ({'; '.join(detail)})")
    return out


def make_default(out: Path, quick: bool = False, work_dir: str | None = None) -> dict:
    import torch

    work = work_dir or ("runs/default_quick" if quick else "runs/default")
    over = [f"train.out_dir={work}"]
    if quick:  # two steps, and tiny synthetic drives rendered into the work dir
        over += ["train.max_steps=2", "train.epochs=1", "data.batch_size=2", "train.tensorboard=false",
                 "data.synthetic.frames=4", "data.synthetic.render_width=320", "data.synthetic.render_height=96",
                 f"data.synthetic.cache_dir={work}/synthetic"]
    cfg = load_config(DEPTH_CONFIG, over)
    run_dir = resolve_path(work) / cfg.train.name

    t0 = time.time()
    argv = ["--config", str(DEPTH_CONFIG), "--resume", "auto"]
    for o in over:
        argv += ["--set", o]
    rc = train.main(argv)
    if rc != 0:
        raise RuntimeError(f"depth training failed (exit {rc})")
    src = run_dir / "last.ckpt"
    ckpt = load_checkpoint(src)

    provenance = {
        "recipe": "python -m training.make_default" + (" --quick" if quick else ""),
        "depth_config": str(DEPTH_CONFIG.relative_to(REPO_ROOT)),
        "trained_on": _sources(cfg),
        "held_out": "KITTI raw 2011_09_26_drive_0023 (Eigen test drive; benchmarks/real_transfer.py)",
        "metric_scale": "from the stereo baseline and the OXTS / odometry speeds of the training data",
        "licences": LICENCES,
        "seed": cfg.train.seed,
        "depth_steps": int(ckpt.get("global_step", 0)),
        "train_minutes": round(float(ckpt.get("elapsed_s", 0.0)) / 60.0, 1),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "source_checkpoint": src.name,
        "depth_train_seconds_this_call": round(time.time() - t0, 1),
    }
    slim = slim_checkpoint(ckpt, half=True, provenance=provenance)
    slim["config"] = copy.deepcopy(slim["config"])
    model_cfg = slim["config"]["model"]
    # every weight lives in the checkpoint: no external file is read at inference
    model_cfg["semantic"]["weights"] = ""
    model_cfg["pretrained"] = ""
    model_cfg["pose_pretrained"] = ""
    atomic_write_bytes(out, lambda f: torch.save(slim, f))
    size_kib = out.stat().st_size // 1024
    print(f"wrote {out} ({size_kib} KiB) from {src}: {provenance['depth_steps']} steps, "
          f"{provenance['train_minutes']} min of training")
    print(json.dumps(provenance, indent=2))
    return {"out": str(out), "size_kib": size_kib, **provenance}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.make_default", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="two training steps (checks the recipe, not the weights)")
    p.add_argument("--work-dir", help="where the run goes (default runs/default, runs/default_quick with --quick)")
    args = p.parse_args(argv)
    make_default(Path(args.out).resolve(), args.quick, args.work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
