"""Which network limits early self-supervised training: the depth net, or the pose net feeding it?

    python -m experiments.pose_oracle [--quick] [--steps 600] [--threads 1] [--arm NAME ...]

Arms, all from training/configs/synthetic_mobilenetv2.yaml (same seed, data order and 16 drives),
trained through `training.train.Trainer.train_step`:
  predicted   the config as shipped: the pose net's poses warp the context frames
  gt_pose     the pose net's output replaced by the true T_ctx_tgt of the synthetic drive (metric), so
              depth is trained without scale normalisation (metric pose fixes the scale)
  velocity    synthetic_mobilenetv2_velocity.yaml: predicted poses, depth scale set by the velocity
Every 100 steps: median-scaled abs_rel of the dense GT depth on every 6th frame of the validation
drive (seed 101), the median GT/pred ratio (1 = metric), the mean photometric loss and auto-masked
fraction of the last 100 steps, and for the predicted poses the translation direction (cosine to the
true one) and the rotation error in degrees on the current batch.

Writes experiments/results/pose_oracle.json; --quick: 20 steps on 16-frame 320x96 drives.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import REPO, print_table, write_result  # noqa: E402
from training.budgeted import CONFIGS, bench_dir, data_overrides  # noqa: E402

ARMS = {
    "predicted": ("synthetic_mobilenetv2.yaml", []),
    "gt_pose": ("synthetic_mobilenetv2.yaml", ["loss.depth_normalization=false", "loss.scale_anchor_weight=0"]),
    "velocity": ("synthetic_mobilenetv2_velocity.yaml", []),
}


def pose_errors(pred_vecs, pose_gt) -> tuple[float, float]:
    """(mean cosine between predicted and true translation, mean rotation error in degrees)."""
    import torch

    from semdepth_core.geometry.se3 import pose_vec_to_mat

    T = pose_vec_to_mat(pred_vecs.reshape(-1, 6))
    G = pose_gt.reshape(-1, 4, 4).to(T.dtype)
    cos = torch.nn.functional.cosine_similarity(T[:, :3, 3], G[:, :3, 3], dim=1).mean()
    R = T[:, :3, :3].transpose(1, 2) @ G[:, :3, :3]
    angle = torch.acos(((R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    return float(cos), float(torch.rad2deg(angle).mean())


def run_arm(name: str, steps: int, quick: bool, out_dir: Path) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from semdepth_core.config import load_config
    from semdepth_core.data.dataset import collate
    from semdepth_core.geometry.se3 import mat_to_pose_vec
    # imported here, not at the top: the probe's module stays light (its --help and tables need no torch)
    from training.data import build_datasets
    from training.train import Trainer

    config, extra = ARMS[name]
    cfg = load_config(str(CONFIGS / config), data_overrides(quick) + extra
                      + [f"train.out_dir={out_dir}", "train.tensorboard=false"])
    trainer = Trainer(cfg, torch.device("cpu"))
    train, val = build_datasets(cfg, 0, 1)[:2]
    val_items = [val[i] for i in range(0, len(val), 6)]
    oracle = name == "gt_pose"
    if oracle:
        class _TruePose(torch.nn.Module):  # stands in for the pose net inside train_step
            vecs = None

            def forward(self, target, contexts):
                return self.vecs

        true_pose = _TruePose()
        trainer.pose_ddp = true_pose

    def evaluate() -> tuple[float, float]:
        model = trainer.depth_model
        model.eval()
        errs, ratios = [], []
        with torch.no_grad():
            for item in val_items:
                gt = item["depth_gt"][None]  # [1,1,H,W], 0 = no depth (sky)
                inv = model(item["rgb"][None])["inv_depths"][0]
                pred = 1.0 / F.interpolate(inv, size=gt.shape[-2:], mode="bilinear", align_corners=False)
                valid = gt > 0
                p, g = pred[valid], gt[valid]
                ratios.append(float(g.median() / p.median()))
                p = p * ratios[-1]
                errs.append(float(((p - g).abs() / g).mean()))
        model.train()
        return float(np.mean(errs)), float(np.median(ratios))

    every = 10 if quick else 100
    gen = torch.Generator().manual_seed(cfg.train.seed)
    trace, photo, masked, t0 = [], [], [], time.monotonic()
    abs_rel, ratio = evaluate()
    trace.append({"step": 0, "abs_rel": abs_rel, "gt_pred_ratio": ratio})
    while trainer.global_step < steps:
        for batch in DataLoader(train, batch_size=cfg.data.batch_size, shuffle=True, collate_fn=collate,
                                num_workers=0, generator=gen, drop_last=True):
            if trainer.global_step >= steps:
                break
            if oracle:
                true_pose.vecs = mat_to_pose_vec(batch["pose_gt"])  # [B,N,6] of T_ctx_tgt
            values, _, _ = trainer.train_step(batch)
            trainer.global_step += 1
            photo.append(values["photometric"])
            masked.append(values["automask_fraction"])
            if trainer.global_step % every == 0:
                abs_rel, ratio = evaluate()
                rec = {"step": trainer.global_step, "abs_rel": abs_rel, "gt_pred_ratio": ratio,
                       "photometric": float(np.mean(photo[-every:])), "automask": float(np.mean(masked[-every:])),
                       "wall_s": time.monotonic() - t0}
                if not oracle:
                    with torch.no_grad():
                        ctx = batch["rgb_context"]
                        vecs = trainer.pose_net(batch["rgb"], [ctx[:, j] for j in range(ctx.shape[1])])
                    rec["t_cos"], rec["rot_err_deg"] = pose_errors(vecs, batch["pose_gt"])
                trace.append(rec)
                print(f"[{name}] " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()), flush=True)
    return {"config": config, "overrides": extra, "steps": steps, "trace": trace, "last": trace[-1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="steps per arm (default 600, 20 with --quick)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--arm", action="append", choices=sorted(ARMS), help="repeatable; default: all")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 600)
    root = bench_dir("pose_oracle", args.quick)
    results, rows = {}, []
    for name in args.arm or list(ARMS):
        r = run_arm(name, steps, args.quick, root / "runs")
        results[name] = r
        last = r["last"]
        rows.append({"arm": name, "steps": steps, "abs_rel": last["abs_rel"], "gt/pred": last["gt_pred_ratio"],
                     "photometric": last.get("photometric", float("nan")),
                     "automask": last.get("automask", float("nan")),
                     "t_cos": last.get("t_cos", float("nan")), "rot_err_deg": last.get("rot_err_deg", float("nan"))})
    print_table(rows)
    path = write_result("pose_oracle", {"arms": results, "table": rows}, args.quick)
    print(f"wrote {path} ({REPO.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
