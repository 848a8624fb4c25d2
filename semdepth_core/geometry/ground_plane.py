"""Ground-plane checks for two-stage training (§4.3): RANSAC plane fit on near road pixels, count of
pixels predicted significantly below the ground (the "infinite depth" symptom), camera-height scale.

Plane convention: n·X + d = 0 with |n| = 1 and d >= 0, so the camera centre (origin) lies on the
positive side and d is the camera's distance to the plane. Points "below ground" have n·X + d < 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semdepth_core.geometry.pinhole import backproject_np

_MAX_SCORE_ENTRIES = 4_000_000  # hypotheses x points evaluated per chunk (bounds memory)


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _refine(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Total-least-squares plane through points [M,3] (M >= 3): smallest singular vector of the centred cloud."""
    c = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    n = vt[-1]
    return n, float(-n @ c)


def _orient(n: np.ndarray, d: float) -> tuple[np.ndarray, float]:
    """Flip (n, d) so the origin is on the positive side (d >= 0)."""
    return (-n, -d) if d < 0 else (n, d)


def fit_plane_ransac(
    points,
    iterations: int = 200,
    threshold: float = 0.05,
    rng=None,
    axis=None,
    max_angle_deg: float | None = None,
    refine_steps: int = 6,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Robust plane n·X + d = 0 through points [N,3] -> (unit normal [3], d >= 0, inlier mask [N] bool)."""
    # Hypotheses from random 3-point samples are scored by inlier count (|n·X + d| < threshold), all
    # evaluated in vectorised chunks; the best is refined by iterated least squares on its inliers
    # (each pass keeping points within 3 rms of the previous fit). If `axis`
    # and `max_angle_deg` are given, hypotheses whose normal is further than that from ±axis are
    # rejected (e.g. keep only near-horizontal planes).
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 3:
        raise ValueError(f"points must have shape [N,3], got {P.shape}")
    if P.shape[0] < 3:
        raise ValueError(f"need at least 3 points to fit a plane, got {P.shape[0]}")
    if not np.isfinite(P).all():
        raise ValueError("points contain NaN or inf")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    rng = _as_rng(rng)
    N = P.shape[0]

    idx = np.stack([rng.choice(N, size=3, replace=False) for _ in range(iterations)])  # [I,3]
    a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    n = np.cross(b - a, c - a)  # [I,3]
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12 * max(1.0, float(np.abs(P).max()) ** 2)
    n = n / np.where(ok, norm, 1.0)[:, None]
    if axis is not None and max_angle_deg is not None:
        ax = np.asarray(axis, dtype=np.float64)
        if ax.shape != (3,) or not np.linalg.norm(ax) > 0:
            raise ValueError(f"axis must be a non-zero 3-vector, got {axis!r}")
        ax = ax / np.linalg.norm(ax)
        ok &= np.abs(n @ ax) >= np.cos(np.deg2rad(max_angle_deg))
    d = -(n * a).sum(axis=1)  # [I]

    counts = np.full(iterations, -1, dtype=np.int64)
    chunk = max(1, _MAX_SCORE_ENTRIES // N)
    for s in range(0, iterations, chunk):
        dist = np.abs(n[s : s + chunk] @ P.T + d[s : s + chunk, None])  # [chunk,N]
        counts[s : s + chunk] = np.where(ok[s : s + chunk], (dist < threshold).sum(axis=1), -1)
    best = int(np.argmax(counts))
    if counts[best] < 3:
        raise ValueError("RANSAC found no plane with at least 3 inliers (degenerate or too noisy points)")

    bn, bd = n[best], d[best]
    inliers = np.abs(P @ bn + bd) < threshold
    fit_set = inliers
    for _ in range(max(0, refine_steps)):
        rn, rd = _refine(P[fit_set])
        r = np.abs(P @ rn + rd)
        new_inliers = r < threshold
        if new_inliers.sum() < 3:
            break
        bn, bd, inliers = rn, rd, new_inliers
        # the next least-squares fit uses only points within 3 rms of the plane, so that outliers
        # that happen to fall inside the threshold band stop biasing it (the mask keeps `threshold`)
        rms = float(np.sqrt(np.mean(r[fit_set] ** 2)))
        tight = inliers & (r <= 3.0 * rms)
        fit_set = tight if tight.sum() >= 3 else inliers
    bn, bd = _orient(bn / np.linalg.norm(bn), float(bd))
    return bn, bd, inliers


@dataclass
class GroundCheck:
    """Result of below_ground_count: plane (normal, d), count of pixels below it and fit quality."""

    normal: np.ndarray  # [3] unit, camera on the positive side (NaN when no fit)
    d: float  # camera distance to the plane in depth units (NaN when no fit)
    count: int  # valid pixels more than `margin` below the plane
    inlier_fraction: float  # RANSAC inliers / points used for the fit
    num_fit_points: int
    below_mask: np.ndarray  # [H,W] bool
    ok: bool  # False when the region had too few points to fit a plane

    @property
    def plane(self) -> tuple[np.ndarray, float]:
        return self.normal, self.d


def _fit_region(depth, K, row_fraction, max_range, fit_mask):
    """Points [H,W,3], valid mask and ROI mask used for the ground fit."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H,W], got shape {depth.shape}")
    if not 0.0 <= row_fraction < 1.0:
        raise ValueError(f"row_fraction must be in [0, 1), got {row_fraction}")
    if max_range is not None and not max_range > 0:
        raise ValueError(f"max_range must be > 0 or None, got {max_range}")
    H, W = depth.shape
    pts = backproject_np(np.where(np.isfinite(depth), depth, 0.0), K)
    valid = np.isfinite(depth) & (depth > 0)
    roi = valid & (depth < max_range) if max_range is not None else valid.copy()
    roi[: int(np.ceil(row_fraction * H))] = False
    if fit_mask is not None:
        fit_mask = np.asarray(fit_mask, dtype=bool)
        if fit_mask.shape != (H, W):
            raise ValueError(f"fit_mask shape {fit_mask.shape} != depth shape {(H, W)}")
        roi &= fit_mask
    return pts, valid, roi


def below_ground_count(
    depth,
    K,
    margin: float = 0.5,
    margin_slope: float = 0.0,
    row_fraction: float = 0.6,
    max_range: float = 20.0,
    fit_mask=None,
    iterations: int = 200,
    threshold: float = 0.05,
    max_tilt_deg: float = 30.0,
    max_fit_points: int = 5000,
    min_fit_points: int = 50,
    rng=0,
) -> GroundCheck:
    """Fit the ground on near, lower-image pixels and count pixels lying > margin (+ margin_slope x depth) below it."""
    # depth [H,W] (0/NaN = invalid), K [3,3] at that resolution. The fit region is rows at or below
    # row_fraction*H with depth < max_range (intersected with fit_mask, e.g. road pixels, if given);
    # plane hypotheses are restricted to within max_tilt_deg of the camera's vertical (y) axis. The
    # paper rejects a training image when count exceeds a small threshold (10).
    # margin_slope (metres per metre of depth) lets the margin grow with the point's depth: a plane
    # fitted on near points with a small tilt error e (rad) drifts by about e x depth at range, so
    # 0.02 tolerates ~1.1 degrees before a correctly predicted far road counts as "below".
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not margin_slope >= 0:
        raise ValueError(f"margin_slope must be >= 0, got {margin_slope}")
    pts, valid, roi = _fit_region(depth, K, row_fraction, max_range, fit_mask)
    H, W = valid.shape
    cand = pts[roi]  # [M,3]
    if cand.shape[0] < max(3, min_fit_points):
        nan = np.full(3, np.nan)
        return GroundCheck(nan, float("nan"), 0, 0.0, int(cand.shape[0]), np.zeros((H, W), bool), False)
    rng = _as_rng(rng)
    if cand.shape[0] > max_fit_points:
        cand = cand[rng.choice(cand.shape[0], size=max_fit_points, replace=False)]
    n, d, inl = fit_plane_ransac(cand, iterations, threshold, rng, axis=(0.0, 1.0, 0.0),
                                 max_angle_deg=max_tilt_deg)
    signed = pts @ n + d  # [H,W], positive on the camera side
    below = valid & (signed < -(margin + margin_slope * pts[..., 2]))
    return GroundCheck(n, d, int(below.sum()), float(inl.mean()), int(cand.shape[0]), below, True)


def camera_height_scale(
    depth,
    K,
    known_height: float,
    row_fraction: float = 0.6,
    max_range: float | None = None,
    fit_mask=None,
    iterations: int = 200,
    threshold: float | None = None,
    max_tilt_deg: float = 30.0,
    max_fit_points: int = 5000,
    rng=0,
) -> float:
    """Scale s such that s*depth puts the fitted ground plane known_height (m) below the camera."""
    # Depth may be in arbitrary units, so max_range defaults to no limit and threshold to 0.5% of the
    # median fit-point depth (5 cm at 10 m).
    if not known_height > 0:
        raise ValueError(f"known_height must be > 0, got {known_height}")
    pts, _, roi = _fit_region(depth, K, row_fraction, max_range, fit_mask)
    cand = pts[roi]
    if cand.shape[0] < 3:
        raise ValueError(f"only {cand.shape[0]} valid points in the ground region; cannot fit a plane")
    rng = _as_rng(rng)
    if cand.shape[0] > max_fit_points:
        cand = cand[rng.choice(cand.shape[0], size=max_fit_points, replace=False)]
    if threshold is None:
        threshold = 0.005 * float(np.median(cand[:, 2]))
    _, d, _ = fit_plane_ransac(cand, iterations, threshold, rng, axis=(0.0, 1.0, 0.0),
                               max_angle_deg=max_tilt_deg)
    if not d > 1e-9:
        raise ValueError("fitted ground plane passes through the camera centre; scale undefined")
    return float(known_height / d)
