"""Ground-plane pieces used at inference time (paper §4.3): camera-height metric scale and the
infinite-depth hole check.

* `frame_camera_height_scale(depth, K, h)`: metres per model unit for one depth map, from the
  RANSAC ground plane and the known camera mounting height (None when no ground can be fitted).
* `CameraHeightScaleEstimator`: per-frame scales smoothed by a rolling median over the last
  `window` accepted frames; a frame without a ground fit (or a non-finite / non-positive scale)
  is not added and the current value is *held*. `value` is None until the first accepted frame.
* `infinite_depth_check(depth, K, ...)`: the stage-1 filter test of two-stage training
  (`training.filter_dataset.check_frame`) for one frame: make the depth metric (a known metric
  scale, else the camera-height scale), fit the ground, count the pixels more than `margin`
  metres below it; the frame is *flagged* when the count exceeds `max_below_pixels`. A frame
  without a ground fit is *unchecked* (never an exception).
* `HoleCheckStats`: running counters of those results (what depth_node reports on /diagnostics).

Pure numpy on top of `semdepth_core.geometry.ground_plane`; no ROS, no torch.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from semdepth_core.geometry.ground_plane import below_ground_count, camera_height_scale

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


class CameraHeightScaleEstimator:
    """Rolling median of per-frame camera-height scales; holds the last value through frames without ground.

    `update(depth, K)` computes the frame's scale with `frame_camera_height_scale`; `add_scale(s)`
    feeds a precomputed one (None, NaN, inf or <= 0 = no estimate for that frame: held). `value` is
    the median of the last `window` accepted scales (None until one is accepted), `confidence` in
    [0, 1] grows with the window fill and shrinks with the relative spread (MAD / median).
    """

    def __init__(self, camera_height: float = DEFAULT_CAMERA_HEIGHT, window: int = 30,
                 row_fraction: float = DEFAULT_ROW_FRACTION, spread_for_zero_confidence: float = 0.3):
        self.camera_height = _check_positive("camera_height", camera_height)
        if isinstance(window, bool) or int(window) != window or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if not 0.0 <= row_fraction < 1.0:
            raise ValueError(f"row_fraction must be in [0, 1), got {row_fraction}")
        self.window = int(window)
        self.row_fraction = float(row_fraction)
        self.spread_for_zero_confidence = _check_positive("spread_for_zero_confidence", spread_for_zero_confidence)
        self.reset()

    def reset(self) -> None:
        self._scales: deque[float] = deque(maxlen=self.window)
        self.holding = False
        self.last_scale: float | None = None  # the last frame's scale (None: that frame had no estimate)
        self.accepted = 0
        self.no_fit = 0  # frames without an estimate (no ground, or a non-finite / non-positive scale)

    @property
    def num_samples(self) -> int:
        return len(self._scales)

    @property
    def value(self) -> float | None:
        if not self._scales:
            return None
        return float(np.median(np.fromiter(self._scales, np.float64)))

    @property
    def spread(self) -> float | None:
        """Relative robust spread of the window: MAD / median (None when empty)."""
        if not self._scales:
            return None
        r = np.fromiter(self._scales, np.float64)
        med = float(np.median(r))
        return float(np.median(np.abs(r - med))) / med

    @property
    def confidence(self) -> float:
        if not self._scales:
            return 0.0
        fill = len(self._scales) / self.window
        quality = max(0.0, 1.0 - self.spread / self.spread_for_zero_confidence)
        return float(min(1.0, fill * quality))

    def add_scale(self, scale: float | None) -> float | None:
        """Feed one frame's scale (None / non-finite / <= 0: no estimate, value held); returns `value`."""
        ok = scale is not None and isinstance(scale, (int, float, np.integer, np.floating)) \
            and math.isfinite(scale) and scale > 0
        if not ok:
            self.holding = True
            self.last_scale = None
            self.no_fit += 1
            return self.value
        self.holding = False
        self.last_scale = float(scale)
        self._scales.append(float(scale))
        self.accepted += 1
        return self.value

    def update(self, depth, K) -> float | None:
        """Scale of one depth map [h,w] (model units) with K at [h,w]; returns the smoothed `value`."""
        return self.add_scale(frame_camera_height_scale(depth, K, self.camera_height, self.row_fraction))


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
    camera_height = _check_positive("camera_height", camera_height)
    if metric_scale is not None:
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
        self.last_flagged = False
        self.last_reason = ""

    def record(self, r: HoleCheck) -> None:
        if not r.checked:
            self.unchecked += 1
            self.last_reason = r.reason
            return
        self.checked += 1
        self.flagged += int(r.flagged)
        self.last_count = int(r.count)
        self.last_flagged = bool(r.flagged)
        self.last_reason = ""
