"""Scoring of the depth node's output against Velodyne scans, as `python -m semdepth_ros.replay --evaluate` does.

`DepthEvaluator` keeps the latest clouds (PointCloud2) and the CameraInfo, and for each depth image
(32FC1 metres or 16UC1 millimetres) takes the cloud nearest in time (within `tolerance_s`), moves it
into the image's frame with the bag's static transforms, projects it through the CameraInfo rescaled to
the depth image (half-pixel rule) and accumulates KITTI metrics, median-scaled and unscaled (Garg crop).
Numpy only: messages are read through `semdepth_ros.conversions`, the metrics are
`semdepth_core.eval.metrics`; it imports no rclpy.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semdepth_ros import conversions as C

if TYPE_CHECKING:
    from semdepth_ros.replay import TfTree


@dataclass
class DepthEvaluator:
    """Scores depth images against Velodyne clouds (pure numpy; fed by the replay loop)."""

    tf: TfTree  # the bag's static transforms (replay.load_static_tf)
    tolerance_s: float = 0.05
    garg_crop: bool = True
    min_depth: float = 1e-3
    max_depth: float = 80.0
    clouds: deque = field(default_factory=lambda: deque(maxlen=200))
    camera: tuple | None = None  # (K, width, height)
    per_frame: list = field(default_factory=list)
    unmatched: int = 0
    failed: int = 0

    def __post_init__(self):
        from semdepth_core.eval.metrics import MetricAccumulator

        self.acc_scaled = MetricAccumulator(median_scaling=True, garg_crop=self.garg_crop,
                                            min_depth=self.min_depth, max_depth=self.max_depth)
        self.acc_unscaled = MetricAccumulator(median_scaling=False, garg_crop=self.garg_crop,
                                              min_depth=self.min_depth, max_depth=self.max_depth)

    def add_cloud(self, msg) -> None:
        arr = C.pointcloud2_to_array(msg).reshape(-1)
        xyz = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64)
        xyz = xyz[np.isfinite(xyz).all(axis=1)]
        self.clouds.append((C.stamp_ns(msg.header), msg.header.frame_id, xyz))

    def set_camera_info(self, msg) -> None:
        self.camera = (C.camera_info_to_K(msg), int(msg.width), int(msg.height))

    def ground_truth(self, t_ns: int, frame_id: str, width: int, height: int) -> np.ndarray | None:
        from semdepth_core.data.kitti import project_points_to_depth

        if not self.clouds or self.camera is None:
            return None
        dt, _, cframe, xyz = min(((abs(t - t_ns), i, f, x) for i, (t, f, x) in enumerate(self.clouds)),
                                 key=lambda e: e[0])
        if dt > self.tolerance_s * 1e9:
            return None
        T = self.tf.lookup(frame_id, cframe)
        K, w0, h0 = self.camera
        if (w0, h0) != (width, height):
            K = C.scale_K(K, (w0, h0), (width, height))
        return project_points_to_depth(xyz @ T[:3, :3].T + T[:3, 3], K, (width, height))

    def evaluate(self, depth_msg) -> dict | None:
        """Metrics of one 32FC1 depth image; None when no cloud matches its stamp."""
        pred = C.image_msg_to_array(depth_msg)
        if depth_msg.encoding == "16UC1":
            pred = pred.astype(np.float32) / 1000.0
        pred = np.asarray(pred, dtype=np.float32)
        t = C.stamp_ns(depth_msg.header)
        gt = self.ground_truth(t, depth_msg.header.frame_id, pred.shape[1], pred.shape[0])
        if gt is None:
            self.unmatched += 1
            return None
        bad = ~np.isfinite(pred) | (pred <= 0)
        gt = np.where(bad, 0.0, gt)
        pred = np.where(bad, 1.0, pred)
        try:
            ms = self.acc_scaled.add(gt, pred)
            mu = self.acc_unscaled.add(gt, pred)
        except ValueError as exc:  # e.g. no valid GT pixel inside the crop
            self.failed += 1
            return {"stamp_ns": t, "error": str(exc)}
        rec = {"stamp_ns": t, "abs_rel": ms["abs_rel"], "a1": ms["a1"], "abs_rel_unscaled": mu["abs_rel"],
               "a1_unscaled": mu["a1"], "median_ratio": ms["ratio"], "gt_pixels": ms["num_pixels"],
               "pred_invalid_pixels": int(bad.sum())}
        self.per_frame.append(rec)
        return rec

    def summary(self) -> dict:
        out = {"frames": len(self.per_frame), "unmatched": self.unmatched, "failed": self.failed,
               "garg_crop": self.garg_crop, "min_depth": self.min_depth, "max_depth": self.max_depth}
        if self.per_frame:
            keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
            s, u = self.acc_scaled.summary(), self.acc_unscaled.summary()
            out["median_scaled"] = {k: s[k] for k in keys}
            out["median_scaled"]["ratio_spread"] = s.get("ratio_spread")
            out["unscaled"] = {k: u[k] for k in keys}
        out["per_frame"] = self.per_frame
        return out


def summary_line(s: dict) -> str:
    """One log line of a `DepthEvaluator.summary()`."""
    if not s.get("frames"):
        return (f"eval summary: 0 frames evaluated ({s.get('unmatched', 0)} without a matching cloud, "
                f"{s.get('failed', 0)} failed)")
    a, b = s["median_scaled"], s["unscaled"]
    return (f"eval summary: {s['frames']} frames | median-scaled abs_rel={a['abs_rel']:.4f} a1={a['a1']:.4f} "
            f"| unscaled abs_rel={b['abs_rel']:.4f} a1={b['a1']:.4f} | unmatched={s['unmatched']} "
            f"failed={s['failed']}")
