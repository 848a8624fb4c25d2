"""Procedural urban drives written in the exact KITTI raw layout.

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

import argparse
import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Bump when the rendered content of a (seed, settings) drive changes: caches key on it.
GENERATOR_VERSION = 3

from semdepth_core.data.labels import ID, SKY

# ----------------------------------------------------------------------------------------------
# constants of the synthetic world and rig
# ----------------------------------------------------------------------------------------------
ROAD_HALF = 5.5          # asphalt half width: two 3.5 m lanes + 2 m parking strips
LANE_EDGE = 3.5          # solid edge lines between driving lanes and parking strips
EGO_LANE_Y = -1.75       # right-hand traffic
ONCOMING_LANE_Y = 1.75
CURB_HEIGHT = 0.15
CAM_HEIGHT = 1.65        # KITTI camera height above the road
BASELINE = 0.54          # KITTI stereo baseline (m)
MAX_RANGE = 120.0        # far clip of every sensor (camera and LiDAR), metres along the ray
FRAME_RATE = 10.0
EARTH_RADIUS = 6378137.0
GRAVITY = 9.81
NEAR = 0.05
F32 = np.float32

SEM_ROAD, SEM_SIDEWALK, SEM_BUILDING = ID["road"], ID["sidewalk"], ID["building"]
SEM_POLE, SEM_SIGN, SEM_VEG, SEM_CAR = ID["pole"], ID["traffic sign"], ID["vegetation"], ID["car"]
SEMANTIC_IDS = (SEM_ROAD, SEM_SIDEWALK, SEM_BUILDING, SEM_POLE, SEM_SIGN, SEM_VEG, SKY, SEM_CAR)

# primitive kinds
BOX, CYL, SPHERE = 0, 1, 2
# materials
(M_FACADE, M_CARBODY, M_GLASS, M_POLE, M_SIGN, M_CANOPY, M_TRUNK, M_HEDGE) = range(8)
# special hit codes in the primitive-id buffer
HIT_ROAD, HIT_SIDEWALK, HIT_CURB, HIT_SKY = -1, -2, -3, -4

LIDAR_ELEVATIONS_DEG = np.linspace(2.0, -24.9, 64)
LIDAR_AZIMUTH_STEP_DEG = 0.6
LIDAR_MIN_RANGE = 2.5

OXTS_FIELDS = (
    ("lat", "latitude of the OXTS unit (deg)"),
    ("lon", "longitude of the OXTS unit (deg)"),
    ("alt", "altitude of the OXTS unit (m)"),
    ("roll", "roll angle (rad), 0 = level, positive = left side up, range -pi .. +pi"),
    ("pitch", "pitch angle (rad), 0 = level, positive = front down, range -pi/2 .. +pi/2"),
    ("yaw", "heading (rad), 0 = east, positive = counter clockwise, range -pi .. +pi"),
    ("vn", "velocity towards north (m/s)"),
    ("ve", "velocity towards east (m/s)"),
    ("vf", "forward velocity, parallel to the earth surface (m/s)"),
    ("vl", "leftward velocity, parallel to the earth surface (m/s)"),
    ("vu", "upward velocity, perpendicular to the earth surface (m/s)"),
    ("ax", "acceleration along the vehicle x axis (front) (m/s^2)"),
    ("ay", "acceleration along the vehicle y axis (left) (m/s^2)"),
    ("az", "acceleration along the vehicle z axis (top) (m/s^2)"),
    ("af", "forward acceleration (m/s^2)"),
    ("al", "leftward acceleration (m/s^2)"),
    ("au", "upward acceleration (m/s^2)"),
    ("wx", "angular rate around the vehicle x axis (rad/s)"),
    ("wy", "angular rate around the vehicle y axis (rad/s)"),
    ("wz", "angular rate around the vehicle z axis (rad/s)"),
    ("wf", "angular rate around the forward axis (rad/s)"),
    ("wl", "angular rate around the leftward axis (rad/s)"),
    ("wu", "angular rate around the upward axis (rad/s)"),
    ("pos_accuracy", "position accuracy (north/east, m)"),
    ("vel_accuracy", "velocity accuracy (north/east, m/s)"),
    ("navstat", "navigation status"),
    ("numsats", "number of satellites tracked by the primary GPS receiver"),
    ("posmode", "position mode of the primary GPS receiver"),
    ("velmode", "velocity mode of the primary GPS receiver"),
    ("orimode", "orientation mode of the primary GPS receiver"),
)


# ----------------------------------------------------------------------------------------------
# small SE(3) helpers (numpy)
# ----------------------------------------------------------------------------------------------
def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _se3(R, t):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _inv(T):
    R, t = T[:3, :3], T[:3, 3]
    return _se3(R.T, -R.T @ t)


# ----------------------------------------------------------------------------------------------
# ego trajectory
# ----------------------------------------------------------------------------------------------
@dataclass
class EgoTrajectory:
    """Smooth ego motion of the IMU in the scene frame: forward speed with slight variation,
    lateral sway in the lane (heading follows the path), small pitch/roll body oscillations."""

    speed: float
    x0: float = 0.0
    speed_amp: float = 0.05
    speed_period: float = 7.0
    speed_phase: float = 0.0
    sway_amp: float = 0.25
    sway_wavelength: float = 70.0
    sway_phase: float = 0.0
    pitch_amp: float = 0.004
    pitch_period: float = 2.3
    pitch_phase: float = 0.0
    roll_amp: float = 0.003
    roll_period: float = 3.1
    roll_phase: float = 0.0
    imu_height: float = 0.93

    def x(self, t):
        t = np.asarray(t, dtype=np.float64)
        w = 2 * math.pi / self.speed_period
        return (self.x0 + self.speed * t
                - self.speed * self.speed_amp / w * (np.cos(w * t + self.speed_phase) - math.cos(self.speed_phase)))

    def _k(self):
        return 2 * math.pi / self.sway_wavelength

    def y(self, t):
        return EGO_LANE_Y + self.sway_amp * np.sin(self._k() * self.x(t) + self.sway_phase)

    def yaw(self, t):
        # heading = direction of travel: dy/dx of the sway path
        return np.arctan(self.sway_amp * self._k() * np.cos(self._k() * self.x(t) + self.sway_phase))

    def pitch(self, t):
        return self.pitch_amp * np.sin(2 * math.pi * np.asarray(t, float) / self.pitch_period + self.pitch_phase)

    def roll(self, t):
        return self.roll_amp * np.sin(2 * math.pi * np.asarray(t, float) / self.roll_period + self.roll_phase)

    def position(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.stack([self.x(t), self.y(t), np.full_like(t, self.imu_height)], -1)

    def rotation(self, t: float) -> np.ndarray:
        return _rz(float(self.yaw(t))) @ _ry(float(self.pitch(t))) @ _rx(float(self.roll(t)))

    def T_world_imu(self, t: float) -> np.ndarray:
        return _se3(self.rotation(t), self.position(t))


# ----------------------------------------------------------------------------------------------
# scene description
# ----------------------------------------------------------------------------------------------
class _PrimList:
    """Accumulates primitives, then freezes them into flat arrays."""

    def __init__(self):
        self.rows = []

    def add(self, kind, lo, hi, mat, sem, color, origin, var=0.0, dyn=0, ctr=(0, 0, 0), rad=0.0):
        self.rows.append((kind, np.asarray(lo, float), np.asarray(hi, float), mat, sem,
                          np.asarray(color, float), np.asarray(origin, float), float(var), dyn,
                          np.asarray(ctr, float), float(rad)))

    def box(self, lo, hi, mat, sem, color, origin=None, var=0.0, dyn=0):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.add(BOX, lo, hi, mat, sem, color, lo if origin is None else origin, var, dyn)

    def cylinder(self, cx, cy, z0, z1, r, mat, sem, color, var=0.0, dyn=0):
        self.add(CYL, (cx - r, cy - r, z0), (cx + r, cy + r, z1), mat, sem, color, (cx, cy, z0), var, dyn,
                 ctr=(cx, cy, z0), rad=r)

    def sphere(self, c, r, mat, sem, color, var=0.0, dyn=0):
        c = np.asarray(c, float)
        self.add(SPHERE, c - r, c + r, mat, sem, color, c, var, dyn, ctr=c, rad=r)

    def arrays(self) -> dict:
        n = len(self.rows)
        out = {
            "kind": np.array([r[0] for r in self.rows], np.int8).reshape(n),
            "lo": np.array([r[1] for r in self.rows], np.float64).reshape(n, 3),
            "hi": np.array([r[2] for r in self.rows], np.float64).reshape(n, 3),
            "mat": np.array([r[3] for r in self.rows], np.int8).reshape(n),
            "sem": np.array([r[4] for r in self.rows], np.uint8).reshape(n),
            "color": np.array([r[5] for r in self.rows], np.float64).reshape(n, 3),
            "origin": np.array([r[6] for r in self.rows], np.float64).reshape(n, 3),
            "var": np.array([r[7] for r in self.rows], np.float64).reshape(n),
            "dyn": np.array([r[8] for r in self.rows], np.uint8).reshape(n),
            "ctr": np.array([r[9] for r in self.rows], np.float64).reshape(n, 3),
            "rad": np.array([r[10] for r in self.rows], np.float64).reshape(n),
        }
        return out


def _concat(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]], 0) for k in a}


def _shift(prims: dict, offset) -> dict:
    off = np.asarray(offset, float)
    out = dict(prims)
    for k in ("lo", "hi", "origin", "ctr"):
        out[k] = prims[k] + off
    return out


@dataclass
class Mover:
    """A rigid moving object: primitives in its local frame (origin on the ground at its centre)."""

    parts: dict
    y: float
    mode: str            # 'lead' (x = ego.x(t) + gap) or 'const' (x = x0 + v t)
    gap: float = 0.0
    x0: float = 0.0
    v: float = 0.0

    def x(self, t: float, ego: EgoTrajectory) -> float:
        if self.mode == "lead":
            return float(ego.x(t)) + self.gap
        return self.x0 + self.v * t


@dataclass
class Scene:
    """Static primitives, moving objects, the ego trajectory, lighting and the noise table.

    `prims` holds the primitives at `time` (movers included when built with `at`)."""

    seed: int
    prims: dict
    movers: list = field(default_factory=list)
    ego: EgoTrajectory | None = None
    sun: np.ndarray = field(default_factory=lambda: np.array([0.4, -0.5, 0.77]))
    noise: np.ndarray | None = None
    time: float | None = None

    @property
    def noise_flat(self) -> np.ndarray:
        return self.noise.reshape(-1)

    def at(self, t: float) -> "Scene":
        """Snapshot with every mover placed at time t (seconds since the first frame)."""
        prims = self.prims
        for m in self.movers:
            prims = _concat(prims, _shift(m.parts, (m.x(t, self.ego), m.y, 0.0)))
        return Scene(self.seed, prims, [], self.ego, self.sun, self.noise, float(t))


def _car_parts(rng, color, dyn: int) -> dict:
    """Car body + cabin boxes in the car frame (x forward, origin on the ground at the centre)."""
    L = rng.uniform(3.9, 4.7)
    Wd = rng.uniform(1.7, 1.9)
    hb = rng.uniform(0.95, 1.1)
    hc = hb + rng.uniform(0.42, 0.55)
    pl = _PrimList()
    pl.box((-L / 2, -Wd / 2, 0.12), (L / 2, Wd / 2, hb), M_CARBODY, SEM_CAR, color, origin=(0, 0, 0), var=L, dyn=dyn)
    front, rear = rng.uniform(0.9, 1.2), rng.uniform(0.5, 0.8)
    pl.box((-L / 2 + rear, -Wd / 2 + 0.1, hb), (L / 2 - front, Wd / 2 - 0.1, hc), M_GLASS, SEM_CAR, color,
           origin=(0, 0, 0), var=L, dyn=dyn)
    return pl.arrays()


_CAR_COLORS = np.array([[0.75, 0.75, 0.78], [0.12, 0.12, 0.14], [0.55, 0.08, 0.07], [0.12, 0.2, 0.45],
                        [0.45, 0.47, 0.5], [0.85, 0.85, 0.82], [0.2, 0.35, 0.25], [0.6, 0.45, 0.2]])


def build_scene(seed: int, x_min: float, x_max: float, ego: EgoTrajectory, lead_car: bool = False,
                oncoming: int = 0) -> Scene:
    """Lay out a straight urban street over x in [x_min, x_max] (deterministic per seed).

    Every element type and side draws from its own random stream, so a longer street with the
    same seed and x_min extends a shorter one (the first frames of a longer drive are the same)."""
    if not x_max > x_min:
        raise ValueError(f"x_max must exceed x_min, got [{x_min}, {x_max}]")

    def stream(*key):
        return np.random.default_rng([int(seed), 9176, *key])

    pl = _PrimList()
    for si, side in enumerate((1.0, -1.0)):
        rng = stream(si, 0)
        sw = rng.uniform(2.6, 4.0)                     # sidewalk width up to the facade line
        # --- buildings and gaps (with hedges and trees) ---
        x = x_min - rng.uniform(0, 15)
        while x < x_max:
            L = rng.uniform(8, 24)
            if rng.random() < 0.15:
                gap = rng.uniform(4, 9)
                yh = side * (ROAD_HALF + sw + 0.5)
                pl.box((x, min(yh, yh + side * 1.0), 0.0), (x + gap, max(yh, yh + side * 1.0), rng.uniform(0.9, 1.6)),
                       M_HEDGE, SEM_VEG, (0.16, 0.3, 0.1), var=rng.uniform(0, 100))
                tx = x + gap / 2
                ty = side * (ROAD_HALF + sw + 4.0)
                pl.cylinder(tx, ty, 0.0, 3.5, 0.25, M_TRUNK, SEM_VEG, (0.3, 0.22, 0.15))
                pl.sphere((tx, ty, 5.0), rng.uniform(2.2, 3.2), M_CANOPY, SEM_VEG, (0.2, 0.36, 0.12),
                          var=rng.uniform(0, 100))
                x += gap
                continue
            setback = 0.0 if rng.random() < 0.5 else rng.uniform(0.5, 3.0)
            yf = side * (ROAD_HALF + sw + setback)
            yb = yf + side * rng.uniform(10, 16)
            h = rng.uniform(7, 22)
            brick = rng.random() < 0.45
            if brick:
                col = np.array([0.55, 0.27, 0.18]) * rng.uniform(0.8, 1.15) + rng.uniform(-0.04, 0.04, 3)
            else:
                col = np.array([0.72, 0.68, 0.6]) * rng.uniform(0.75, 1.15) + rng.uniform(-0.08, 0.08, 3)
            spacing = rng.uniform(2.4, 3.6)
            # var encodes (texture type, window spacing): brick -> negative spacing
            pl.box((x, min(yf, yb), 0.0), (x + L, max(yf, yb), h), M_FACADE, SEM_BUILDING, np.clip(col, 0.05, 0.95),
                   origin=(x, yf, 0.0), var=-spacing if brick else spacing)
            x += L
        # --- parked cars in the parking strip ---
        rng = stream(si, 1)
        x = x_min + rng.uniform(0, 6)
        while x < x_max:
            if rng.random() < 0.35:
                x += rng.uniform(5, 20)
                continue
            col = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1)
            parts = _car_parts(rng, np.clip(col, 0.03, 0.95), 0)
            L = parts["hi"][0, 0] - parts["lo"][0, 0]
            cy = side * (ROAD_HALF - 1.05) + rng.uniform(-0.1, 0.1)
            pts = _shift(parts, (x + L / 2, cy, 0.0))
            pl.rows.extend(_rows_from_arrays(pts))
            x += L + rng.uniform(1.0, 5.0)
        # --- street trees on the sidewalk ---
        rng = stream(si, 2)
        x = x_min + rng.uniform(0, 10)
        while x < x_max:
            if rng.random() < 0.7:
                ty = side * (ROAD_HALF + 1.3)
                th = rng.uniform(2.2, 3.0)
                r = rng.uniform(1.3, 2.0)
                pl.cylinder(x, ty, 0.0, th + r * 0.6, rng.uniform(0.12, 0.2), M_TRUNK, SEM_VEG, (0.32, 0.24, 0.16))
                pl.sphere((x, ty, th + r * 0.9), r, M_CANOPY, SEM_VEG,
                          np.array([0.2, 0.38, 0.12]) * rng.uniform(0.8, 1.2), var=rng.uniform(0, 100))
            x += rng.uniform(10, 22)
        # --- poles with or without a traffic sign ---
        rng = stream(si, 3)
        x = x_min + rng.uniform(0, 15)
        while x < x_max:
            py = side * (ROAD_HALF + 0.45)
            h = rng.uniform(3.0, 6.5)
            pl.cylinder(x, py, 0.0, h, rng.uniform(0.05, 0.08), M_POLE, SEM_POLE, (0.55, 0.56, 0.58))
            if rng.random() < 0.6:
                s = rng.uniform(0.55, 0.8)
                zc = min(h - s / 2 - 0.05, rng.uniform(2.2, 2.8))
                col = [(0.1, 0.25, 0.65), (0.75, 0.1, 0.1), (0.9, 0.75, 0.1)][rng.integers(3)]
                pl.box((x - 0.09, py - s / 2, zc - s / 2), (x - 0.05, py + s / 2, zc + s / 2), M_SIGN, SEM_SIGN, col,
                       origin=(x - 0.09, py, zc), var=rng.uniform(0, 1))
            x += rng.uniform(15, 40)
    prims = pl.arrays()
    movers = []
    rng = stream(2)
    if lead_car:
        col = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
        movers.append(Mover(_car_parts(rng, col, 1), EGO_LANE_Y, "lead", gap=float(rng.uniform(10.0, 15.0))))
    for _ in range(int(oncoming)):
        col = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
        v = -float(rng.uniform(7.0, 12.0))
        t_meet = float(rng.uniform(1.5, 6.0)) + 4.0 * len(movers)
        x_meet = float(ego.x(t_meet))
        movers.append(Mover(_car_parts(rng, col, 1), ONCOMING_LANE_Y, "const", x0=x_meet - v * t_meet, v=v))
    rng = stream(3)
    sun_az = rng.uniform(-math.pi, math.pi)
    sun_el = rng.uniform(0.5, 1.0)
    sun = np.array([math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el)])
    noise = np.random.default_rng([int(seed), 4242]).random((256, 256)).astype(np.float32)
    return Scene(int(seed), prims, movers, ego, sun, noise)


def _rows_from_arrays(a: dict) -> list:
    return [(int(a["kind"][i]), a["lo"][i], a["hi"][i], int(a["mat"][i]), int(a["sem"][i]), a["color"][i],
             a["origin"][i], float(a["var"][i]), int(a["dyn"][i]), a["ctr"][i], float(a["rad"][i]))
            for i in range(len(a["kind"]))]


# ----------------------------------------------------------------------------------------------
# ray casting
# ----------------------------------------------------------------------------------------------
_BOX_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]])
_BOX_CORNER_BITS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], bool)


def _corners(lo, hi):
    """[P,3] AABBs -> [P,8,3] corners."""
    return np.where(_BOX_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])


def _ground(o, D, invD):
    """Analytic ground: road (z=0, |y|<ROAD_HALF), raised sidewalk (z=CURB), curb faces.
    Valid for an origin above the road. D, invD: (x, y, z) component arrays.
    Returns t float32 [...] (inf = no hit) and code int32 [...] (HIT_* or HIT_SKY)."""
    dy, dz = D[1], D[2]
    t_side = F32(CURB_HEIGHT - o[2]) * invD[2]
    t_road = F32(-o[2]) * invD[2]
    down = dz < -1e-9
    y_side = F32(o[1]) + t_side * dy
    y_road = F32(o[1]) + t_road * dy
    on_side = down & (np.abs(y_side) >= ROAD_HALF)
    on_road = down & ~on_side & (np.abs(y_road) < ROAD_HALF)
    on_curb = down & ~on_side & ~on_road
    t = np.full(dz.shape, np.inf, F32)
    code = np.full(dz.shape, HIT_SKY, np.int32)
    t[on_side] = t_side[on_side]
    code[on_side] = HIT_SIDEWALK
    t[on_road] = t_road[on_road]
    code[on_road] = HIT_ROAD
    if on_curb.any():
        dyc = dy[on_curb]
        yc = np.where(dyc > 0, F32(ROAD_HALF), F32(-ROAD_HALF))
        t[on_curb] = (yc - F32(o[1])) / dyc
        code[on_curb] = HIT_CURB
    return t, code


def _intersect(kind, lo, hi, ctr, rad, o, D, invD):
    """Nearest hit distance of rays (o + t D) with one primitive (inf = miss).
    D, invD: tuples of 3 float32 arrays (x, y, z components)."""
    if kind == BOX:
        tmin = tmax = None
        for k in range(3):
            t1 = F32(lo[k] - o[k]) * invD[k]
            t2 = F32(hi[k] - o[k]) * invD[k]
            if tmin is None:
                tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            else:
                np.maximum(tmin, np.minimum(t1, t2), out=tmin)
                np.minimum(tmax, np.maximum(t1, t2), out=tmax)
        hit = (tmax >= tmin) & (tmin > NEAR)
        return np.where(hit, tmin, F32(np.inf))
    dx, dy, dz = D
    if kind == CYL:
        ox, oy = F32(o[0] - ctr[0]), F32(o[1] - ctr[1])
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - F32(rad * rad)
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(disc)) / a
        z = F32(o[2]) + t * dz
        hit = (disc > 0) & (t > NEAR) & (z >= lo[2]) & (z <= hi[2])
        return np.where(hit, t, F32(np.inf))
    oc = (o - ctr).astype(F32)
    a = dx * dx + dy * dy + dz * dz
    b = oc[0] * dx + oc[1] * dy + oc[2] * dz
    c = F32(oc @ oc - rad * rad)
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    hit = (disc > 0) & (t > NEAR)
    return np.where(hit, t, F32(np.inf))


def _cull(prims, o, max_range):
    """Indices of primitives whose AABB comes within max_range of the origin."""
    lo, hi = prims["lo"], prims["hi"]
    d = np.maximum(np.maximum(lo - o, o - hi), 0.0)
    return np.nonzero((d * d).sum(1) < max_range * max_range)[0]


def _camera_rects(prims, idx, T_cam_world, K, W, H):
    """Pixel rectangles (r0, r1, c0, c1) bounding each primitive's image (near-plane clipped)."""
    C = _corners(prims["lo"][idx], prims["hi"][idx])                     # [P,8,3]
    Cc = C @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = Cc[..., 2]
    e0, e1 = Cc[:, _BOX_EDGES[:, 0]], Cc[:, _BOX_EDGES[:, 1]]              # [P,12,3]
    z0, z1 = e0[..., 2], e1[..., 2]
    cross = (z0 - NEAR) * (z1 - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (NEAR - z0) / (z1 - z0)
    E = e0 + s[..., None] * (e1 - e0)
    pts = np.concatenate([Cc, E], 1)                                      # [P,20,3]
    ok = np.concatenate([z >= NEAR, cross], 1)
    zz = np.where(ok, pts[..., 2], 1.0)
    u = K[0, 0] * pts[..., 0] / zz + K[0, 2]
    v = K[1, 1] * pts[..., 1] / zz + K[1, 2]
    big = 1e9
    umin = np.where(ok, u, big).min(1)
    umax = np.where(ok, u, -big).max(1)
    vmin = np.where(ok, v, big).min(1)
    vmax = np.where(ok, v, -big).max(1)
    c0 = np.clip(np.floor(umin) - 1, 0, W).astype(int)
    c1 = np.clip(np.ceil(umax) + 2, 0, W).astype(int)
    r0 = np.clip(np.floor(vmin) - 1, 0, H).astype(int)
    r1 = np.clip(np.ceil(vmax) + 2, 0, H).astype(int)
    keep = ok.any(1) & (c1 > c0) & (r1 > r0)
    return [(int(i), slice(a, b), slice(c, d)) for i, a, b, c, d, k in zip(idx, r0, r1, c0, c1, keep) if k]


def _trace(prims, o, Dc, Ic, regions, dnorm=None):
    """Nearest hit over ground + the primitives in `regions` [(prim, row_sel, col_sel)].
    Dc, Ic: (x, y, z) float32 [R,C] ray direction components and their inverses; dnorm: |D|
    (None = unit rays). Returns t float32 [R,C] (inf = nothing within MAX_RANGE) and the hit
    code (primitive index >= 0 or HIT_*)."""
    t, pid = _ground(o, Dc, Ic)
    kind, lo, hi, ctr, rad = prims["kind"], prims["lo"], prims["hi"], prims["ctr"], prims["rad"]
    for p, rs, cs in regions:
        tp = _intersect(kind[p], lo[p], hi[p], ctr[p], rad[p], o, tuple(d[rs, cs] for d in Dc),
                        tuple(d[rs, cs] for d in Ic))
        tb = t[rs, cs]
        m = tp < tb
        if isinstance(cs, slice):
            tb[m] = tp[m]
            pid[rs, cs][m] = p
        else:  # fancy column index (LiDAR): write back copies
            t[rs, cs] = np.where(m, tp, tb)
            pid[rs, cs] = np.where(m, p, pid[rs, cs])
    rng = t if dnorm is None else t * dnorm
    far = ~(rng <= MAX_RANGE)
    t[far] = np.inf
    pid[far] = HIT_SKY
    return t, pid


def _normals(prims, pid, P):
    """Unit surface normals (float32) of hit points P [N,3] on primitives pid [N] (>= 0)."""
    kind = prims["kind"][pid]
    n = np.zeros(P.shape, F32)
    bx = np.nonzero(kind == BOX)[0]
    if bx.size:
        # the face hit is the one the point lies on: smallest distance to a slab boundary
        ib = pid[bx]
        dl = [np.abs(P[bx, k] - prims["lo"][ib, k].astype(F32)) for k in range(3)]
        dh = [np.abs(P[bx, k] - prims["hi"][ib, k].astype(F32)) for k in range(3)]
        dm = [np.minimum(dl[k], dh[k]) for k in range(3)]
        on0 = (dm[0] <= dm[1]) & (dm[0] <= dm[2])
        on1 = ~on0 & (dm[1] <= dm[2])
        on2 = ~on0 & ~on1
        for k, on in enumerate((on0, on1, on2)):
            n[bx, k] = np.where(on, np.where(dl[k] < dh[k], F32(-1.0), F32(1.0)), F32(0.0))
    cy = np.nonzero(kind == CYL)[0]
    if cy.size:
        rr = P[cy, :2] - prims["ctr"][pid[cy], :2].astype(F32)
        n[cy, :2] = rr / np.sqrt((rr * rr).sum(1, keepdims=True))
    sp = np.nonzero(kind == SPHERE)[0]
    if sp.size:
        rr = P[sp] - prims["ctr"][pid[sp]].astype(F32)
        n[sp] = rr / np.sqrt((rr * rr).sum(1, keepdims=True))
    return n


# ----------------------------------------------------------------------------------------------
# procedural textures (float32, band-limited by the pixel footprint)
# ----------------------------------------------------------------------------------------------
def _noise2(tab, a, b):
    """Smooth value noise in [0,1] from a flat 256x256 lattice table (float32 in/out)."""
    a0, b0 = np.floor(a), np.floor(b)
    fa, fb = a - a0, b - b0
    fa = fa * fa * (3 - 2 * fa)
    fb = fb * fb * (3 - 2 * fb)
    ia = (a0.astype(np.int32) & 255) << 8
    ib = b0.astype(np.int32) & 255
    ia1 = (ia + 256) & 0xFF00
    ib1 = (ib + 1) & 255
    v0 = tab.take(ia | ib)
    v0 += (tab.take(ia | ib1) - v0) * fb
    v1 = tab.take(ia1 | ib)
    v1 += (tab.take(ia1 | ib1) - v1) * fb
    return v0 + (v1 - v0) * fa


def _noise3(tab, a, b, c):
    c0 = np.floor(c)
    fc = c - c0
    fc = fc * fc * (3 - 2 * fc)
    ic = c0 * F32(1.0)
    n0 = _noise2(tab, a + F32(57.0) * ic, b + F32(113.0) * ic)
    n1 = _noise2(tab, a + F32(57.0) * (ic + 1), b + F32(113.0) * (ic + 1))
    return n0 + (n1 - n0) * fc


def _aa(fp, size):
    """Weight of a detail of feature size `size` (m) given the pixel footprint fp (m): 1 when
    well resolved, fading to 0 before it would alias."""
    return np.clip(F32(size / 1.5) / fp - F32(1.0), F32(0.0), F32(1.0))   # 0 at 1.5 px, 1 at 3 px


def _fbm(tab, coords, fp, freqs, gain=0.65, off=0.0):
    """Band-limited fractal value noise (2 or 3 coordinates), zero mean, roughly in [-0.5, 0.5].
    Octaves too fine for a point's footprint are faded out and not evaluated there."""
    out = np.zeros(fp.shape, F32)
    norm = sum(gain ** i for i in range(len(freqs)))
    amp = 1.0 / norm
    for i, f in enumerate(freqs):
        w = _aa(fp, 1.0 / f)
        sel = w > 0
        cnt = int(np.count_nonzero(sel))
        if cnt == 0:
            break
        if cnt == sel.size:
            cs = [c * F32(f) for c in coords]
            ws = w
        else:
            cs = [c[sel] * F32(f) for c in coords]
            ws = w[sel]
        o1, o2 = F32(off + 31.7 * i), F32(-off + 17.3 * i)
        if len(cs) == 2:
            n = _noise2(tab, cs[0] + o1, cs[1] + o2)
        else:
            n = _noise3(tab, cs[0] + o1, cs[1] + o2, cs[2])
        val = (n - F32(0.5)) * ws * F32(2.0 * amp)
        if cnt == sel.size:
            out += val
        else:
            out[sel] += val
        amp *= gain
    return out


EDGE_BLUR = 1.6   # width of anti-aliased edges in pixel footprints (a camera-like point spread)


def _band(u, a, b, fp):
    """Anti-aliased coverage of the interval [a, b] at coordinate u (footprint fp)."""
    return np.clip(np.minimum(u - F32(a), F32(b) - u) / (fp * F32(EDGE_BLUR)) + F32(0.5), F32(0.0), F32(1.0))


def _pband(u, period, a, b, fp):
    """Coverage of the periodic interval [a, b] (mod period), anti-aliased, seamless at the wrap."""
    c = 0.5 * (a + b)
    uu = np.mod(u - F32(c - 0.5 * period), F32(period)) - F32(0.5 * period)
    return _band(uu, a - c, b - c, fp)


def _grazing(fp, cos):
    """Footprint widened at grazing incidence (compromise between the two footprint axes)."""
    return fp / np.sqrt(np.clip(np.abs(cos), F32(0.03), F32(1.0)))


def _shade_points(scene: Scene, P, pid, fp, dirs):
    """Albedo (RGB in [0,1], float32 [N,3]) and unit normals of hit points P [N,3] (float32,
    scene frame) with hit codes pid [N], isotropic pixel footprints fp [N] (m) and unit ray
    directions dirs [N,3]."""
    tab = scene.noise_flat
    pr = scene.prims
    P = np.asarray(P, F32)
    N = P.shape[0]
    fp = np.maximum(fp, 1e-4).astype(F32)
    dirs = np.asarray(dirs, F32)
    alb = np.zeros((N, 3), F32)
    nrm = np.zeros((N, 3), F32)
    nrm[:, 2] = 1.0
    # ------------------------------------------------------------------ ground
    m = np.nonzero(pid == HIT_ROAD)[0]
    if m.size:
        x, y, f = P[m, 0], P[m, 1], _grazing(fp[m], dirs[m, 2])
        g = F32(0.31) + F32(0.17) * _fbm(tab, (x, y), f, (0.35, 1.3, 3.1, 7.0, 15.0, 31.0, 63.0), gain=0.85)
        # markings: dashed centre line, solid lane edges
        cov = _band(y, -0.075, 0.075, f) * _pband(x, 9.0, 0.0, 3.0, f)
        cov = np.maximum(cov, _band(np.abs(y), LANE_EDGE - 0.075, LANE_EDGE + 0.075, f))
        g += cov * (F32(0.8) - g)
        alb[m] = g[:, None] * np.array([1.0, 1.0, 1.04], F32)
    m = np.nonzero(pid == HIT_SIDEWALK)[0]
    if m.size:
        x, y, f = P[m, 0], P[m, 1], _grazing(fp[m], dirs[m, 2])
        tile = 0.4
        ix, iy = np.floor(x / F32(tile)).astype(np.int32), np.floor(y / F32(tile)).astype(np.int32)
        tv = tab.take(((ix * 7) & 255) << 8 | ((iy * 13 + 101) & 255)) - F32(0.5)
        gx = _pband(x, tile, -0.02, 0.02, f)
        gy = _pband(y, tile, -0.02, 0.02, f)
        w = _aa(f, tile)
        g = F32(0.55) + F32(0.12) * tv * w + F32(0.14) * _fbm(tab, (x, y), f, (1.0, 4.0, 11.0, 27.0, 60.0), 0.85, 3.0)
        g *= w * (F32(1.0) - F32(0.45) * np.maximum(gx, gy)) + (F32(1.0) - w) * F32(0.91)
        alb[m] = g[:, None] * np.array([1.0, 0.97, 0.93], F32)
    m = np.nonzero(pid == HIT_CURB)[0]
    if m.size:
        x, z, f = P[m, 0], P[m, 2], _grazing(fp[m], dirs[m, 1])
        g = F32(0.62) + F32(0.16) * _fbm(tab, (x, z), f, (2.0, 7.0, 19.0, 45.0), 0.85, 5.0)
        alb[m] = g[:, None]
        nrm[m] = 0.0
        nrm[m, 1] = -np.sign(P[m, 1])
    # ------------------------------------------------------------------ primitives
    mp = np.nonzero(pid >= 0)[0]
    if mp.size == 0:
        return np.clip(alb, 0.0, 1.0), nrm
    ids = pid[mp]
    Pm = P[mp]
    n = _normals(pr, ids, Pm)
    nrm[mp] = n
    L = Pm - pr["origin"][ids].astype(F32)            # object-local coordinates (texture frame)
    Pw = Pm
    a = np.zeros((ids.size, 3), F32)
    mat = pr["mat"][ids]
    base = pr["color"][ids].astype(F32)
    var = pr["var"][ids].astype(F32)
    f = _grazing(fp[mp], (n * dirs[mp]).sum(1))

    q = np.nonzero(mat == M_FACADE)[0]
    if q.size:  # facade: window grid over brick or plaster
        Lq, nq, fq = L[q], n[q], f[q]
        s = np.where(np.abs(nq[:, 1]) > 0.5, Lq[:, 0], Lq[:, 1])   # along-facade coordinate
        z = Lq[:, 2]
        spacing = np.abs(var[q])
        brick = var[q] < 0
        wall = F32(1.0) + F32(0.7) * _fbm(tab, (s, z), fq, (0.4, 1.7, 4.5, 11.0, 27.0, 65.0), 0.97, 2.0)
        b = np.nonzero(brick)[0]
        if b.size:
            zb, fb = z[b], fq[b]
            course = np.floor(zb / F32(0.075))
            sb = s[b] + F32(0.125) * np.mod(course, 2)
            mort = np.maximum(_pband(zb, 0.075, -0.008, 0.008, fb), _pband(sb, 0.25, -0.008, 0.008, fb))
            bv = tab.take(((np.floor(sb / F32(0.25)).astype(np.int32) * 5) & 255) << 8
                          | (course.astype(np.int32) & 255)) - F32(0.5)
            wb = _aa(fb, 0.075)
            wall[b] += wb * (F32(0.3) * bv + F32(0.35) * mort - F32(0.05))
        col = base[q] * wall[:, None]
        # windows (1.2 x 1.6 m) with light frames on floors of 3 m
        fe = fq * F32(EDGE_BLUR)
        zs = z - F32(0.9)
        top = (pr["hi"][ids[q], 2] - 0.8).astype(F32)
        half = spacing / 2
        dm = np.abs(np.mod(s, spacing) - half)                     # distance from the window axis
        floor_ok = (zs > 0.3) & (z < top)
        win = np.clip((F32(0.6) - dm) / fe + F32(0.5), 0, 1) * _pband(zs, 3.0, 0.6, 2.2, fq) * floor_ok
        frm = np.clip(np.clip((F32(0.7) - dm) / fe + F32(0.5), 0, 1) * _pband(zs, 3.0, 0.5, 2.3, fq) * floor_ok
                      - win, 0, 1)
        col = col * (F32(1.0) - win - frm)[:, None] + F32(0.8) * frm[:, None]
        k = np.nonzero(win > 0)[0]
        if k.size:
            sk, zk = s[k], z[k]
            glass = (F32(0.16) + F32(0.22) * (_noise2(tab, sk * F32(0.35) + F32(40.0), zk * F32(0.5)) - F32(0.3))
                     + F32(0.06) * _fbm(tab, (sk, zk), fq[k], (2.0, 6.0), 0.7, 4.0))
            col[k] += (glass * win[k])[:, None] * np.array([0.85, 0.95, 1.1], F32)
        col[nq[:, 2] > 0.5] = 0.3                      # roofs
        a[q] = col
    q = np.nonzero(mat == M_CARBODY)[0]
    if q.size:
        Lq, fq = L[q], f[q]
        x, y, z = Lq[:, 0], Lq[:, 1], Lq[:, 2]
        col = base[q] * (F32(1.0) + F32(0.14) * _fbm(tab, (x, y, z), fq, (1.5, 6.0, 20.0)))[:, None]
        dark = _band(z, -1.0, 0.38, fq)                  # bumpers / wheels band
        seam = np.clip(_band(np.abs(x), 0.3, 0.34, fq) + _band(np.abs(x), 1.2, 1.24, fq), 0, 1)
        col *= (F32(1.0) - F32(0.35) * seam)[:, None]
        tyre = F32(0.06) + F32(0.06) * _noise2(tab, x * F32(8.0), z * F32(8.0))
        col = col * (F32(1.0) - dark)[:, None] + (tyre * dark)[:, None]
        endf = np.abs(n[q][:, 0]) > 0.5                  # rear / front: lights and plate
        lights = _band(np.abs(y), 0.55, 0.85, fq) * _band(z, 0.7, 0.88, fq) * endf
        plate = _band(y, -0.26, 0.26, fq) * _band(z, 0.42, 0.54, fq) * endf
        col = (col * (F32(1.0) - lights - plate)[:, None] + np.array([0.75, 0.06, 0.05], F32) * lights[:, None]
               + np.array([0.9, 0.9, 0.85], F32) * plate[:, None])
        a[q] = col
    q = np.nonzero(mat == M_GLASS)[0]
    if q.size:
        Lq, fq = L[q], f[q]
        g = (F32(0.1) + F32(0.1) * np.clip(Lq[:, 2] - F32(1.0), 0, 0.6)
             + F32(0.06) * _fbm(tab, (Lq[:, 0], Lq[:, 1], Lq[:, 2]), fq, (2.0, 7.0), 0.7, 3.0))
        col = g[:, None] * np.array([0.8, 0.9, 1.0], F32)
        pillar = _band(np.abs(Lq[:, 0]), 0.2, 0.3, fq)[:, None]
        col = col * (F32(1.0) - pillar) + base[q] * pillar * F32(0.8)
        roof = n[q][:, 2] > 0.5
        col[roof] = base[q][roof] * F32(0.95)
        a[q] = col
    q = np.nonzero((mat == M_CANOPY) | (mat == M_HEDGE))[0]
    if q.size:
        Pq, fq = Pw[q], f[q]
        leaf = _fbm(tab, (Pq[:, 0], Pq[:, 1], Pq[:, 2]), fq, (0.8, 2.5, 6.0, 14.0, 30.0), 0.85)
        a[q] = base[q] * (F32(1.0) + F32(1.1) * leaf)[:, None]
    q = np.nonzero(mat == M_TRUNK)[0]
    if q.size:
        Lq, fq = L[q], f[q]
        ang = np.arctan2(Lq[:, 1], Lq[:, 0]) * F32(2.0)
        a[q] = base[q] * (F32(1.0) + F32(0.45) * _fbm(tab, (ang, Lq[:, 2]), fq, (1.0, 4.0, 15.0), 0.8, 6.0))[:, None]
    q = np.nonzero(mat == M_POLE)[0]
    if q.size:
        Lq, fq = L[q], f[q]
        a[q] = base[q] * (F32(1.0) + F32(0.2) * _fbm(tab, (Lq[:, 2], Lq[:, 0] * F32(3.0)), fq, (0.7, 3.0, 11.0),
                                                     0.7, 8.0))[:, None]
    q = np.nonzero(mat == M_SIGN)[0]
    if q.size:
        Lq, fq = L[q], f[q]
        r = np.sqrt(Lq[:, 1] ** 2 + Lq[:, 2] ** 2)
        ring = _band(r, 0.2, 0.26, fq)
        col = base[q] * (F32(1.0) - ring)[:, None] + F32(0.95) * ring[:, None]
        col *= (F32(1.0) + F32(0.1) * _fbm(tab, (Lq[:, 1], Lq[:, 2]), fq, (5.0, 15.0), 0.7, 1.0))[:, None]
        col[n[q][:, 0] > -0.5] = 0.5                   # back of the plate
        a[q] = col
    alb[mp] = a
    return np.clip(alb, 0.0, 1.0), nrm


def _sky(scene: Scene, Dn):
    """Sky colour from unit view directions only (infinitely far: no parallax)."""
    tab = scene.noise_flat
    Dn = Dn.astype(F32)
    dz = Dn[:, 2]
    h = np.clip(dz, 0.0, 1.0) ** F32(0.6)
    horizon = np.array([0.8, 0.86, 0.93], F32)
    zenith = np.array([0.32, 0.52, 0.85], F32)
    col = horizon + (zenith - horizon) * h[:, None]
    den = np.maximum(dz, F32(0.02)) + F32(0.15)
    a, b = Dn[:, 0] / den, Dn[:, 1] / den
    cl = _noise2(tab, a * F32(1.5) + F32(90.0), b * F32(1.5)) * F32(0.6) \
        + _noise2(tab, a * F32(5.0), b * F32(5.0) + F32(50.0)) * F32(0.4)
    cover = np.clip((cl - F32(0.45)) * F32(3.0), 0, 1) * np.clip(dz * F32(8.0) + F32(0.5), 0, 1)
    cloud = F32(0.88) + F32(0.1) * (_noise2(tab, a * F32(11.0) + F32(7.0), b * F32(11.0)) - F32(0.5))
    return col + (cloud[:, None] - col) * cover[:, None]


# ----------------------------------------------------------------------------------------------
# sensors
# ----------------------------------------------------------------------------------------------
_RAY_CACHE: dict = {}


def _camera_rays(K, W, H):
    """Camera-frame rays (a, b, 1) through every pixel centre: a, b and |(a, b, 1)|, float32 [H,W]."""
    key = (W, H) + tuple(np.round(np.asarray(K, float).ravel(), 9))
    if key not in _RAY_CACHE:
        u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        a, b = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = (a.astype(F32), b.astype(F32), np.sqrt(a * a + b * b + 1.0).astype(F32))
    return _RAY_CACHE[key]


def _check_pose(T, name):
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{name} must be a finite 4x4 matrix, got shape {T.shape}")
    return T


def _lighting(scene, nrm):
    return F32(0.62) + F32(0.45) * np.clip(nrm @ scene.sun.astype(F32), F32(0.0), None)


def render_frame(scene: Scene, T_world_cam, K, W: int, H: int):
    """Ray-cast one pinhole view of `scene` (movers as placed in the scene snapshot).

    T_world_cam: camera (x right, y down, z forward) -> scene frame. K: 3x3 at (W, H).
    Returns rgb uint8 [H,W,3], depth float32 [H,W] (camera z in metres, 0 = sky / beyond
    MAX_RANGE), semantic uint8 [H,W] (Cityscapes trainIds), dynamic uint8 [H,W] (0/1)."""
    if not isinstance(scene, Scene):
        raise ValueError("scene must be a Scene (see build_scene / Scene.at)")
    T = _check_pose(T_world_cam, "T_world_cam")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not K[0, 0] > 0 or not K[1, 1] > 0:
        raise ValueError(f"K must be a 3x3 intrinsic matrix with positive focal lengths, got {K}")
    if isinstance(W, bool) or isinstance(H, bool) or int(W) != W or int(H) != H or W < 8 or H < 8:
        raise ValueError(f"image size must be integers >= 8, got {W}x{H}")
    W, H = int(W), int(H)
    R, o = T[:3, :3], T[:3, 3]
    a, b, dnorm = _camera_rays(K, W, H)
    Rf = R.astype(F32)
    D = tuple(a * Rf[k, 0] + b * Rf[k, 1] + Rf[k, 2] for k in range(3))     # world ray components
    with np.errstate(divide="ignore"):
        invD = tuple(F32(1.0) / d for d in D)
    idx = _cull(scene.prims, o, MAX_RANGE + 1.0)
    regions = _camera_rects(scene.prims, idx, _inv(T), K, W, H)
    t, pid = _trace(scene.prims, o, D, invD, regions, dnorm)
    hit = np.isfinite(t)
    depth = np.where(hit, t, F32(0.0))                 # t along (x, y, 1) camera rays = camera z
    hi = np.nonzero(hit.ravel())[0]
    p = pid.ravel()[hi]
    # negative hit codes index the tail of the lookup tables: -4 sky, -3 curb, -2 sidewalk, -1 road
    lut_sem = np.concatenate([scene.prims["sem"], np.array([SKY, SEM_SIDEWALK, SEM_SIDEWALK, SEM_ROAD], np.uint8)])
    lut_dyn = np.concatenate([scene.prims["dyn"], np.zeros(4, np.uint8)])
    sem = lut_sem[pid]
    dyn = lut_dyn[pid]
    th = t.ravel()[hi]
    nD = dnorm.ravel()[hi]
    Dh = np.stack([d.ravel()[hi] for d in D], 1)
    P = (o + th[:, None].astype(np.float64) * Dh).astype(F32)
    fp = th * nD / F32(K[0, 0])
    alb, nrm = _shade_points(scene, P, p, fp, Dh / nD[:, None])
    rgb = np.empty((H * W, 3), F32)
    rgb[hi] = alb * _lighting(scene, nrm)[:, None]
    si = np.nonzero(~hit.ravel())[0]
    if si.size:
        Ds = np.stack([d.ravel()[si] for d in D], 1)
        rgb[si] = _sky(scene, Ds / dnorm.ravel()[si][:, None])
    rgb8 = np.clip(np.rint(rgb * F32(255.0)), 0, 255).astype(np.uint8).reshape(H, W, 3)
    return rgb8, depth, sem, dyn


def _lidar_rays():
    el = np.deg2rad(LIDAR_ELEVATIONS_DEG)
    naz = int(round(360.0 / LIDAR_AZIMUTH_STEP_DEG))
    az = np.deg2rad(180.0 - LIDAR_AZIMUTH_STEP_DEG * (np.arange(naz) + 0.5))    # sweep from behind, clockwise
    ce = np.cos(el)[:, None]
    D = np.stack([ce * np.cos(az)[None], ce * np.sin(az)[None], np.sin(el)[:, None] * np.ones((1, naz))], -1)
    return D, el, az


def render_lidar(scene: Scene, T_world_velo, seed: int = 0):
    """64-beam spinning LiDAR ray cast from the velodyne origin. Returns float32 [N,4]
    (x, y, z, reflectance) in the velodyne frame (x forward, y left, z up), ranges in
    [LIDAR_MIN_RANGE, MAX_RANGE]."""
    if not isinstance(scene, Scene):
        raise ValueError("scene must be a Scene (see build_scene / Scene.at)")
    T = _check_pose(T_world_velo, "T_world_velo")
    R, o = T[:3, :3], T[:3, 3]
    Dv, el, az = _lidar_rays()
    D = (Dv @ R.T).astype(F32)
    Dc = tuple(np.ascontiguousarray(D[..., k]) for k in range(3))
    with np.errstate(divide="ignore"):
        invD = tuple(F32(1.0) / d for d in Dc)
    pr = scene.prims
    idx = _cull(pr, o, MAX_RANGE + 1.0)
    # angular bounds of every AABB seen from the sensor, in the velodyne frame (+ margin for tilt)
    T_vw = _inv(T)
    lo, hi = pr["lo"][idx], pr["hi"][idx]
    C = _corners(lo, hi) @ T_vw[:3, :3].T + T_vw[:3, 3]
    ang = np.arctan2(C[..., 1], C[..., 0])
    ac = np.arctan2(C[..., 1].mean(1), C[..., 0].mean(1))
    rel = np.mod(ang - ac[:, None] + math.pi, 2 * math.pi) - math.pi
    d_lo = np.maximum(np.maximum(lo[:, :2] - o[:2], o[:2] - hi[:, :2]), 0.0)
    dmin = np.hypot(d_lo[:, 0], d_lo[:, 1])
    dmax = np.hypot(np.maximum(np.abs(lo[:, 0] - o[0]), np.abs(hi[:, 0] - o[0])),
                    np.maximum(np.abs(lo[:, 1] - o[1]), np.abs(hi[:, 1] - o[1])))
    zl, zh = lo[:, 2] - o[2], hi[:, 2] - o[2]
    el_max = np.where(zh > 0, np.arctan2(zh, np.maximum(dmin, 1e-6)), np.arctan2(zh, dmax))
    el_min = np.where(zl < 0, np.arctan2(zl, np.maximum(dmin, 1e-6)), np.arctan2(zl, dmax))
    margin = np.deg2rad(1.5)
    naz = az.size
    step = np.deg2rad(LIDAR_AZIMUTH_STEP_DEG)
    regions = []
    for k, p in enumerate(idx):
        rows = np.nonzero((el >= el_min[k] - margin) & (el <= el_max[k] + margin))[0]
        if rows.size == 0:
            continue
        rs = slice(int(rows[0]), int(rows[-1]) + 1)
        if dmin[k] < 1e-6 or (rel[k].max() - rel[k].min()) > math.pi * 0.95:
            cs = slice(0, naz)
        else:
            a0 = ac[k] + rel[k].min() - margin
            a1 = ac[k] + rel[k].max() + margin
            # column j looks at azimuth pi - step*(j+0.5): decreasing with j
            j0 = int(math.floor((math.pi - a1) / step - 0.5))
            j1 = int(math.ceil((math.pi - a0) / step - 0.5))
            cs = slice(0, naz) if j1 - j0 + 1 >= naz else np.mod(np.arange(j0, j1 + 1), naz)
        regions.append((int(p), rs, cs))
    t, pid = _trace(pr, o, Dc, invD, regions)
    ok = np.isfinite(t) & (t >= LIDAR_MIN_RANGE)
    tt = t[ok].astype(np.float64)
    pts_v = Dv[ok] * tt[:, None]
    P = (o + D[ok].astype(np.float64) * tt[:, None]).astype(F32)
    alb, _ = _shade_points(scene, P, pid[ok], np.maximum(tt * np.deg2rad(0.4), 0.01), D[ok])
    rng = np.random.default_rng([int(seed), 77])
    refl = np.clip(alb.mean(1) * 0.8 + 0.04 * rng.standard_normal(alb.shape[0]), 0.0, 0.99)
    return np.concatenate([pts_v, refl[:, None]], 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# calibration (KITTI text formats)
# ----------------------------------------------------------------------------------------------
def _fmt(vals) -> str:
    return " ".join("%.6e" % float(v) for v in np.asarray(vals, dtype=np.float64).ravel())


def _parse(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        try:
            out[k] = np.array([float(x) for x in v.split()])
        except ValueError:
            pass
    return out


def intrinsics(width: int, height: int) -> np.ndarray:
    """Rectified intrinsics at (width, height): KITTI-like field of view (fx ≈ 0.58 W)."""
    fx = round(0.58 * width, 3)
    return np.array([[fx, 0.0, round(0.4908 * width, 3)], [0.0, fx, round(0.4609 * height, 3)], [0.0, 0.0, 1.0]])


def _calib_texts(width: int, height: int, date: str) -> tuple[str, str, str]:
    K = intrinsics(width, height)
    fx = K[0, 0]
    d = _dt.datetime.strptime(date, "%Y_%m_%d")
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[d.month - 1]
    when = f"{d.day:02d}-{month}-{d.year} 12:00:00"          # KITTI style, independent of the locale
    lines = [f"calib_time: {when}", f"corner_dist: {_fmt([0.0995])}"]
    for c in range(4):
        tx = -BASELINE if c in (1, 3) else 0.0
        P = np.hstack([K, np.array([[fx * tx], [0.0], [0.0]])])
        lines += [
            f"S_0{c}: {_fmt([width, height])}",
            f"K_0{c}: {_fmt(K)}",
            f"D_0{c}: {_fmt(np.zeros(5))}",
            f"R_0{c}: {_fmt(np.eye(3))}",
            f"T_0{c}: {_fmt([tx, 0.0, 0.0])}",
            f"S_rect_0{c}: {_fmt([width, height])}",
            f"R_rect_0{c}: {_fmt(np.eye(3))}",
            f"P_rect_0{c}: {_fmt(P)}",
        ]
    cam = "\n".join(lines) + "\n"
    # velodyne -> camera 0: axes permutation plus a small mounting rotation, KITTI-like lever arm
    R_axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    R_cv = _rx(0.0089) @ _ry(-0.0061) @ _rz(0.0043) @ R_axes
    t_cv = np.array([-0.004069, -0.076316, -0.271781])
    velo = (f"calib_time: {when}\nR: {_fmt(R_cv)}\nT: {_fmt(t_cv)}\n"
            f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n")
    R_vi = _rz(0.00079) @ _ry(-0.00203) @ _rx(0.0148)
    t_vi = np.array([-0.808676, 0.319556, -0.799723])
    imu = f"calib_time: {when}\nR: {_fmt(R_vi)}\nT: {_fmt(t_vi)}\n"
    return cam, velo, imu


@dataclass
class Rig:
    K: np.ndarray
    T_cam_velo: np.ndarray      # velodyne -> rectified camera 2 (= camera 0 here)
    T_velo_imu: np.ndarray
    T_cam_imu: np.ndarray
    baseline: float


def _rig_from_texts(cam: str, velo: str, imu: str) -> Rig:
    c, v, i = _parse(cam), _parse(velo), _parse(imu)
    P2 = c["P_rect_02"].reshape(3, 4)
    P3 = c["P_rect_03"].reshape(3, 4)
    K = P2[:, :3].copy()
    R_rect = np.eye(4)
    R_rect[:3, :3] = c["R_rect_00"].reshape(3, 3)
    T2 = np.eye(4)
    T2[0, 3] = P2[0, 3] / P2[0, 0]
    T_cv = T2 @ R_rect @ _se3(v["R"].reshape(3, 3), v["T"])
    T_vi = _se3(i["R"].reshape(3, 3), i["T"])
    baseline = (P2[0, 3] - P3[0, 3]) / P2[0, 0]
    return Rig(K, T_cv, T_vi, T_cv @ T_vi, float(baseline))


def _write_if_consistent(path: Path, text: str) -> None:
    if path.exists():
        if path.read_text() != text:
            raise ValueError(f"{path} already exists with a different calibration (other image size?); "
                             "use another date for drives of a different resolution")
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------
# OXTS
# ----------------------------------------------------------------------------------------------
def _mercator(lat, lon, scale):
    x = scale * EARTH_RADIUS * np.deg2rad(lon)
    y = scale * EARTH_RADIUS * np.log(np.tan(np.deg2rad(90.0 + np.asarray(lat)) / 2.0))
    return x, y


def _inv_mercator(x, y, scale):
    lon = np.rad2deg(np.asarray(x) / (scale * EARTH_RADIUS))
    lat = np.rad2deg(2.0 * np.arctan(np.exp(np.asarray(y) / (scale * EARTH_RADIUS)))) - 90.0
    return lat, lon


def _fmt_oxts(v: float) -> str:
    s = "%.14g" % v
    return "0" if s == "-0" else s


def _oxts_records(ego: EgoTrajectory, times: np.ndarray, origin: dict, seed: int) -> np.ndarray:
    """[N,30] OXTS fields at `times` for the ego IMU trajectory; scene frame rotated by
    origin['yaw0'] about z and placed at (lat0, lon0, alt0) via the devkit Mercator projection."""
    lat0, lon0, alt0, yaw0 = origin["lat0"], origin["lon0"], origin["alt0"], origin["yaw0"]
    scale = math.cos(math.radians(lat0))
    mx0, my0 = _mercator(lat0, lon0, scale)
    Rz0 = _rz(yaw0)
    p_first = ego.position(times[0])
    h = 1e-3
    rows = []
    for t in times:
        p = ego.position(t)
        m = Rz0 @ (p - p_first)
        lat, lon = _inv_mercator(mx0 + m[0], my0 + m[1], scale)
        alt = alt0 + m[2]
        roll, pitch = float(ego.roll(t)), float(ego.pitch(t))
        yaw = float(np.mod(ego.yaw(t) + yaw0 + math.pi, 2 * math.pi) - math.pi)
        vel = Rz0 @ (ego.position(t + h) - ego.position(t - h)) / (2 * h)
        acc = Rz0 @ (ego.position(t + h) - 2 * p + ego.position(t - h)) / (h * h)
        R = Rz0 @ ego.rotation(t)
        Rl = _rz(yaw)                                             # level (heading-only) frame
        dR = (Rz0 @ ego.rotation(t + h) - Rz0 @ ego.rotation(t - h)) / (2 * h)
        Om = R.T @ dR
        w_body = np.array([Om[2, 1] - Om[1, 2], Om[0, 2] - Om[2, 0], Om[1, 0] - Om[0, 1]]) / 2
        w_level = Rl.T @ (R @ w_body)
        f = acc + np.array([0.0, 0.0, GRAVITY])                   # specific force
        a_body = R.T @ f
        a_level = Rl.T @ f
        v_level = Rl.T @ vel
        rows.append([lat, lon, alt, roll, pitch, yaw, vel[1], vel[0], v_level[0], v_level[1], v_level[2],
                     *a_body, *a_level, *w_body, *w_level])
    rows = np.asarray(rows, dtype=np.float64)
    n = rows.shape[0]
    u = np.random.default_rng([int(seed), 5]).random((n, 2))     # row i depends on i only (prefix-stable)
    pos_acc = 0.02 + 0.01 * u[:, 0]
    vel_acc = 0.01 + 0.005 * u[:, 1]
    status = np.tile(np.array([4, 11, 6, 6, 6], float), (n, 1))
    return np.hstack([rows, pos_acc[:, None], vel_acc[:, None], status])


def _oxts_line(rec) -> str:
    vals = [_fmt_oxts(v) for v in rec[:25]] + [str(int(v)) for v in rec[25:]]
    return " ".join(vals) + "\n"


def oxts_camera_poses(records: np.ndarray, T_cam_imu: np.ndarray) -> np.ndarray:
    """Camera poses from OXTS records (devkit convention, relative to the first packet's
    position): T_world_cam = T_world_imu @ inv(T_cam_imu). Used to verify the written files."""
    recs = np.asarray(records, dtype=np.float64)
    scale = math.cos(math.radians(recs[0, 0]))
    mx, my = _mercator(recs[:, 0], recs[:, 1], scale)
    t = np.stack([mx, my, recs[:, 2]], 1)
    t = t - t[0]
    out = []
    T_imu_cam = _inv(T_cam_imu)
    for k in range(recs.shape[0]):
        R = _rz(recs[k, 5]) @ _ry(recs[k, 4]) @ _rx(recs[k, 3])
        out.append(_se3(R, t[k]) @ T_imu_cam)
    return np.asarray(out)


# ----------------------------------------------------------------------------------------------
# drive generation
# ----------------------------------------------------------------------------------------------
def _timestamp_str(base: _dt.datetime, seconds: float) -> str:
    ns = int(round(seconds * 1e9))
    t = base + _dt.timedelta(microseconds=ns // 1000)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + "%06d%03d" % (t.microsecond, ns % 1000)


def _write_lines(path: Path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _validate(frames, seed, width, height, speed, drive_id, date):
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 32 or v > 4096:
            raise ValueError(f"{name} must be an integer in [32, 4096], got {v!r}")
    if not (isinstance(speed, (int, float)) and math.isfinite(speed) and 0.0 <= speed <= 40.0):
        raise ValueError(f"speed must be in [0, 40] m/s, got {speed!r}")
    if drive_id is not None and (isinstance(drive_id, bool) or not isinstance(drive_id, (int, np.integer))
                                 or not 0 <= drive_id <= 9999):
        raise ValueError(f"drive_id must be an integer in [0, 9999], got {drive_id!r}")
    try:
        day = _dt.datetime.strptime(date, "%Y_%m_%d")
    except (TypeError, ValueError):
        raise ValueError(f"date must look like YYYY_MM_DD, got {date!r}") from None
    if not _dt.datetime(1970, 1, 2) <= day < _dt.datetime(2038, 1, 1):
        raise ValueError(f"date {date!r}: stamps must fit ROS 2 Time (int32 seconds since 1970, before 2038)")


def make_drive_scene(frames: int, seed: int, speed: float = 10.0, lead_car: bool = False):
    """(scene, ego trajectory, frame times in s) of a drive, exactly as `generate_drive` renders it
    (no files written). The camera poses follow from the calibration; see scene.json."""
    rng = np.random.default_rng([int(seed), 1])
    ego = EgoTrajectory(
        speed=float(speed), x0=0.0,
        speed_amp=float(rng.uniform(0.03, 0.07)) if speed > 0 else 0.0,
        speed_period=float(rng.uniform(5, 9)), speed_phase=float(rng.uniform(0, 2 * math.pi)),
        sway_amp=float(rng.uniform(0.15, 0.3)), sway_wavelength=float(rng.uniform(50, 90)),
        sway_phase=float(rng.uniform(0, 2 * math.pi)),
        pitch_phase=float(rng.uniform(0, 2 * math.pi)), roll_phase=float(rng.uniform(0, 2 * math.pi)),
    )
    jitter = rng.uniform(-0.002, 0.002, frames)
    jitter[0] = 0.0
    times = np.arange(frames) / FRAME_RATE + jitter
    x_end = float(ego.x(times[-1]))
    scene = build_scene(seed, -MAX_RANGE - 10.0, x_end + MAX_RANGE + 10.0, ego, lead_car=lead_car,
                        oncoming=0 if lead_car else 2)
    return scene, ego, times


def generate_drive(out_root, frames: int, seed: int, width: int = 640, height: int = 192, lead_car: bool = False,
                   speed: float = 10.0, drive_id: int | None = None, date: str = "2030_01_01") -> Path:
    """Render a synthetic drive in KITTI raw layout under out_root/date; returns the drive dir."""
    _validate(frames, seed, width, height, speed, drive_id, date)
    frames, seed, width, height = int(frames), int(seed), int(width), int(height)
    drive_id = int(seed % 10000) if drive_id is None else int(drive_id)
    date_dir = Path(out_root) / date
    drive_dir = date_dir / f"{date}_drive_{drive_id:04d}_sync"
    date_dir.mkdir(parents=True, exist_ok=True)
    if drive_dir.exists():
        # regenerating replaces a drive written by this generator (no stale frames are left);
        # anything else in the way is not ours to delete
        if not (drive_dir / "scene.json").is_file():
            raise ValueError(f"{drive_dir} exists and is not a synthetic drive; choose another drive_id or out_root")
        shutil.rmtree(drive_dir)

    cam_txt, velo_txt, imu_txt = _calib_texts(width, height, date)
    _write_if_consistent(date_dir / "calib_cam_to_cam.txt", cam_txt)
    _write_if_consistent(date_dir / "calib_velo_to_cam.txt", velo_txt)
    _write_if_consistent(date_dir / "calib_imu_to_velo.txt", imu_txt)
    rig = _rig_from_texts(cam_txt, velo_txt, imu_txt)
    K = rig.K

    scene, ego, times = make_drive_scene(frames, seed, speed, lead_car)
    # camera height: place the IMU so that camera 2 sits CAM_HEIGHT above the road
    T_imu_cam = _inv(rig.T_cam_imu)
    ego.imu_height = CAM_HEIGHT - float(T_imu_cam[2, 3])
    T_imu_velo = _inv(rig.T_velo_imu)
    T_cam2_cam3 = _se3(np.eye(3), [rig.baseline, 0.0, 0.0])

    dirs = {k: drive_dir / k for k in ("image_02/data", "image_03/data", "oxts/data", "velodyne_points/data",
                                        "proj_depth/groundtruth/image_02", "semantic/image_02", "dynamic/image_02")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    poses_cam, poses_velo, poses_imu = [], [], []
    for i, t in enumerate(times):
        snap = scene.at(float(t))
        T_wi = ego.T_world_imu(float(t))
        T_wc = T_wi @ T_imu_cam
        T_wv = T_wi @ T_imu_velo
        name = f"{i:010d}"
        rgb, depth, sem, dyn = render_frame(snap, T_wc, K, width, height)
        rgb3, _, _, _ = render_frame(snap, T_wc @ T_cam2_cam3, K, width, height)
        cv2.imwrite(str(dirs["image_02/data"] / f"{name}.png"), rgb[..., ::-1])
        cv2.imwrite(str(dirs["image_03/data"] / f"{name}.png"), rgb3[..., ::-1])
        d16 = np.clip(np.rint(depth.astype(np.float64) * 256.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(dirs["proj_depth/groundtruth/image_02"] / f"{name}.png"), d16)
        cv2.imwrite(str(dirs["semantic/image_02"] / f"{name}.png"), sem)
        cv2.imwrite(str(dirs["dynamic/image_02"] / f"{name}.png"), dyn)
        pts = render_lidar(snap, T_wv, seed=seed * 100003 + i)
        pts.tofile(dirs["velodyne_points/data"] / f"{name}.bin")
        poses_cam.append(T_wc)
        poses_velo.append(T_wv)
        poses_imu.append(T_wi)

    # OXTS: geodetic origin and heading from the seed
    org_rng = np.random.default_rng([seed, 3])
    origin = {
        "lat0": float(_fmt_oxts(48.9 + org_rng.uniform(0, 0.2))),
        "lon0": float(_fmt_oxts(8.3 + org_rng.uniform(0, 0.2))),
        "alt0": float(_fmt_oxts(110.0 + org_rng.uniform(0, 10))),
        "yaw0": float(org_rng.uniform(-math.pi, math.pi)),
    }
    recs = _oxts_records(ego, times, origin, seed)
    for i, rec in enumerate(recs):
        (dirs["oxts/data"] / f"{i:010d}.txt").write_text(_oxts_line(rec))
    (drive_dir / "oxts" / "dataformat.txt").write_text("".join(f"{k}: {d}\n" for k, d in OXTS_FIELDS))

    base = _dt.datetime.strptime(date, "%Y_%m_%d") + _dt.timedelta(hours=10, seconds=60 * (drive_id % 600))
    stamps = [_timestamp_str(base, t) for t in times]
    for cam in ("image_02", "image_03"):
        _write_lines(drive_dir / cam / "timestamps.txt", stamps)
    _write_lines(drive_dir / "oxts" / "timestamps.txt", stamps)
    _write_lines(drive_dir / "velodyne_points" / "timestamps.txt", stamps)
    _write_lines(drive_dir / "velodyne_points" / "timestamps_start.txt",
                 [_timestamp_str(base, t - 0.05) for t in times])
    _write_lines(drive_dir / "velodyne_points" / "timestamps_end.txt",
                 [_timestamp_str(base, t + 0.05) for t in times])

    meta = {
        "seed": seed, "speed": float(speed), "lead_car": bool(lead_car), "frames": frames,
        "width": width, "height": height, "drive_id": drive_id, "date": date,
        "times": [float(t) for t in times], "K": K.tolist(), "baseline": rig.baseline,
        "lead_gap": float(scene.movers[0].gap) if lead_car else None,
        "oxts_origin": origin,
        "note": "poses are in the scene frame: x along the road, y left, z up; T_world_* maps sensor -> world",
        "T_world_cam02": [p.tolist() for p in poses_cam],
        "T_world_velo": [p.tolist() for p in poses_velo],
        "T_world_imu": [p.tolist() for p in poses_imu],
    }
    (drive_dir / "scene.json").write_text(json.dumps(meta, indent=1))
    return drive_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate a synthetic urban drive in KITTI raw layout.")
    ap.add_argument("--out", required=True, help="output root (the date directory is created inside)")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--lead-car", action="store_true", help="a car ahead at constant gap, at ego speed")
    ap.add_argument("--speed", type=float, default=10.0, help="ego speed (m/s)")
    ap.add_argument("--drive-id", type=int, default=None)
    ap.add_argument("--date", default="2030_01_01")
    a = ap.parse_args(argv)
    try:
        d = generate_drive(a.out, a.frames, a.seed, a.width, a.height, a.lead_car, a.speed, a.drive_id, a.date)
    except ValueError as e:
        ap.error(str(e))
    print(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
