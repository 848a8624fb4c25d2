"""Synthetic drives, sensors: the pinhole camera (`render_frame`: RGB, depth, semantics, dynamic mask) and
the 64-beam spinning LiDAR (`render_lidar`), both ray cast against a `Scene` up to MAX_RANGE."""
from __future__ import annotations

import math

import numpy as np

from semdepth_core.data.labels import SKY
from semdepth_core.geometry.pinhole import pixel_rays

from .raycast import _camera_rects, _corners, _cull, _trace
from .scene import F32, MAX_RANGE, SEM_ROAD, SEM_SIDEWALK, Scene, _inv
from .shading import _lighting, _shade_points, _sky

LIDAR_ELEVATIONS_DEG = np.linspace(2.0, -24.9, 64)
LIDAR_AZIMUTH_STEP_DEG = 0.6
LIDAR_MIN_RANGE = 2.5


_RAY_CACHE: dict = {}


def _camera_rays(K, W, H):
    """Camera-frame rays (a, b, 1) through every pixel centre: a, b and |(a, b, 1)|, float32 [H,W] (cached)."""
    key = (W, H) + tuple(np.round(np.asarray(K, float).ravel(), 9))
    if key not in _RAY_CACHE:
        a, b = pixel_rays(K, H, W)
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = (a.astype(F32), b.astype(F32), np.sqrt(a * a + b * b + 1.0).astype(F32))
    return _RAY_CACHE[key]


def _check_pose(T, name):
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{name} must be a finite 4x4 matrix, got shape {T.shape}")
    return T


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
