"""Where a trained model's depth error comes from: per object group and ground-truth depth range.

    python -m experiments.error_breakdown [--quick] [--checkpoint CKPT] [--data ROOT] [--every 5]

For every `--every`-th frame of the held-out synthetic drives (default: the train_synthetic MobileNetV2
run on its test drives 201/202) the median-scaled prediction is compared with the dense ground truth
at the network resolution, split by group (parked cars, moving objects, everything else) and by GT
depth bin. Per cell: pixel share, abs_rel, its share of the overall abs_rel, the mean log(pred/GT)
(> 0: too far), and the per-pixel minimum-reprojection photometric loss (Eq. 2 over the contexts,
true poses) of three depths: the ground truth, the prediction and the ground truth doubled, plus the
un-warped (identity) loss.

Reading it: where photometric(GT) is well below photometric(pred), the objective could tell the
right depth and the optimiser has not found it (a local minimum); where they are equal, the loss
cannot tell (an ambiguity that no amount of training fixes).

Writes experiments/results/error_breakdown.json. --quick: every 20th frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import REPO, print_table, write_result  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "runs" / "bench" / "train_synthetic" / "mobilenetv2" / "best.ckpt"
DEFAULT_DATA = REPO / "runs" / "bench" / "train_synthetic" / "test_data"
BINS = (0.0, 4.0, 8.0, 20.0, 40.0, 80.0)
DEPTHS = ("gt", "pred", "gt_x2")


# ============================================================================ pure helpers

def group_masks(semantic: np.ndarray, dynamic: np.ndarray, car_id: int) -> dict[str, np.ndarray]:
    """Disjoint pixel groups [H,W] bool: static cars, moving objects, everything else."""
    car = semantic == car_id
    return {"parked car": car & ~dynamic, "moving object": dynamic, "other": ~car & ~dynamic}


class Breakdown:
    """Accumulates per (group, depth bin) sums over frames; rows() turns them into the table."""

    def __init__(self, bins=BINS):
        self.bins = tuple(float(b) for b in bins)
        if len(self.bins) < 2 or any(b1 <= b0 for b0, b1 in zip(self.bins[:-1], self.bins[1:])):
            raise ValueError(f"bins must be increasing with at least two edges, got {bins}")
        self.cells: dict[tuple[str, int], dict[str, float]] = {}
        self.total_pixels = 0
        self.total_abs_rel = 0.0

    def add(self, pred: np.ndarray, gt: np.ndarray, groups: dict[str, np.ndarray],
            photometric: dict[str, np.ndarray] | None = None) -> None:
        """pred, gt [H,W] (gt <= 0: no ground truth; pred already median-scaled); photometric: name -> [H,W]."""
        pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
        if pred.shape != gt.shape:
            raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
        valid = (gt > self.bins[0]) & (gt < self.bins[-1]) & np.isfinite(pred) & (pred > 0)
        are = np.zeros_like(gt)
        are[valid] = np.abs(pred[valid] - gt[valid]) / gt[valid]
        logr = np.zeros_like(gt)
        logr[valid] = np.log(pred[valid] / gt[valid])
        self.total_pixels += int(valid.sum())
        self.total_abs_rel += float(are[valid].sum())
        which = np.digitize(gt, self.bins) - 1  # bin index per pixel
        for name, mask in groups.items():
            for b in range(len(self.bins) - 1):
                m = valid & mask & (which == b)
                n = int(m.sum())
                if not n:
                    continue
                c = self.cells.setdefault((name, b), {"n": 0, "abs_rel": 0.0, "log_ratio": 0.0})
                c["n"] += n
                c["abs_rel"] += float(are[m].sum())
                c["log_ratio"] += float(logr[m].sum())
                for key, loss in (photometric or {}).items():
                    c[f"photo_{key}"] = c.get(f"photo_{key}", 0.0) + float(np.asarray(loss)[m].sum())

    def rows(self) -> list[dict]:
        out = []
        for (name, b), c in sorted(self.cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            n = c["n"]
            row = {"group": name, "gt_depth_m": f"{self.bins[b]:g}-{self.bins[b + 1]:g}",
                   "pixel_share": n / self.total_pixels, "abs_rel": c["abs_rel"] / n,
                   "abs_rel_share": c["abs_rel"] / self.total_abs_rel if self.total_abs_rel else 0.0,
                   "mean_log_pred_over_gt": c["log_ratio"] / n}
            row.update({k: v / n for k, v in c.items() if k.startswith("photo_")})
            out.append(row)
        return out

    @property
    def abs_rel(self) -> float:
        return self.total_abs_rel / self.total_pixels if self.total_pixels else float("nan")


def median_scale(pred: np.ndarray, gt: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """pred times median(GT)/median(pred) over the pixels with lo < GT < hi."""
    v = (gt > lo) & (gt < hi)
    if not v.any():
        raise ValueError("no ground-truth pixel in range to median-scale with")
    return pred * (np.median(gt[v]) / np.median(pred[v]))


# ============================================================================ main

def min_reprojection(rgb, contexts, depth, poses, K):
    """Per-pixel min over contexts of Eq. 2 between rgb [1,3,H,W] and each context warped with depth [1,1,H,W]."""
    import torch

    from semdepth_core.geometry.warp import view_synthesis
    from semdepth_core.losses.photometric import photometric_loss

    losses = [photometric_loss(view_synthesis(contexts[c:c + 1], depth, poses[c:c + 1], K, padding_mode="border",
                                              with_valid=False)[0], rgb) for c in range(contexts.shape[0])]
    return torch.cat(losses, 1).min(1).values[0].numpy()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="every 20th frame")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="depth checkpoint (default: the train_synthetic MobileNetV2 run)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="KITTI-format root with dense GT, semantic and dynamic masks and poses (synthetic drives)")
    p.add_argument("--every", type=int, default=5, help="use every N-th frame")
    p.add_argument("--name", default="error_breakdown", help="result name (experiments/results/NAME.json)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.labels import ID
    from semdepth_core.infer.loading import load_models
    from semdepth_core.losses.photometric import photometric_loss

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.checkpoint.is_file():
        raise SystemExit(f"error: checkpoint {args.checkpoint} not found (run benchmarks/train_synthetic.py "
                         "first, or pass --checkpoint)")
    if not args.data.is_dir():
        raise SystemExit(f"error: data root {args.data} not found (pass --data)")
    every = 20 if args.quick else max(1, args.every)
    t0 = time.monotonic()
    models = load_models(args.checkpoint)
    cfg, model = models.config, models.depth_model.eval()
    H, W = cfg.data.height, cfg.data.width
    ds = KittiDataset(args.data, height=H, width=W, context=tuple(cfg.data.context), augment=None,
                      training=False, gt_source="dense")
    bd = Breakdown()

    def at_net(x):  # [h,w] -> [H,W] nearest
        return F.interpolate(torch.as_tensor(x).float().reshape(1, 1, *x.shape[-2:]), size=(H, W),
                             mode="nearest")[0, 0].numpy()

    frames = 0
    for i in range(0, len(ds), every):
        item = ds[i]
        if "pose_gt" not in item or "semantic_gt" not in item or "dynamic_gt" not in item:
            raise SystemExit(f"error: {args.data} lacks poses or semantic / dynamic ground truth (synthetic drives have them)")
        with torch.no_grad():
            inv = model(item["rgb"][None])["inv_depths"][0][0, 0].numpy()
        gt = at_net(item["depth_gt"])
        pred = median_scale(1.0 / np.maximum(inv, 1e-6), gt, BINS[0], BINS[-1])
        fill = np.where((gt > 0) & (gt < 1e3), gt, pred)  # pixels without GT keep the prediction
        K, poses, ctx, rgb = item["K"][None], item["pose_gt"], item["rgb_context"], item["rgb"][None]
        photo = {name: min_reprojection(rgb, ctx, torch.from_numpy(d).float()[None, None], poses, K)
                 for name, d in (("gt", fill), ("pred", pred), ("gt_x2", np.where(gt > 0, 2 * fill, pred)))}
        photo["identity"] = torch.stack([photometric_loss(ctx[c:c + 1], rgb)[0, 0]
                                         for c in range(ctx.shape[0])]).min(0).values.numpy()
        groups = group_masks(at_net(item["semantic_gt"]).astype(np.int64), at_net(item["dynamic_gt"]) > 0, ID["car"])
        bd.add(pred, gt, groups, photo)
        frames += 1
    rows = bd.rows()
    print_table(rows)
    print(f"overall abs_rel (median-scaled, no crop, {frames} frames at {W}x{H}): {bd.abs_rel:.4f}")
    path = write_result(args.name, {"checkpoint": str(args.checkpoint), "data": str(args.data), "frames": frames,
                                    "resolution": f"{W}x{H}", "bins_m": list(BINS), "overall_abs_rel": bd.abs_rel,
                                    "rows": rows, "wall_s": time.monotonic() - t0}, quick=args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
