"""Ground-plane pieces used at inference time (paper §4.3): camera-height metric scale and the
infinite-depth hole check.

* `frame_camera_height_scale(depth, K, h)`: metres per model unit for one depth map, from the
  RANSAC ground plane and the known camera mounting height (None when no ground can be fitted).
* `CameraHeightScaleEstimator`: per-frame scales smoothed by a rolling median over the last
  `window` accepted frames (the odometry `ScaleEstimator`'s window); a frame without a ground fit (or a non-finite / non-positive scale)
  is not added and the current value is *held*. `value` is None until the first accepted frame.
* `infinite_depth_check(depth, K, ...)`: the stage-1 filter test of two-stage training
  (`training.filter_dataset.check_frame`) for one frame: make the depth metric (a known metric
  scale, else the camera-height scale), fit the ground, count the pixels more than `margin`
  metres below it; the frame is *flagged* when the count exceeds `max_below_pixels`. A frame
  without a ground fit is *unchecked* (never an exception).
* `HoleCheckStats`: running counters of those results (what depth_node reports on /diagnostics).
* `ModelScaleCheck`: the camera height a metric checkpoint's depth implies, against the known one
  (depth_node's evidence for `scale.mode: model`).

Pure numpy on top of `semdepth_core.geometry.ground_plane`; no ROS, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semdepth_core.geometry.ground_plane import below_ground_count, camera_height_scale
from semdepth_core.infer.scale import ScaleEstimator

DEFAULT_CAMERA_HEIGHT = 1.65  # KITTI camera mounting height (m)
DEFAULT_ROW_FRACTION = 0.6  # ground fit on rows at or below this fraction of the image height


def _check_positive(name: str, v) -> float:
    number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if not (number and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def frame_camera_height_scale(depth, K, camera_height: float,
                              row_fraction: float = DEFAULT_ROW_FRACTION) -> float | None:
    """Metres per depth unit for one frame (depth [h,w], K [3,3] at [h,w]), or None when no ground fits.

    s * depth puts the RANSAC ground plane `camera_height` metres below the camera
    (`ground_plane.camera_height_scale`). None instead of an exception when the ground region has too
    few valid points, RANSAC finds no plane, or the result is not a finite positive number.
    """
    camera_height = _check_positive("camera_height", camera_height)
    try:
        s = camera_height_scale(depth, K, camera_height, row_fraction=row_fraction)
    except ValueError:  # no ground (LinAlgError is a ValueError too)
        return None
    return s if math.isfinite(s) and s > 0 else None


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
        self.camera_height = _check_positive("camera_height", camera_height)
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
        self.camera_height = _check_positive("camera_height", camera_height)
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


@dataclass(frozen=True)
class HoleCheck:
    """One frame's infinite-depth hole check (see `infinite_depth_check`)."""

    checked: bool  # False: no ground plane could be fitted (or no metric scale): nothing counted
    count: int  # pixels more than `margin` below the ground plane (0 when unchecked)
    flagged: bool  # checked and count > max_below_pixels
    scale: float  # factor applied to the depth before the margin test (NaN when unchecked)
    reason: str = ""  # why the frame is unchecked ("" when checked)
    below_mask: np.ndarray | None = None  # [h,w] bool (None when unchecked)


def infinite_depth_check(depth, K, margin: float = 0.5, max_below_pixels: int = 10, margin_slope: float = 0.05,
                         camera_height: float = DEFAULT_CAMERA_HEIGHT, metric_scale: float | None = None,
                         row_fraction: float = DEFAULT_ROW_FRACTION, max_range: float = 20.0) -> HoleCheck:
    """Paper §4.3 ground-plane test for one depth map [h,w] with K [3,3] at [h,w].

    The depth is made metric first: multiplied by `metric_scale` when the caller knows it (1.0 for
    metric depth), else by the frame's own camera-height scale (as `training.filter_dataset` does
    for scale-ambiguous models). Then the ground is fitted (RANSAC on rows >= row_fraction * h
    closer than max_range metres) and the pixels more than `margin` metres (+ `margin_slope` x their
    depth, as `two_stage.margin_slope`) below it are counted.
    Never raises for bad depth content: no ground -> `checked=False` with a reason.
    """
    if isinstance(margin, bool) or not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if isinstance(margin_slope, bool) or not (math.isfinite(margin_slope) and margin_slope >= 0):
        raise ValueError(f"margin_slope must be a finite number >= 0, got {margin_slope!r}")
    if isinstance(max_below_pixels, bool) or int(max_below_pixels) != max_below_pixels or max_below_pixels < 0:
        raise ValueError(f"max_below_pixels must be an integer >= 0, got {max_below_pixels!r}")
    if metric_scale is not None:  # camera_height is then unused (and may be 0 = "depth as is")
        scale = _check_positive("metric_scale", metric_scale)
    else:
        s = frame_camera_height_scale(depth, K, camera_height, row_fraction)
        if s is None:
            return HoleCheck(False, 0, False, float("nan"), "no ground plane for the camera-height scale")
        scale = s
    try:
        res = below_ground_count(np.asarray(depth, np.float64) * scale, K, margin=margin,
                                 margin_slope=margin_slope, row_fraction=row_fraction, max_range=max_range)
    except ValueError as exc:  # RANSAC found no plane
        return HoleCheck(False, 0, False, float("nan"), f"no ground plane: {exc}")
    if not res.ok:
        return HoleCheck(False, 0, False, float("nan"),
                         f"no ground plane: only {res.num_fit_points} points closer than {max_range:g} m "
                         "in the ground region")
    return HoleCheck(True, res.count, res.count > max_below_pixels, scale, "", res.below_mask)


class HoleCheckStats:
    """Counters over `HoleCheck` results: frames checked / flagged / unchecked and the last count."""

    def __init__(self):
        self.checked = 0
        self.flagged = 0
        self.unchecked = 0
        self.last_count: int | None = None  # of the last checked frame
        self.last_reason = ""

    def record(self, r: HoleCheck) -> None:
        if not r.checked:
            self.unchecked += 1
            self.last_reason = r.reason
            return
        self.checked += 1
        self.flagged += int(r.flagged)
        self.last_count = int(r.count)
        self.last_reason = ""
