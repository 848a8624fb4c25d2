"""Early-training probe: does a config's depth collapse, and where do depth scale and pose go?

    python -m experiments.collapse_probe [--quick] [--steps 170] [--threads 1] [--variant NAME ...]

Each variant is training/configs/synthetic_resnet18*.yaml plus `--set` overrides, trained from the
same seed for --steps steps through `training.train.Trainer.train_step` (the trainer's own step,
velocity warm-up included). Every 5 steps it records the photometric and smoothness losses, the
auto-masked fraction, the inverse-depth range of the first image and the median depth, and the
pose net's translation (norm, and t_z per context: with forward motion the t-1 context should have
t_z > 0 and the t+1 context t_z < 0). A run has "collapsed" when smoothness is exactly 0 (constant
depth, saturated sigmoid) for 20 logged steps in a row.

Writes experiments/results/collapse_probe.json; --quick: 20 steps on 16-frame 320x96 drives.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import REPO, print_table, write_result  # noqa: E402
from training.budgeted import CONFIGS, bench_dir, data_overrides  # noqa: E402

# the shipped configs now carry the scale anchor and init_depth 10 (and the velocity configs the
# velocity-on-depth-scale form); the older variants switch them off to keep their meaning
_NO_ANCHOR = ["loss.scale_anchor_weight=0", "model.init_depth=0"]
_BLOG_VELOCITY = ["loss.depth_normalization=false", "loss.scale_anchor_weight=0", "optim.depth_lr=0.0002"]
VARIANTS = {
    # name: (config, overrides)
    "paper_lr": ("synthetic_resnet18.yaml", ["loss.depth_normalization=false", "optim.depth_lr=0.0002"] + _NO_ANCHOR),
    "normalised_lr2e-4": ("synthetic_resnet18.yaml", ["optim.depth_lr=0.0002"] + _NO_ANCHOR),
    "normalised_lr1e-4_no_anchor": ("synthetic_resnet18.yaml", list(_NO_ANCHOR)),
    "shipped (normalised + anchor, lr 1e-4)": ("synthetic_resnet18.yaml", []),
    "velocity": ("synthetic_resnet18_velocity.yaml", _BLOG_VELOCITY + ["model.init_depth=0"]),
    "velocity_init10m": ("synthetic_resnet18_velocity.yaml", _BLOG_VELOCITY + ["model.init_depth=10"]),
    "velocity_init10m_warmup80": ("synthetic_resnet18_velocity.yaml",
                                  _BLOG_VELOCITY + ["model.init_depth=10", "loss.velocity_warmup_steps=80"]),
    "velocity_on_depth_scale (shipped)": ("synthetic_resnet18_velocity.yaml", []),
    # the PAC-guided MobileNetV2 config with guided_vs_baseline's synthetic-trained ESPNet ({semantic})
    "mnv2_guided_lr2e-4": ("synthetic_mobilenetv2_sg.yaml", ["model.semantic.weights={semantic}"] + _NO_ANCHOR),
    "mnv2_guided_lr1e-4": ("synthetic_mobilenetv2_sg.yaml", ["model.semantic.weights={semantic}",
                                                            "optim.depth_lr=0.0001"] + _NO_ANCHOR),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if not v.startswith("mnv2_guided")]
COLLAPSE_RUN = 20


def probe(config: str, overrides: list[str], steps: int, out_dir: Path) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from semdepth_core.config import load_config
    from semdepth_core.data.dataset import collate
    # imported here, not at the top: the probe's module stays light (its --help and tables need no torch)
    from training.data import build_datasets
    from training.train import Trainer

    cfg = load_config(str(CONFIGS / config), overrides + [f"train.out_dir={out_dir}", "train.tensorboard=false"])
    trainer = Trainer(cfg, torch.device("cpu"))
    data = build_datasets(cfg, 0, 1)[0]
    gen = torch.Generator().manual_seed(cfg.train.seed)
    trace, flat, collapsed_at, t0 = [], 0, None, time.monotonic()
    while trainer.global_step < steps:
        for batch in DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, collate_fn=collate,
                                num_workers=0, generator=gen, drop_last=True):
            if trainer.global_step >= steps:
                break
            values, _, sample = trainer.train_step(batch)
            trainer.global_step += 1
            flat = flat + 1 if values["smoothness"] == 0.0 else 0
            if flat == COLLAPSE_RUN and collapsed_at is None:
                collapsed_at = trainer.global_step - COLLAPSE_RUN + 1
            if trainer.global_step % 5 == 0 or trainer.global_step == 1:
                with torch.no_grad():
                    inv = sample["inv_depth"]
                    ctx = batch["rgb_context_aug"]
                    pv = trainer.pose_net(batch["rgb_aug"], [ctx[:, j] for j in range(ctx.shape[1])])
                trace.append({"step": trainer.global_step, "photometric": values["photometric"],
                              "smoothness": values["smoothness"], "automask": values["automask_fraction"],
                              "inv_min": float(inv.min()), "inv_max": float(inv.max()),
                              "depth_median": float((1.0 / inv).median()),
                              "t_norm": float(pv[..., :3].norm(dim=-1).mean()),
                              "tz_per_context": [float(v) for v in pv[..., 2].mean(0)]})
    last = trace[-5:]
    return {"config": config, "overrides": overrides, "steps": steps, "wall_s": time.monotonic() - t0,
            "collapsed_at_step": collapsed_at,
            "last_photometric": sum(r["photometric"] for r in last) / len(last),
            "last_automask": sum(r["automask"] for r in last) / len(last),
            "last": trace[-1], "trace": trace}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="steps per variant (default 170, 20 with --quick)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                   help="repeatable; default: all but the mnv2_guided ones (they need guided_vs_baseline's semantic net)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 170)
    root = bench_dir("collapse_probe", args.quick)
    base = data_overrides(args.quick)
    results, rows = {}, []
    for name in args.variant or DEFAULT_VARIANTS:
        config, extra = VARIANTS[name]
        if any("{semantic}" in e for e in extra):
            import json

            meta = bench_dir("guided_vs_baseline", args.quick) / "semantic" / "meta.json"
            if not meta.is_file():
                raise SystemExit(f"error: variant {name} needs the semantic net of guided_vs_baseline.py ({meta})")
            extra = [e.replace("{semantic}", json.loads(meta.read_text())["weights"]) for e in extra]
        r = probe(config, base + extra, steps, root / "runs")
        results[name] = r
        rows.append({"variant": name, "collapsed_at": r["collapsed_at_step"] or "-",
                     "photometric(last)": r["last_photometric"], "automask(last)": r["last_automask"],
                     "depth_median": r["last"]["depth_median"], "|t|": r["last"]["t_norm"],
                     "tz(t-1,t+1)": "/".join(f"{v:+.3f}" for v in r["last"]["tz_per_context"])})
    print_table(rows)
    path = write_result("collapse_probe", {"steps": steps, "variants": results, "table": rows}, args.quick)
    print(f"wrote {path} ({REPO.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
