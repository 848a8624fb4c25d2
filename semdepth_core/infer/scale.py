"""Metric scale for scale-ambiguous (photometric-only) models from vehicle odometry.

A self-supervised model trained without velocity supervision predicts depth and translation up to
one unknown global factor. Over a frame interval the vehicle travels `speed * dt` metres while the
pose network predicts a translation `t_pred` in model units, so `scale = speed * dt / |t_pred|`
maps model units to metres (multiply depth by it). Per-frame ratios are noisy (pose-net error,
speed quantisation, turns, standstill), so `ScaleEstimator` smooths them robustly.

`CameraHeightScaleEstimator` smooths per-frame camera-height scales (the ground-plane scale of
`semdepth_core.geometry.ground_check`) the same way, and `ModelScaleCheck` uses it as live evidence
for a metric checkpoint's scale.

Pure functions / plain Python objects; no ROS, no torch.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from semdepth_core.geometry.ground_check import (
    DEFAULT_CAMERA_HEIGHT,
    DEFAULT_ROW_FRACTION,
    check_positive,
    frame_camera_height_scale,
)


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


class CameraHeightScaleEstimator(ScaleEstimator):
    """Rolling median of per-frame camera-height scales; holds the last value through frames without ground.

    The odometry `ScaleEstimator` fed with per-frame scales instead of frame-pair ratios (same window,
    `value`, `spread` and `confidence`), without its outlier test by default: the window median already
    ignores the odd bad fit. `add_depth(depth, K)` computes the frame's scale with
    `frame_camera_height_scale`; `add_scale(s)` feeds a precomputed one (None, NaN, inf or <= 0 = no
    estimate for that frame: held, counted in `no_fit`). `value` is None until a scale is accepted.
    """

    def __init__(self, camera_height: float = DEFAULT_CAMERA_HEIGHT, window: int = 30,
                 row_fraction: float = DEFAULT_ROW_FRACTION, outlier_ratio: float = math.inf,
                 spread_for_zero_confidence: float = 0.3):
        self.camera_height = check_positive("camera_height", camera_height)
        if not 0.0 <= row_fraction < 1.0:
            raise ValueError(f"row_fraction must be in [0, 1), got {row_fraction}")
        self.row_fraction = float(row_fraction)
        super().__init__(window=window, min_speed=0.0, outlier_ratio=outlier_ratio,
                         spread_for_zero_confidence=spread_for_zero_confidence)

    def reset(self) -> None:
        super().reset()
        self.no_fit = 0  # frames without an estimate (no ground, or a non-finite / non-positive scale)

    def add_scale(self, scale: float | None) -> float | None:
        """Feed one frame's scale (None / non-finite / <= 0: no estimate, value held); returns `value`."""
        ok = isinstance(scale, (int, float, np.integer, np.floating)) and math.isfinite(scale) and scale > 0
        if not ok:
            self.holding = True
            self.last_ratio = None
            self.no_fit += 1
            return self.value
        self.holding = False
        self.last_ratio = float(scale)
        return self.add_ratio(float(scale))

    def add_depth(self, depth, K) -> float | None:
        """Scale of one depth map [h,w] (model units) with K at [h,w]; returns the smoothed `value`."""
        return self.add_scale(frame_camera_height_scale(depth, K, self.camera_height, self.row_fraction))


class ModelScaleCheck:
    """Live evidence for a metric checkpoint's scale (`scale.mode: model`): the camera height its depth implies.

    Every `period_s` seconds (`due(now)`), `add(depth, K, now)` fits the ground plane to the metric depth
    [h,w] (K at [h,w]); the frame's camera-height scale s puts that plane `camera_height` metres below the
    camera, so the depth implies a camera height of camera_height / s. A rolling median over `window`
    checked frames (`CameraHeightScaleEstimator`) gives `ratio` = configured / implied height (1 = agrees).

    * `implied_camera_height`: camera_height / ratio (None before the first ground fit);
    * `agrees`: |log ratio| <= log(factor) (None before any evidence);
    * `confidence` in [0, 1]: 0 without evidence; else the window's own confidence (fill and spread) times
      the agreement max(0, 1 - |log ratio| / log(factor)), so 0 at (and beyond) a disagreement by `factor`.
    """

    def __init__(self, camera_height: float = DEFAULT_CAMERA_HEIGHT, factor: float = 1.5, window: int = 30,
                 period_s: float = 1.0, row_fraction: float = DEFAULT_ROW_FRACTION):
        self.camera_height = check_positive("camera_height", camera_height)
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1.0):
            raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
        if not (isinstance(period_s, (int, float)) and math.isfinite(period_s) and period_s >= 0):
            raise ValueError(f"period_s must be a finite number >= 0, got {period_s!r}")
        self.factor = float(factor)
        self.period_s = float(period_s)
        self.estimator = CameraHeightScaleEstimator(camera_height, window, row_fraction)
        self.frames_checked = 0
        self._last: float | None = None

    def due(self, now: float) -> bool:
        """True when a frame processed at monotonic time `now` (s) should be checked."""
        return self._last is None or now - self._last >= self.period_s

    def add(self, depth, K, now: float) -> None:
        self._last = now
        self.frames_checked += 1
        self.estimator.add_depth(depth, K)

    @property
    def ratio(self) -> float | None:
        return self.estimator.value

    @property
    def implied_camera_height(self) -> float | None:
        r = self.ratio
        return None if r is None else self.camera_height / r

    @property
    def agrees(self) -> bool | None:
        r = self.ratio
        return None if r is None else abs(math.log(r)) <= math.log(self.factor)

    @property
    def confidence(self) -> float:
        r = self.ratio
        if r is None:
            return 0.0
        agreement = max(0.0, 1.0 - abs(math.log(r)) / math.log(self.factor))
        return float(self.estimator.confidence * agreement)
