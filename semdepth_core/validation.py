"""Plausibility checks shared by the node, the predictor and training: each returns None when a value is
plausible, else one line saying why not. Finite is not enough: fx = 1e-300 or a speed of 1e30 m/s are finite
and make every output absurd while looking valid."""
from __future__ import annotations

import math

import numpy as np

# intrinsics, relative to the image size (pixels): from a ~170 deg fisheye (fx ~ 0.15 W) to a long telephoto
FOCAL_TO_WIDTH = (0.05, 20.0)
ASPECT_FY_FX = (0.2, 5.0)
PRINCIPAL_MARGIN = 0.5  # cx, cy within [-m, 1 + m] of the image size
SCALE_RANGE = (1e-4, 1e4)  # metres per model unit
MAX_SPEED = 100.0  # m/s: faster than any ground robot or car this is used on
MIN_VALID_DEPTH_FRACTION = 0.5


def intrinsics_problem(K, width: int, height: int, principal_point: bool = True) -> str | None:
    """Why a 3x3 pinhole K does not fit a width x height image (None when plausible).

    principal_point=False skips the principal-point test (calibration files whose stated image size is not the
    one the images will be resized to)."""
    try:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        return "intrinsics are not a 3x3 matrix"
    if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer)) and width > 0
            and height > 0):
        return f"image size {width}x{height} is not positive"
    if not np.all(np.isfinite(K)):
        return "intrinsics contain NaN or inf"
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lo, hi = FOCAL_TO_WIDTH
    if not (lo * width <= fx <= hi * width):
        return f"fx={fx:.6g} is implausible for a {width} px wide image (expected {lo * width:.4g}..{hi * width:.4g})"
    if not (ASPECT_FY_FX[0] <= fy / fx <= ASPECT_FY_FX[1]):
        return f"fy/fx={fy / fx:.6g} is implausible (fx={fx:.6g}, fy={fy:.6g})"
    m = PRINCIPAL_MARGIN
    if principal_point and not (-m * width <= cx <= (1 + m) * width and -m * height <= cy <= (1 + m) * height):
        return f"principal point ({cx:.6g}, {cy:.6g}) is far outside the {width}x{height} image"
    if abs(K[0, 1]) > fx or np.any(K[2] != (0.0, 0.0, 1.0)) or K[1, 0] != 0.0:
        return f"not a pinhole matrix (skew {K[0, 1]:.6g}, last row {K[2].tolist()})"
    return None


def speed_problem(speed: float, max_speed: float = MAX_SPEED) -> str | None:
    """Why a speed (m/s, a magnitude) is not physically plausible (None when it is)."""
    if not isinstance(speed, (int, float)) or not math.isfinite(speed):
        return f"speed {speed!r} is not a finite number"
    if speed < 0 or speed > max_speed:
        return f"speed {speed:.6g} m/s is outside 0..{max_speed:g} m/s"
    return None


def scale_problem(scale: float, lo: float = SCALE_RANGE[0], hi: float = SCALE_RANGE[1]) -> str | None:
    """Why a metric scale factor is not usable (None when it is)."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        return f"scale {scale!r} is not a finite number"
    if not lo <= scale <= hi:
        return f"scale {scale:.6g} is outside {lo:g}..{hi:g}"
    return None


def depth_problem(depth: np.ndarray, min_depth: float, max_depth: float,
                  min_valid: float = MIN_VALID_DEPTH_FRACTION) -> str | None:
    """Why a predicted depth map [H,W] is not a usable output: too few finite pixels within the model's range
    (scaled depth may exceed it a little: x1.5 / /1.5 tolerance)."""
    d = np.asarray(depth)
    if d.size == 0:
        return "empty depth map"
    ok = np.isfinite(d) & (d >= min_depth / 1.5) & (d <= max_depth * 1.5)
    frac = float(ok.mean())
    if frac < min_valid:
        med = float(np.nanmedian(np.where(np.isfinite(d), d, np.nan))) if np.isfinite(d).any() else float("nan")
        return (f"only {100 * frac:.0f} % of the depth is finite and within {min_depth:g}..{max_depth:g} m "
                f"(median {med:.6g})")
    return None
