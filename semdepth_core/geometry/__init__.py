"""Camera geometry: intrinsics, (back-)projection, SE(3), view synthesis and ground-plane checks."""
from .camera import (
    Camera,
    backproject,
    crop_intrinsics,
    pixel_grid,
    project,
    resize_intrinsics,
    scale_intrinsics,
)
from .ground_plane import GroundCheck, below_ground_count, camera_height_scale, fit_plane_ransac
from .se3 import (
    axis_angle_to_matrix,
    compose,
    euler_to_matrix,
    euler_to_matrix_np,
    invert_se3,
    invert_se3_np,
    mat_to_pose_vec,
    matrix_to_axis_angle,
    pose_vec_to_mat,
)
from .warp import view_synthesis

__all__ = [
    "Camera", "backproject", "crop_intrinsics", "pixel_grid", "project", "resize_intrinsics",
    "scale_intrinsics", "axis_angle_to_matrix", "compose", "euler_to_matrix", "euler_to_matrix_np",
    "invert_se3", "invert_se3_np", "mat_to_pose_vec", "matrix_to_axis_angle", "pose_vec_to_mat",
    "view_synthesis", "GroundCheck", "below_ground_count", "camera_height_scale", "fit_plane_ransac",
]
