"""Procedural urban drives written in the exact KITTI raw layout.

Modules: `scene` (world, trajectory, primitives), `raycast`, `shading`, `sensors` (camera, LiDAR) and
`kitti_writer` (calibration, OXTS, `generate_drive`, the CLI: `python -m semdepth_core.data.synthetic`).
This package re-exports their public names.

Every pixel is rendered by casting its exact pinhole ray against analytic scene primitives
(ground planes, curbs, axis-aligned boxes, vertical cylinders, spheres); the nearest hit wins.
Textures are functions of the 3D hit point in the owning object's frame, so they move rigidly
with the geometry, and they are pre-filtered by the pixel footprint so that consecutive frames
stay photometrically consistent.

Scene frame ("world" of `render_frame`): x along the road (forward), y left, z up, road surface
at z = 0. Ego traffic keeps right (ego lane centre at y = -1.75 m).

Every sensor sees the scene up to MAX_RANGE = 120 m along the ray (a far clip, so that primitive
culling never changes the image); beyond it a pixel shows the sky (depth 0, trainId 10), as does
the sky itself, which is a function of the view direction only (infinitely far).

Rig and OXTS: camera 2 = rectified camera 0 (P_rect_02 has no offset, R_rect_00 = I), camera 3 sits
0.54 m to its right; velodyne and IMU follow KITTI's lever arms. The OXTS records are generated
from the true IMU trajectory through the devkit Mercator projection (scale = cos(lat of the first
packet)), so `T_world_cam = T_world_imu(oxts) @ inv(T_cam_velo @ T_velo_imu)` reproduces the
rendered camera poses up to the (fixed) heading of the street. Velocities are in the level
(heading) frame, accelerations are specific forces (gravity included) from finite differences.

Outputs per drive (DATE = out_root/date):
  DATE/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
  DATE/DATE_drive_NNNN_sync/{image_02,image_03}/data/*.png + timestamps.txt
  .../oxts/data/*.txt (30 KITTI fields), oxts/dataformat.txt, oxts/timestamps.txt
  .../velodyne_points/data/*.bin (float32 x, y, z, reflectance in the velodyne frame)
      + timestamps.txt, timestamps_start.txt, timestamps_end.txt
  .../proj_depth/groundtruth/image_02/*.png (uint16 depth*256, 0 = invalid/sky)
  .../semantic/image_02/*.png (Cityscapes trainIds), .../dynamic/image_02/*.png (0/1)
  .../scene.json (generation parameters and the true camera/velodyne/IMU poses)
"""
from __future__ import annotations

from semdepth_core.data.labels import ID, SKY  # noqa: F401

from .kitti_writer import (  # noqa: F401
    OXTS_FIELDS, Rig, generate_drive, intrinsics, main, oxts_camera_poses,
)
from .scene import (  # noqa: F401
    BASELINE, BOX, CAM_HEIGHT, CURB_HEIGHT, CYL, EARTH_RADIUS, EGO_LANE_Y, F32, FRAME_RATE, GRAVITY, HIT_CURB,
    HIT_ROAD, HIT_SIDEWALK, HIT_SKY, LANE_EDGE, MAX_RANGE, M_CANOPY, M_CARBODY, M_FACADE, M_GLASS, M_HEDGE, M_POLE,
    M_SIGN, M_TRUNK, NEAR, ONCOMING_LANE_Y, ROAD_HALF, SEMANTIC_IDS, SEM_BUILDING, SEM_CAR, SEM_POLE, SEM_ROAD,
    SEM_SIDEWALK, SEM_SIGN, SEM_VEG, SPHERE, EgoTrajectory, Mover, Scene, build_scene, make_drive_scene,
)
from .sensors import (  # noqa: F401
    LIDAR_AZIMUTH_STEP_DEG, LIDAR_ELEVATIONS_DEG, LIDAR_MIN_RANGE, render_frame, render_lidar,
)
from .shading import (  # noqa: F401
    EDGE_BLUR,
)

# Bump when the rendered content of a (seed, settings) drive changes: caches key on it.
GENERATOR_VERSION = 3
