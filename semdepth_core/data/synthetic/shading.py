"""Synthetic drives, shading: procedural textures in float32 as functions of the 3D hit point, band-limited
by the pixel footprint (so that consecutive frames stay photometrically consistent), the sky and the light."""
from __future__ import annotations

import numpy as np

from .raycast import _normals
from .scene import (
    F32,
    HIT_CURB,
    HIT_ROAD,
    HIT_SIDEWALK,
    LANE_EDGE,
    M_CANOPY,
    M_CARBODY,
    M_FACADE,
    M_GLASS,
    M_HEDGE,
    M_POLE,
    M_SIGN,
    M_TRUNK,
    Scene,
)

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


def _lighting(scene, nrm):
    return F32(0.62) + F32(0.45) * np.clip(nrm @ scene.sun.astype(F32), F32(0.0), None)
