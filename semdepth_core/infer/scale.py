"""Metric scale for scale-ambiguous (photometric-only) models from vehicle odometry.

A self-supervised model trained without velocity supervision predicts depth and translation up to
one unknown global factor. Over a frame interval the vehicle travels `speed * dt` metres while the
pose network predicts a translation `t_pred` in model units, so `scale = speed * dt / |t_pred|`
maps model units to metres (multiply depth by it). Per-frame ratios are noisy (pose-net error,
speed quantisation, turns, standstill), so `ScaleEstimator` smooths them robustly.

Pure functions / plain Python objects; no ROS, no torch.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np


def odometry_scale(t_pred, speed: float, dt: float, min_translation: float = 1e-6) -> float | None:
    """Metres per model unit from one frame pair, or None when it is undefined.

    t_pred: predicted translation (3 values, model units) between the two frames (any direction:
    only its norm is used); speed: vehicle speed in m/s (its magnitude is used); dt: seconds
    between the frames (> 0). Returns None when the predicted translation is ~0 (no information)
    or when the inputs are not finite.
    """
    t = np.asarray(t_pred, np.float64).reshape(-1)
    if t.size != 3:
        raise ValueError(f"t_pred must have 3 elements, got shape {np.shape(t_pred)}")
    if not (math.isfinite(speed) and math.isfinite(dt)) or not np.all(np.isfinite(t)):
        return None
    if dt <= 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    norm = float(np.linalg.norm(t))
    if norm < min_translation:
        return None
    return abs(float(speed)) * float(dt) / norm


class ScaleEstimator:
    """Robust running estimate of the metric scale (rolling median with outlier rejection).

    * Each `update(t_pred, speed, dt)` computes `odometry_scale`; while `|speed| < min_speed`
      (standing still or creeping, where the ratio is dominated by noise) the sample is ignored
      and the current value is *held*.
    * A sample whose ratio deviates from the window median by more than `outlier_ratio` in log
      space (|log(r / median)| > log(1 + outlier_ratio)) is rejected once the window holds
      `min_samples` values. If `max_rejections` consecutive samples are rejected the estimate is
      considered stale (e.g. after a camera/model change) and the window restarts from the most
      recent rejected samples.
    * `value` is the median of the window (None until the first sample is accepted);
      `confidence` in [0, 1] grows with the window fill and shrinks with the relative spread
      (median absolute deviation / median) of the accepted ratios.
    """

    def __init__(self, window: int = 30, min_speed: float = 1.0, outlier_ratio: float = 0.3,
                 min_samples: int = 5, max_rejections: int = 10, spread_for_zero_confidence: float = 0.3):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if outlier_ratio <= 0:
            raise ValueError(f"outlier_ratio must be > 0, got {outlier_ratio}")
        if min_speed < 0:
            raise ValueError(f"min_speed must be >= 0, got {min_speed}")
        self.window = int(window)
        self.min_speed = float(min_speed)
        self.outlier_ratio = float(outlier_ratio)
        self.min_samples = max(1, min(int(min_samples), self.window))
        self.max_rejections = max(1, int(max_rejections))
        self.spread_for_zero_confidence = float(spread_for_zero_confidence)
        self.reset()

    def reset(self) -> None:
        self._ratios: deque[float] = deque(maxlen=self.window)
        self._rejected: deque[float] = deque(maxlen=self.max_rejections)
        self.holding = False
        self.last_ratio: float | None = None
        self.accepted = 0
        self.rejected = 0

    # ------------------------------------------------------------------ state
    @property
    def num_samples(self) -> int:
        return len(self._ratios)

    @property
    def value(self) -> float | None:
        if not self._ratios:
            return None
        return float(np.median(np.fromiter(self._ratios, np.float64)))

    @property
    def spread(self) -> float | None:
        """Relative robust spread of the window: MAD / median (None when empty)."""
        if not self._ratios:
            return None
        r = np.fromiter(self._ratios, np.float64)
        med = float(np.median(r))
        return float(np.median(np.abs(r - med))) / med if med > 0 else float("inf")

    @property
    def confidence(self) -> float:
        if not self._ratios:
            return 0.0
        fill = len(self._ratios) / self.window
        quality = max(0.0, 1.0 - self.spread / self.spread_for_zero_confidence)
        return float(min(1.0, fill * quality))

    # ----------------------------------------------------------------- update
    def update(self, t_pred, speed: float, dt: float) -> float | None:
        """Feed one frame pair; returns the current scale estimate (None until known)."""
        if not math.isfinite(speed) or abs(speed) < self.min_speed:
            self.holding = True
            return self.value
        ratio = odometry_scale(t_pred, speed, dt)
        if ratio is None or ratio <= 0:
            self.holding = True
            return self.value
        self.holding = False
        self.last_ratio = ratio
        return self.add_ratio(ratio)

    def add_ratio(self, ratio: float) -> float | None:
        """Feed one precomputed metres-per-unit ratio (outlier test applies)."""
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"ratio must be finite and > 0, got {ratio}")
        med = self.value
        if med is not None and len(self._ratios) >= self.min_samples:
            if abs(math.log(ratio / med)) > math.log1p(self.outlier_ratio):
                self.rejected += 1
                self._rejected.append(ratio)
                if len(self._rejected) >= self.max_rejections:
                    # persistent disagreement: the old estimate is stale; restart from the new data
                    self._ratios = deque(self._rejected, maxlen=self.window)
                    self._rejected.clear()
                return self.value
        self._rejected.clear()
        self._ratios.append(float(ratio))
        self.accepted += 1
        return self.value
