"""Synthetic drives, the world: constants of the street and rig, the ego trajectory, scene primitives
(boxes, cylinders, spheres; parked, oncoming and lead cars) and `build_scene` / `make_drive_scene`.

Scene frame: x along the road (forward), y left, z up, road surface at z = 0; ego traffic keeps right.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
