"""Training step cost on CPU: what the SfM losses and warping add over the networks' forward+backward.

    python benchmarks/train_step_cost.py [--quick]

Same batch (a synthetic drive, 320x96, batch 4, ResNet-18 depth + PoseNet, 2 context frames):
  nets  = depth + pose forward and backward of a trivial loss on their outputs
  full  = the same forward, the paper's objective (Eq. 1: multi-scale warping, SSIM/L1 min
          reprojection with auto-masking, smoothness) and backward
overhead = (full - nets) / nets. Target <= 30 %. Median of repeated, interleaved timings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import print_table, write_result  # noqa: E402
from semdepth_core.config import Config, LossConfig  # noqa: E402
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    reps = 3 if args.quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        generate_drive(Path(tmp), frames=8, seed=3, width=320, height=96)
        rows = [run("resnet18", 4, 96, 320, reps, Path(tmp))]
        if not args.quick:
            rows.append(run("mobilenetv2", 4, 96, 320, reps, Path(tmp)))
    print_table(rows, ["depth_net", "batch", "size", "nets_ms", "full_ms", "loss_overhead", "meets_target"])
    path = write_result("train_step_cost", {"rows": rows, "torch_threads": torch.get_num_threads()}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
