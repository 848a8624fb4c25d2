"""Synthetic drives, ray casting: exact ray / primitive intersections (ground, curbs, boxes, cylinders,
spheres), culling by range and by each primitive's screen rectangle, the nearest hit and its normal."""
from __future__ import annotations

import numpy as np

from .scene import (
    BOX,
    CURB_HEIGHT,
    CYL,
    F32,
    HIT_CURB,
    HIT_ROAD,
    HIT_SIDEWALK,
    HIT_SKY,
    MAX_RANGE,
    NEAR,
    ROAD_HALF,
    SPHERE,
)

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
