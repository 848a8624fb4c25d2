"""Training step cost on CPU: what the SfM losses and warping add over the networks' forward+backward,
and what semantic guidance (PAC decoder) adds over the unguided network.

    python benchmarks/train_step_cost.py [--quick] [--threads 1,2]

Same batch (a synthetic drive, 320x96, batch 4, ResNet-18 depth + PoseNet, 2 context frames):
  nets  = depth + pose forward and backward of a trivial loss on their outputs
  full  = the same forward, the paper's objective (Eq. 1: multi-scale warping, SSIM/L1 min
          reprojection with auto-masking, smoothness) and backward
overhead = (full - nets) / nets. Target <= 30 %. Median of repeated, interleaved timings.

Guided vs unguided ("guided" rows): full training steps of training/configs/synthetic_resnet18.yaml
against its guided sibling synthetic_resnet18_sg.yaml (PAC decoder, layer sigma, frozen ESPNet;
weights files are not needed for timing and are not loaded), at each thread count, interleaved:
  unguided_ms  the unguided step
  guided_ms    the guided step with the semantic features precomputed, as training runs with
               train.cache_semantics: true (the frozen ESPNet then runs once per image, not per step)
  guided_sem_ms  the guided step with the frozen ESPNet forward inside the step (the default,
               train.cache_semantics: false)
guided_ratio = guided_ms / unguided_ms; goal <= 1.3.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import print_table, thread_list, write_result  # noqa: E402
from semdepth_core.config import Config, LossConfig, load_config  # noqa: E402
from semdepth_core.data.dataset import KittiDataset, collate  # noqa: E402
from semdepth_core.data.synthetic import generate_drive  # noqa: E402
from semdepth_core.losses.sfm import SfmLoss  # noqa: E402
from semdepth_core.nets.model import build_models  # noqa: E402


def make_batch(root: Path, batch: int, h: int, w: int) -> dict:
    ds = KittiDataset(root, height=h, width=w, augment=None, with_gt=False, training=True)
    return collate([ds[i] for i in range(batch)])


def time_step(depth, pose, batch, loss_fn: SfmLoss | None) -> float:
    t0 = time.perf_counter()
    out = depth(batch["rgb_aug"])
    ctx = batch["rgb_context_aug"]
    vecs = pose(batch["rgb_aug"], [ctx[:, j] for j in range(ctx.shape[1])])
    if loss_fn is None:
        loss = sum(inv.mean() for inv in out["inv_depths"]) + vecs.abs().mean()
    else:
        loss = loss_fn(batch, out["inv_depths"], vecs, batch["K"])["total"]
    loss.backward()
    depth.zero_grad(set_to_none=True)
    pose.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run(depth_net: str, batch_size: int, h: int, w: int, reps: int, root: Path) -> dict:
    cfg = Config()
    cfg.model.depth_net = depth_net
    torch.manual_seed(0)
    depth, pose = build_models(cfg.model, 2)
    depth.train(), pose.train()
    batch = make_batch(root, batch_size, h, w)
    loss_fn = SfmLoss(LossConfig())
    for _ in range(2):  # warm-up
        time_step(depth, pose, batch, None)
        time_step(depth, pose, batch, loss_fn)
    nets, full = [], []
    for _ in range(reps):  # interleaved so machine noise hits both alike
        nets.append(time_step(depth, pose, batch, None))
        full.append(time_step(depth, pose, batch, loss_fn))
    n, f = statistics.median(nets), statistics.median(full)
    return {"depth_net": depth_net, "batch": batch_size, "size": f"{w}x{h}", "nets_ms": 1e3 * n,
            "full_ms": 1e3 * f, "loss_overhead": (f - n) / n, "target_overhead": 0.30,
            "meets_target": (f - n) / n <= 0.30, "reps": reps}


CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"


def _guided_models(name: str):
    """Depth + pose nets of a training config, without its weights files (timing only)."""
    cfg = load_config(CONFIGS / f"{name}.yaml", ["model.pose_pretrained=", "model.semantic.weights="])
    torch.manual_seed(0)
    depth, pose = build_models(cfg.model, len(cfg.data.context))
    depth.train(), pose.train()
    return cfg, depth, pose


def guided_step(depth, pose, batch, loss_fn, sem=None, with_semantics=False) -> float:
    """One full training step (forward, Eq. 1 objective, backward); sem = precomputed semantic output."""
    t0 = time.perf_counter()
    out = depth(batch["rgb_aug"], semantic=sem, with_semantics=with_semantics)
    ctx = batch["rgb_context_aug"]
    vecs = pose(batch["rgb_aug"], [ctx[:, j] for j in range(ctx.shape[1])])
    loss = loss_fn(batch, out["inv_depths"], vecs, batch["K"])["total"]
    loss.backward()
    depth.zero_grad(set_to_none=True)
    pose.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run_guided(threads: int, reps: int, root: Path) -> dict:
    """Unguided vs guided full training step at `threads` intra-op threads (interleaved medians)."""
    torch.set_num_threads(threads)
    cfg_u, depth_u, pose_u = _guided_models("synthetic_resnet18")
    cfg_g, depth_g, pose_g = _guided_models("synthetic_resnet18_sg")
    batch = make_batch(root, cfg_u.data.batch_size, cfg_u.data.height, cfg_u.data.width)
    loss_u, loss_g = SfmLoss(cfg_u.loss), SfmLoss(cfg_g.loss)
    with torch.no_grad():
        sem = depth_g.run_semantic(batch["rgb_aug"])  # what train.cache_semantics hands the model
    steps = {
        "unguided": lambda: guided_step(depth_u, pose_u, batch, loss_u),
        "guided": lambda: guided_step(depth_g, pose_g, batch, loss_g, sem=sem),
        "guided_sem": lambda: guided_step(depth_g, pose_g, batch, loss_g),
    }
    for f in steps.values():  # warm-up (builds the fused PAC kernel on first use)
        f()
    times = {k: [] for k in steps}
    load0 = os.getloadavg()[0]
    for _ in range(reps):
        for k, f in steps.items():
            times[k].append(f())
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    from semdepth_core.nets import _native_pac

    return {"threads": threads, "batch": cfg_u.data.batch_size, "size": f"{cfg_u.data.width}x{cfg_u.data.height}",
            "unguided_ms": ms["unguided"], "guided_ms": ms["guided"], "guided_sem_ms": ms["guided_sem"],
            "guided_ratio": ms["guided"] / ms["unguided"], "guided_sem_ratio": ms["guided_sem"] / ms["unguided"],
            "goal_ratio": 1.3, "meets_goal": ms["guided"] / ms["unguided"] <= 1.3,
            "native_pac": _native_pac.load() is not None, "reps": reps,
            "loadavg_1min": [load0, os.getloadavg()[0]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=thread_list, default=[1, 2],
                   help="thread counts for the guided-vs-unguided rows, e.g. 1,2")
    args = p.parse_args(argv)
    reps = 3 if args.quick else 15
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        generate_drive(Path(tmp), frames=8, seed=3, width=320, height=96)
        rows = [run("resnet18", 4, 96, 320, reps, Path(tmp))]
        if not args.quick:
            rows.append(run("mobilenetv2", 4, 96, 320, reps, Path(tmp)))
        guided = [run_guided(n, 3 if args.quick else 9, Path(tmp)) for n in args.threads]
        torch.set_num_threads(default_threads)
    print_table(rows, ["depth_net", "batch", "size", "nets_ms", "full_ms", "loss_overhead", "meets_target"])
    print_table(guided, ["threads", "batch", "size", "unguided_ms", "guided_ms", "guided_ratio", "guided_sem_ms",
                         "guided_sem_ratio", "meets_goal", "native_pac"])
    path = write_result("train_step_cost", {"rows": rows, "torch_threads": default_threads, "guided": guided},
                        args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
