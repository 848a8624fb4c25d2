"""KITTI Eigen-protocol depth metrics, per-class metrics and the infinite-depth measure (paper §5).

Protocol (as in Eigen et al. 2014 / Garg et al. 2016 / monodepth2): valid pixels have
min_depth < gt < max_depth, intersected with the Garg crop; the prediction (already at GT
resolution) is optionally multiplied by median(gt)/median(pred) over valid pixels, then clamped to
[min_depth, max_depth]; errors are computed over valid pixels and averaged over images.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from semdepth_core.data import labels as L

METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
LOWER_IS_BETTER = ("abs_rel", "sq_rel", "rmse", "rmse_log")
# rows [top, bottom), cols [left, right) as fractions of the GT size (Garg et al. 2016)
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
INFINITE_FACTOR = 2.0  # a dynamic-object pixel counts as "infinite" beyond 2x its GT depth (or >= max_depth)

# per-pixel error sums used for pooled (per-class) metrics
_SUM_KEYS = ("n", "abs_rel", "sq_rel", "sq", "sq_log", "a1", "a2", "a3")


def _to_np(x, name: str) -> np.ndarray:
    """numpy/torch array -> float64 numpy with singleton leading dims removed; must end up 2-D."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [H,W] map, got shape {np.shape(x)}")
    return a


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean [H,W] mask of the Garg crop (the integer bounds used by the standard evaluation code)."""
    t, b = int(GARG_CROP[0] * height), int(GARG_CROP[1] * height)
    left, r = int(GARG_CROP[2] * width), int(GARG_CROP[3] * width)
    m = np.zeros((height, width), dtype=bool)
    m[t:b, left:r] = True
    return m


def _error_terms(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-pixel terms [8, N]: 1, |e|/gt, e^2/gt, e^2, (log gt - log pred)^2, delta indicators."""
    diff = gt - pred
    thresh = np.maximum(gt / pred, pred / gt)
    return np.stack([
        np.ones_like(gt),
        np.abs(diff) / gt,
        diff**2 / gt,
        diff**2,
        (np.log(gt) - np.log(pred)) ** 2,
        thresh < 1.25,
        thresh < 1.25**2,
        thresh < 1.25**3,
    ])


def _metrics_from_sums(s: np.ndarray) -> dict[str, float]:
    """Pooled sums [8] (see _SUM_KEYS) -> the seven KITTI metrics."""
    n = s[0]
    return {
        "abs_rel": float(s[1] / n),
        "sq_rel": float(s[2] / n),
        "rmse": float(math.sqrt(s[3] / n)),
        "rmse_log": float(math.sqrt(s[4] / n)),
        "a1": float(s[5] / n),
        "a2": float(s[6] / n),
        "a3": float(s[7] / n),
    }


def _evaluate(gt, pred, median_scaling, garg_crop, min_depth, max_depth, scale):
    """Shared core: returns (metrics dict, valid mask, per-pixel terms [8,N], scaled pred before clamp)."""
    gt = _to_np(gt, "gt").astype(np.float64)
    pred = _to_np(pred, "pred").astype(np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}; resize with upsample_depth first")
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    if scale is not None and median_scaling:
        raise ValueError("give either median_scaling=True or a fixed scale, not both")
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    valid = (gt > min_depth) & (gt < max_depth)
    if garg_crop:
        valid &= garg_crop_mask(*gt.shape)
    if not valid.any():
        raise ValueError("no valid ground-truth pixels (min_depth < gt < max_depth inside the crop)")
    p = pred[valid]
    if np.isnan(p).any():
        raise ValueError("pred contains NaN at valid ground-truth pixels")
    g = gt[valid]
    med_p = float(np.median(p))
    if median_scaling and not (0 < med_p < np.inf):
        raise ValueError(f"median scaling needs a positive finite median prediction, got {med_p}")
    ratio = float(np.median(g)) / med_p if 0 < med_p < np.inf else float("nan")
    s = ratio if median_scaling else (1.0 if scale is None else float(scale))
    p_scaled = p * s  # before clamping (infinite-depth check)
    terms = _error_terms(g, np.clip(p_scaled, min_depth, max_depth))
    m = _metrics_from_sums(terms.sum(axis=1))
    m.update(scale=s, ratio=ratio, num_pixels=int(valid.sum()))
    return m, valid, terms, p_scaled, g


def spread_stats(values) -> dict:
    """median / mean / std / min / max and count of per-image values (e.g. GT/pred scale ratios)."""
    a = np.asarray(values, np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("spread_stats needs at least one value")
    return {"median": float(np.median(a)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "num_images": int(a.size)}


def compute_depth_metrics(
    gt,
    pred,
    median_scaling: bool = True,
    garg_crop: bool = True,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    scale: float | None = None,
) -> dict:
    """KITTI Eigen metrics for one image: gt, pred [H,W] (same size, metres; gt 0 = invalid)."""
    # Returns abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3, `scale` (factor applied to pred: the median
    # ratio, a given fixed `scale`, or 1.0), `ratio` (median gt / median pred before any scaling; NaN if
    # that median is not positive and finite) and num_pixels.
    return _evaluate(gt, pred, median_scaling, garg_crop, min_depth, max_depth, scale)[0]


def upsample_depth(pred_depth, size: tuple[int, int]):
    """Resize depth to size=(H, W) by bilinear interpolation of inverse depth (half-pixel rule)."""
    # numpy [h,w] -> [H,W] (cv2.resize) or torch [..., h, w] -> [..., H, W] (F.interpolate,
    # align_corners=False). Depth must be > 0 (inf allowed: inverse depth 0).
    H, W = int(size[0]), int(size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    if isinstance(pred_depth, torch.Tensor):
        d = pred_depth
        if d.ndim < 2:
            raise ValueError(f"pred_depth must be [...,h,w], got {tuple(d.shape)}")
        if torch.isnan(d).any() or (d <= 0).any():
            raise ValueError("pred_depth must be positive (no zeros, negatives or NaN)")
        lead = d.shape[:-2]
        inv = (1.0 / d).reshape(-1, 1, *d.shape[-2:])
        inv = F.interpolate(inv, size=(H, W), mode="bilinear", align_corners=False)
        return (1.0 / inv).reshape(*lead, H, W)
    d = np.asarray(pred_depth)
    if d.ndim != 2:
        raise ValueError(f"numpy pred_depth must be [h,w], got shape {d.shape}")
    if np.isnan(d).any() or (d <= 0).any():
        raise ValueError("pred_depth must be positive (no zeros, negatives or NaN)")
    dtype = d.dtype if d.dtype in (np.float32, np.float64) else np.float32
    inv = cv2.resize((1.0 / d).astype(dtype), (W, H), interpolation=cv2.INTER_LINEAR)
    with np.errstate(divide="ignore"):
        return 1.0 / inv


class MetricAccumulator:
    """Accumulates metrics over a test set."""
    # Image-level metrics are computed per image and averaged over images (the KITTI convention).
    # Per-class metrics are pooled over pixels: for each trainId, the errors of all its valid pixels
    # across all images (after each image's own scaling) are summed, then turned into metrics — so
    # each class's numbers are over the union of its pixels, and rare classes are not dominated by
    # images where they cover a handful of pixels. `class_avg_*` is the plain mean over the classes
    # present (paper Table 2 last column / Fig. 4). The infinite-depth fraction is pooled over all
    # dynamic-object pixels with valid GT.

    def __init__(self, median_scaling: bool = True, garg_crop: bool = True, min_depth: float = 1e-3,
                 max_depth: float = 80.0):
        self.median_scaling = median_scaling
        self.garg_crop = garg_crop
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._per_image: list[dict] = []
        self._class_sums = np.zeros((L.NUM_CLASSES, len(_SUM_KEYS)), dtype=np.float64)
        self._inf_pixels = 0
        self._dyn_pixels = 0
        self._inf_images = 0
        self._dyn_images = 0

    def __len__(self) -> int:
        return len(self._per_image)

    def add(self, gt, pred, semantic=None, dynamic=None, median_scaling: bool | None = None,
            garg_crop: bool | None = None, scale: float | None = None) -> dict:
        """Add one image (gt, pred [H,W]; semantic trainIds / dynamic mask [H,W] optional); returns its metrics."""
        ms = self.median_scaling if median_scaling is None else median_scaling
        if scale is not None:
            ms = False
        gc = self.garg_crop if garg_crop is None else garg_crop
        m, valid, terms, p_scaled, g = _evaluate(gt, pred, ms, gc, self.min_depth, self.max_depth, scale)
        sem = None
        if semantic is not None:
            sem = _to_np(semantic, "semantic")
            if sem.shape != valid.shape:
                raise ValueError(f"semantic shape {sem.shape} != gt shape {valid.shape}")
            if not (np.issubdtype(sem.dtype, np.integer) or np.all(np.mod(sem, 1) == 0)):
                raise ValueError("semantic must hold integer trainIds")
            lab = sem[valid].astype(np.int64)
            keep = (lab >= 0) & (lab < L.NUM_CLASSES)
            for k in range(len(_SUM_KEYS)):  # 8 vectorised bincounts, one per error term
                self._class_sums[:, k] += np.bincount(lab[keep], weights=terms[k][keep], minlength=L.NUM_CLASSES)
        dyn = None
        if dynamic is not None:
            dyn = _to_np(dynamic, "dynamic")
            if dyn.shape != valid.shape:
                raise ValueError(f"dynamic shape {dyn.shape} != gt shape {valid.shape}")
            dyn = dyn.astype(bool)
        elif sem is not None:
            dyn = np.isin(sem, L.DYNAMIC)
        if dyn is not None:
            dv = dyn[valid]
            inf = dv & ((p_scaled > INFINITE_FACTOR * g) | (p_scaled >= self.max_depth))
            n_inf, n_dyn = int(inf.sum()), int(dv.sum())
            m["infinite_depth_pixels"], m["dynamic_pixels"] = n_inf, n_dyn
            self._inf_pixels += n_inf
            self._dyn_pixels += n_dyn
            self._dyn_images += int(n_dyn > 0)
            self._inf_images += int(n_inf > 0)
        self._per_image.append(m)
        return m

    def summary(self) -> dict:
        """Image-averaged metrics, ratio spread, per-class metrics, class averages, infinite-depth stats."""
        if not self._per_image:
            raise ValueError("MetricAccumulator is empty: add() at least one image before summary()")
        out: dict = {k: float(np.mean([m[k] for m in self._per_image])) for k in METRIC_KEYS}
        out["num_images"] = len(self._per_image)
        ratios = np.array([m["ratio"] for m in self._per_image])
        ratios = ratios[np.isfinite(ratios)]  # images whose median prediction was not positive are skipped
        if ratios.size:
            out["ratio_spread"] = spread_stats(ratios)
        present = np.nonzero(self._class_sums[:, 0] > 0)[0]
        if present.size:
            per_class = {}
            for tid in present:
                cm = _metrics_from_sums(self._class_sums[tid])
                cm["num_pixels"] = int(self._class_sums[tid, 0])
                per_class[L.NAMES[tid]] = cm
            out["per_class"] = per_class
            out["class_avg"] = {k: float(np.mean([c[k] for c in per_class.values()])) for k in METRIC_KEYS}
            out["class_avg_abs_rel"] = out["class_avg"]["abs_rel"]
        if self._dyn_pixels > 0:
            out["infinite_depth_fraction"] = self._inf_pixels / self._dyn_pixels
            out["infinite_depth_pixels"] = self._inf_pixels
            out["dynamic_pixels"] = self._dyn_pixels
            out["infinite_depth_images"] = self._inf_images
            out["dynamic_images"] = self._dyn_images
        return out


def format_metrics_table(summary: dict) -> str:
    """Human-readable KITTI table (plus per-class rows, class average, infinite depth and ratio spread)."""
    missing = [k for k in METRIC_KEYS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks metric keys {missing}")
    head = "".join(f"{k:>10}" for k in METRIC_KEYS)
    lines = [f"{'':<16}{head}", f"{'all (img avg)':<16}" + "".join(f"{summary[k]:>10.3f}" for k in METRIC_KEYS)]
    if "num_images" in summary:
        lines[-1] += f"   n={summary['num_images']}"
    per_class = summary.get("per_class")
    if per_class:
        lines.append("-" * (16 + 10 * len(METRIC_KEYS)))
        for name, cm in per_class.items():
            lines.append(f"{name:<16}" + "".join(f"{cm[k]:>10.3f}" for k in METRIC_KEYS)
                         + f"   px={cm.get('num_pixels', 0)}")
        if "class_avg" in summary:
            lines.append(f"{'class average':<16}" + "".join(f"{summary['class_avg'][k]:>10.3f}" for k in METRIC_KEYS))
    if "infinite_depth_fraction" in summary:
        lines.append(f"infinite depth: {100 * summary['infinite_depth_fraction']:.2f}% of "
                     f"{summary['dynamic_pixels']} dynamic-object pixels "
                     f"({summary['infinite_depth_images']}/{summary['dynamic_images']} images affected)")
    rs = summary.get("ratio_spread")
    if rs:
        lines.append(f"gt/pred median ratio: median {rs['median']:.3f}  std {rs['std']:.3f}  "
                     f"min {rs['min']:.3f}  max {rs['max']:.3f}")
    return "\n".join(lines)
