"""Paper §4.3 ground-plane test for one depth map: is part of the scene predicted below the ground?

* `frame_camera_height_scale(depth, K, h)`: metres per model unit for one depth map, from the
  RANSAC ground plane and the known camera mounting height (None when no ground can be fitted).
* `infinite_depth_check(depth, K, ...)`: the stage-1 filter test of two-stage training
  (`training.filter_dataset.check_frame`) and of depth_node's hole check for one frame: make the
  depth metric (a known metric scale, else the camera-height scale), fit the ground, count the pixels
  more than `margin` metres below it; the frame is *flagged* when the count exceeds
  `max_below_pixels`. A frame without a ground fit is *unchecked* (never an exception).
* `HoleCheckStats`: running counters of those results (what depth_node reports on /diagnostics).

The smoothing of camera-height scales over frames (`CameraHeightScaleEstimator`, `ModelScaleCheck`)
is scale estimation and lives in `semdepth_core.infer.scale`. Pure numpy; no ROS, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semdepth_core.geometry.ground_plane import below_ground_count, camera_height_scale

DEFAULT_CAMERA_HEIGHT = 1.65  # KITTI camera mounting height (m)
DEFAULT_ROW_FRACTION = 0.6  # ground fit on rows at or below this fraction of the image height


def check_positive(name: str, v) -> float:
    """`v` as a float when it is a finite number > 0, else ValueError naming `name`."""
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
    camera_height = check_positive("camera_height", camera_height)
    try:
        s = camera_height_scale(depth, K, camera_height, row_fraction=row_fraction)
    except ValueError:  # no ground (LinAlgError is a ValueError too)
        return None
    return s if math.isfinite(s) and s > 0 else None


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
        scale = check_positive("metric_scale", metric_scale)
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
