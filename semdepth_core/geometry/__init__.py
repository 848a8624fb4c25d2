"""Camera geometry: intrinsics, (back-)projection, SE(3), view synthesis and ground-plane checks.

The names below load on first use, so that the numpy-only modules (pinhole, ground_plane, ground_check)
import without torch: `from semdepth_core.geometry.pinhole import ...` does not pull in camera.py or warp.py.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "camera": ("Camera", "backproject", "pixel_grid", "project"),
    "pinhole": ("backproject_np", "crop_intrinsics", "pixel_rays", "resize_intrinsics", "scale_intrinsics"),
    "ground_plane": ("GroundCheck", "below_ground_count", "camera_height_scale", "fit_plane_ransac"),
    "ground_check": ("HoleCheck", "HoleCheckStats", "frame_camera_height_scale", "infinite_depth_check"),
    "se3": ("axis_angle_to_matrix", "compose", "euler_to_matrix", "euler_to_matrix_np", "invert_se3",
            "invert_se3_np", "mat_to_pose_vec", "matrix_to_axis_angle", "pose_vec_to_mat"),
    "warp": ("view_synthesis",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import the submodule that holds `name` on first access (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
