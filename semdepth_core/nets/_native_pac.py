"""Fused CPU kernel for the pixel-adaptive convolution with one sigma per layer (Eq. 4-5), compiled on first use.

With one sigma per layer the kernel value K(f_i, f_j) is shared by every output channel, so it
moves to the input side and Eq. 4 is one matrix product per spatial tile:

    cols[(c, o), t] = K_o(t) * x[c, t + o]          ("kernel-modulated im2col", Cin*k*k x n)
    out[:, t]       = W[Cout, Cin*k*k] @ cols + b

The output rows are cut into tiles of R rows (n = R*Wo positions); OpenMP threads take whole
tiles and build the tile's kernel maps and cols in a per-thread scratch buffer (never a
k*k-times copy of the input), then one BLAS GEMM (the `sgemm_`/`dgemm_` torch itself links,
called single-threaded inside each OpenMP thread) writes the tile's output. Backward recomputes
the kernel maps and cols per tile (nothing but x, guide, weight and sigma is kept) and does
    dL/dW    += g @ cols^T                       (per-thread accumulator, summed at the end)
    dcols     = W^T @ g
    dL/dx    += K_o * dcols   and   dL/dK_o = sum_c dcols * x_o     (one fused col2im pass)
    dL/dguide, dL/dcoef through K_o = exp(coef * ||f_centre - f_o||^2), coef = -1/2 sigma^-2.
Tiles write dL/dx and dL/dguide into rows shared with the neighbouring tile, so backward runs
the even tiles, then the odd ones (R is at least (k-1)*dilation/stride rows, so tiles two apart
never touch the same input row).

Supported: CPU, float32/float64, stride >= 1, dilation >= 1, odd k, padding <= (k//2)*dilation
(the window centre is then always inside the image: padding 0 on pre-padded maps, as the
decoder uses it, and "same" padding). Everything else, per-filter sigma included, stays on the
torch implementation in `pac.py`.

Built with the system C compiler (`$CC`, else `cc`) into the per-user cache of the photometric
kernel, keyed by the source, the flags and the CPU, written atomically. No compiler, a failed
build, no BLAS symbol in torch's library, SEMDEPTH_NATIVE=0 or SEMDEPTH_NATIVE_PAC=0 leave
`load()` returning None and `pac.py` uses the torch implementation.
"""
from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import threading
from pathlib import Path

import torch

from semdepth_core.native_build import build_library

log = logging.getLogger(__name__)

_BODY = r"""
typedef void (*FN(gemm_t))(const char *, const char *, const int *, const int *, const int *, const T *,
                           const T *, const int *, const T *, const int *, const T *, T *, const int *);

static void FN(gemm)(void *fp, char ta, char tb, long m, long n, long k, const T *a, long lda, const T *b,
                     long ldb, T beta, T *c, long ldc) {
    int im = (int)m, in = (int)n, ik = (int)k, ila = (int)lda, ilb = (int)ldb, ilc = (int)ldc;
    T one = 1;
    ((FN(gemm_t))fp)(&ta, &tb, &im, &in, &ik, &one, a, &ila, b, &ilb, &beta, c, &ilc);
}

/* Guide distances of Eq. 5, once per image instead of once per tap: F [B, nF, H, W] with
   F_m(y, x) = ||f(y, x) - f((y, x) + delta_m)||^2 for the nF = (kk-1)/2 taps after the centre,
   delta_m = tap(ctr+1+m) - centre; 0 where (y, x) + delta_m is outside the image. A tap before the
   centre is the mirror of one after it: its distance at output p is F_m at the tap's position. */
void FN(dist)(const T *g, T *F, const long *G, int threads) {
    const long B = G[0], D = G[3], H = G[4], W = G[5], k = G[8], dl = G[11];
    const long kk = k * k, nF = (kk - 1) / 2, HW = H * W, c = k / 2;
    #pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (long by = 0; by < B * H; ++by) {
        const long b = by / H, y = by % H;
        const T *gb = g + b * D * HW;
        for (long m0 = 0; m0 < nF; m0 += 4) {  /* nF is a multiple of 4 for every odd k */
            long sh[4], lo[4], hi[4], fl = 0, fh = W;
            T *Fr[4];
            for (int u = 0; u < 4; ++u) {
                const long o = kk / 2 + 1 + m0 + u, dy = (o / k - c) * dl, dx = (o % k - c) * dl;
                sh[u] = dy * W + dx;
                lo[u] = dx < 0 ? -dx : 0;
                hi[u] = dx > 0 ? W - dx : W;
                if (y + dy >= H || lo[u] >= hi[u]) lo[u] = hi[u] = 0;
                Fr[u] = F + ((b * nF + m0 + u) * H + y) * W;
                for (long x = 0; x < W; ++x) Fr[u][x] = 0;
                if (lo[u] > fl) fl = lo[u];
                if (hi[u] < fh) fh = hi[u];
            }
            /* where all four maps are valid: blocks of JD columns, the four sums in registers over D */
            long fe = fl;  /* blocks cover [fl, fe) */
            for (;;) {
                long x0;
                if (fe + JD <= fh) {
                    x0 = fe;
                } else if (fe > fl && fe < fh) {  /* tail: a block ending at fh, overlapping the previous one */
                    x0 = fh - JD;                 /* (its columns get the same values again) */
                } else {
                    break;
                }
                T a0[JD], a1[JD], a2[JD], a3[JD];
                for (int j = 0; j < JD; ++j) { a0[j] = 0; a1[j] = 0; a2[j] = 0; a3[j] = 0; }
                for (long d = 0; d < D; ++d) {
                    const T *gc = gb + d * HW + y * W + x0;
                    const T *p0 = gc + sh[0], *p1 = gc + sh[1], *p2 = gc + sh[2], *p3 = gc + sh[3];
                    #pragma omp simd
                    for (int j = 0; j < JD; ++j) {
                        const T cv = gc[j], e0 = cv - p0[j], e1 = cv - p1[j], e2 = cv - p2[j], e3 = cv - p3[j];
                        a0[j] += e0 * e0; a1[j] += e1 * e1; a2[j] += e2 * e2; a3[j] += e3 * e3;
                    }
                }
                for (int j = 0; j < JD; ++j) {
                    Fr[0][x0 + j] = a0[j]; Fr[1][x0 + j] = a1[j]; Fr[2][x0 + j] = a2[j]; Fr[3][x0 + j] = a3[j];
                }
                fe = x0 + JD;
            }
            for (int u = 0; u < 4; ++u) {  /* the rest of each map's range, map by map */
                const long a0 = lo[u], a1 = hi[u] < fl ? hi[u] : fl, b0 = lo[u] > fe ? lo[u] : fe, b1 = hi[u];
                if (a0 >= a1 && b0 >= b1) continue;
                for (long d = 0; d < D; ++d) {
                    const T *gc = gb + d * HW + y * W, *po = gc + sh[u];
                    T *fu = Fr[u];
                    for (long x = a0; x < a1; ++x) { T e = gc[x] - po[x]; fu[x] += e * e; }
                    for (long x = b0; x < b1; ++x) { T e = gc[x] - po[x]; fu[x] += e * e; }
                }
            }
        }
    }
}

/* dL/dguide from gF = dL/dF (same layout as F), written (not accumulated) into gg [B, D, H, W]:
   gg(q) = 2 sum_m gF_m(q) (f(q) - f(q + delta_m)) + gF_m(q - delta_m) (f(q) - f(q - delta_m)). */
void FN(dist_bwd)(const T *g, const T *gF, T *gg, const long *G, int threads) {
    const long B = G[0], D = G[3], H = G[4], W = G[5], k = G[8], dl = G[11];
    const long kk = k * k, nF = (kk - 1) / 2, HW = H * W, c = k / 2, mr = c * dl;
    #pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (long by = 0; by < B * H; ++by) {
        long dy[MAX_NF], dx[MAX_NF];
        const long b = by / H, y = by % H;
        for (long m = 0; m < nF; ++m) {
            const long o = kk / 2 + 1 + m;
            dy[m] = (o / k - c) * dl;
            dx[m] = (o % k - c) * dl;
        }
        const int inner = y >= mr && y < H - mr && W > 2 * mr;
        const long xa = inner ? mr : 0, xb = inner ? W - mr : 0;  /* interior columns */
        const T *gFb = gF + b * nF * HW;
        for (long d = 0; d < D; ++d) {
            const T *gd = g + (b * D + d) * HW;
            T *out = gg + (b * D + d) * HW + y * W;
            if (xb > xa) {  /* interior of the row: every neighbour exists; row-long loops per offset */
                const T *cv = gd + y * W;
                for (long x = xa; x < xb; ++x) out[x] = 0;
                for (long m = 0; m < nF; ++m) {
                    const long sp = dy[m] * W + dx[m];
                    const T *gp = gFb + m * HW + y * W, *gm = gp - sp, *fp = cv + sp, *fm = cv - sp;
                    #pragma omp simd
                    for (long x = xa; x < xb; ++x) out[x] += gp[x] * (cv[x] - fp[x]) + gm[x] * (cv[x] - fm[x]);
                }
                #pragma omp simd
                for (long x = xa; x < xb; ++x) out[x] *= 2;
            }
            for (long x = 0; x < W; ++x) {  /* borders: every neighbour checked */
                if (x == xa && xb > xa) { x = xb - 1; continue; }  /* interior done above */
                const T cv = gd[y * W + x];
                T acc = 0;
                for (long m = 0; m < nF; ++m) {
                    long yp = y + dy[m], xp = x + dx[m], ym = y - dy[m], xm = x - dx[m];
                    if (yp < H && xp >= 0 && xp < W)
                        acc += gFb[m * HW + y * W + x] * (cv - gd[yp * W + xp]);
                    if (ym >= 0 && xm >= 0 && xm < W)
                        acc += gFb[m * HW + ym * W + xm] * (cv - gd[ym * W + xm]);
                }
                out[x] = 2 * acc;
            }
        }
    }
}

/* Kernel maps of the tile of output rows [i0, i0+nr) of image b: E_o (the distance) and
   K_o = exp(coef E_o), [kk, n] each, 0 where tap o falls outside the image (x is 0 there). */
static void FN(kmaps)(const T *F, T coef, const long *G, long b, long i0, long nr, T *E, T *K) {
    const long H = G[4], W = G[5], Wo = G[7], k = G[8], s = G[9], pad = G[10], dl = G[11];
    const long kk = k * k, ctr = kk / 2, nF = (kk - 1) / 2, n = nr * Wo, cofs = (k / 2) * dl - pad;
    for (long o = 0; o < kk; ++o) {
        T *Eo = E + o * n, *Ko = K + o * n;
        if (o == ctr) {  /* the centre is inside the image (padding <= centre offset): K = 1 */
            for (long t = 0; t < n; ++t) { Eo[t] = 0; Ko[t] = 1; }
            continue;
        }
        const long roff = (o / k) * dl - pad, coff = (o % k) * dl - pad;
        const long m = o > ctr ? o - ctr - 1 : kk - 2 - o - ctr;  /* o < ctr: mirror kk-1-o */
        long lo, hi;
        jrange(coff, s, W, Wo, &lo, &hi);
        const long len = hi - lo;
        for (long ii = 0; ii < nr; ++ii) {
            const long r = (i0 + ii) * s + roff;
            T *e = Eo + ii * Wo, *kr = Ko + ii * Wo;
            if (r < 0 || r >= H || len <= 0) {
                for (long j = 0; j < Wo; ++j) { e[j] = 0; kr[j] = 0; }
                continue;
            }
            for (long j = 0; j < lo; ++j) { e[j] = 0; kr[j] = 0; }
            for (long j = hi; j < Wo; ++j) { e[j] = 0; kr[j] = 0; }
            /* o > ctr: F_m at the centre; o < ctr: F_m at the tap */
            const long sr = o > ctr ? (i0 + ii) * s + cofs : r, sc = (o > ctr ? cofs : coff) + lo * s;
            const T *fr = F + ((b * nF + m) * H + sr) * W + sc;
            T *ee = e + lo, *kk_ = kr + lo;
            if (s == 1) {
                for (long j = 0; j < len; ++j) ee[j] = fr[j];
            } else {
                for (long j = 0; j < len; ++j) ee[j] = fr[j * s];
            }
            #pragma omp simd
            for (long j = 0; j < len; ++j) kk_[j] = EXP(coef * ee[j]);
        }
    }
}

/* cols [Cin*kk, n]: cols[(c, o), t] = K_o(t) x[c, tap o of t] (0 outside the image). */
static void FN(im2col)(const T *x, const T *K, const long *G, long b, long i0, long nr, T *cols) {
    const long Cin = G[1], H = G[4], W = G[5], Wo = G[7], k = G[8], s = G[9], pad = G[10], dl = G[11];
    const long kk = k * k, n = nr * Wo;
    for (long c = 0; c < Cin; ++c) {
        const T *xp = x + (b * Cin + c) * H * W;
        for (long o = 0; o < kk; ++o) {
            T *dst = cols + (c * kk + o) * n;
            const T *Ko = K + o * n;
            const long roff = (o / k) * dl - pad, coff = (o % k) * dl - pad;
            long lo, hi;
            jrange(coff, s, W, Wo, &lo, &hi);
            for (long ii = 0; ii < nr; ++ii) {
                const long r = (i0 + ii) * s + roff;
                T *dr = dst + ii * Wo;
                if (r < 0 || r >= H || lo >= hi) {
                    for (long j = 0; j < Wo; ++j) dr[j] = 0;
                    continue;
                }
                const T *xr = xp + r * W + lo * s + coff, *kr = Ko + ii * Wo + lo;
                T *d = dr + lo;
                const long m = hi - lo;
                for (long j = 0; j < lo; ++j) dr[j] = 0;
                if (s == 1) {
                    #pragma omp simd
                    for (long j = 0; j < m; ++j) d[j] = kr[j] * xr[j];
                } else {
                    for (long j = 0; j < m; ++j) d[j] = kr[j] * xr[j * s];
                }
                for (long j = hi; j < Wo; ++j) dr[j] = 0;
            }
        }
    }
}

/* out [B,Cout,Ho,Wo] = Eq. 4. F: [B, nF, H, W]; scratch: threads x (2 kk n + Cin kk n). Returns 0. */
int FN(pac_fwd)(const T *x, const T *g, const T *w, const T *bias, double coef_d, T *out, T *F, T *scratch,
                const long *G, int threads, void *gemm, void *set_local) {
    const long B = G[0], Cin = G[1], Cout = G[2], Ho = G[6], Wo = G[7], k = G[8], R = G[12];
    const long kk = k * k, CK = Cin * kk, HoWo = Ho * Wo, nt = (Ho + R - 1) / R, nmax = R * Wo;
    const long per = 2 * kk * nmax + CK * nmax;
    const T coef = (T)coef_d;
    if (k > 1) FN(dist)(g, F, G, threads);
    #pragma omp parallel num_threads(threads)
    {
        int prev = set_local ? ((int (*)(int))set_local)(1) : 0;
        T *E = scratch + (long)omp_get_thread_num() * per, *K = E + kk * nmax, *cols = K + kk * nmax;
        #pragma omp for schedule(dynamic, 1)
        for (long tb = 0; tb < B * nt; ++tb) {
            const long b = tb / nt, i0 = (tb % nt) * R, nr = (Ho - i0 < R) ? Ho - i0 : R, n = nr * Wo;
            FN(kmaps)(F, coef, G, b, i0, nr, E, K);
            FN(im2col)(x, K, G, b, i0, nr, cols);
            T *o = out + b * Cout * HoWo + i0 * Wo;
            /* column-major view: out^T [n, Cout] = cols^T [n, CK] @ W^T [CK, Cout] */
            FN(gemm)(gemm, 'N', 'N', n, Cout, CK, cols, n, w, CK, 0, o, HoWo);
            if (bias)
                for (long co = 0; co < Cout; ++co) {
                    T *orow = o + co * HoWo;
                    const T bv = bias[co];
                    for (long t = 0; t < n; ++t) orow[t] += bv;
                }
        }
        if (set_local) ((int (*)(int))set_local)(prev);
    }
    return 0;
}

/* Gradients: gx [B,Cin,H,W] (zeroed by the caller, accumulated), gg [B,D,H,W] (written),
   gw [Cout,Cin,k,k] (written), gcoef[threads] (written: per-thread dL/dcoef); any may be NULL.
   F, gF: [B, nF, H, W] (F computed here unless f_ready; gF zeroed by the caller, used when gg is wanted).
   scratch: threads x (3 kk n + 2 Cin kk n + Cout Cin kk). */
int FN(pac_bwd)(const T *go, const T *x, const T *g, const T *w, double coef_d, T *gx, T *gg, T *gw,
                double *gcoef, T *F, T *gF, T *scratch, const long *G, int threads, int f_ready, void *gemm,
                void *set_local) {
    const long B = G[0], Cin = G[1], Cout = G[2], H = G[4], W = G[5], Ho = G[6], Wo = G[7];
    const long k = G[8], s = G[9], pad = G[10], dl = G[11], R = G[12];
    const long kk = k * k, ctr = kk / 2, nF = (kk - 1) / 2, CK = Cin * kk, HoWo = Ho * Wo;
    const long nt = (Ho + R - 1) / R, nmax = R * Wo;
    const long per = 3 * kk * nmax + 2 * CK * nmax + Cout * CK, cofs = (k / 2) * dl - pad;
    const int need_k = (gg != 0 || gcoef != 0) && k > 1, need_cols = gx != 0 || need_k;
    const T coef = (T)coef_d;
    if (k > 1 && !f_ready) FN(dist)(g, F, G, threads);
    #pragma omp parallel num_threads(threads)
    {
        int prev = set_local ? ((int (*)(int))set_local)(1) : 0;
        const int tid = omp_get_thread_num();
        T *E = scratch + (long)tid * per, *K = E + kk * nmax, *gK = K + kk * nmax, *cols = gK + kk * nmax;
        T *dcols = cols + CK * nmax, *gwt = dcols + CK * nmax;
        double gc_acc = 0;
        if (gw) for (long i = 0; i < Cout * CK; ++i) gwt[i] = 0;
        for (int phase = 0; phase < 2; ++phase) {
            const long nph = (nt - phase + 1) / 2;  /* tiles phase, phase+2, ... of every image */
            #pragma omp for schedule(dynamic, 1)
            for (long q = 0; q < B * nph; ++q) {
                const long b = q / nph, tile = phase + 2 * (q % nph), i0 = tile * R;
                const long nr = (Ho - i0 < R) ? Ho - i0 : R, n = nr * Wo;
                const T *got = go + b * Cout * HoWo + i0 * Wo;
                FN(kmaps)(F, coef, G, b, i0, nr, E, K);
                FN(im2col)(x, K, G, b, i0, nr, cols);
                if (gw)  /* gW^T [CK, Cout] += cols [CK, n] (col-major n x CK, transposed) @ g^T [n, Cout] */
                    FN(gemm)(gemm, 'T', 'N', CK, Cout, n, cols, n, got, HoWo, 1, gwt, CK);
                if (!need_cols) continue;
                /* dcols^T [n, CK] = g^T [n, Cout] @ W [Cout, CK] */
                FN(gemm)(gemm, 'N', 'T', n, CK, Cout, got, HoWo, w, CK, 0, dcols, n);
                if (need_k) for (long t = 0; t < kk * n; ++t) gK[t] = 0;
                for (long c = 0; c < Cin; ++c) {  /* fused col2im: dL/dx += K dcols, dL/dK += dcols x */
                    const T *xp = x + (b * Cin + c) * H * W;
                    T *gxp = gx ? gx + (b * Cin + c) * H * W : 0;
                    for (long o = 0; o < kk; ++o) {
                        const long roff = (o / k) * dl - pad, coff = (o % k) * dl - pad;
                        const int want_k = need_k && o != ctr;
                        long lo, hi;
                        jrange(coff, s, W, Wo, &lo, &hi);
                        const long m = hi - lo;
                        for (long ii = 0; ii < nr; ++ii) {
                            const long r = (i0 + ii) * s + roff;
                            if (r < 0 || r >= H || m <= 0) continue;
                            const long t0 = ii * Wo + lo, xo = r * W + lo * s + coff;
                            const T *dc = dcols + (c * kk + o) * n + t0, *kr = K + o * n + t0, *xr = xp + xo;
                            T *gkr = gK + o * n + t0;
                            if (s == 1) {
                                if (gxp) {
                                    T *gxr = gxp + xo;
                                    #pragma omp simd
                                    for (long j = 0; j < m; ++j) gxr[j] += kr[j] * dc[j];
                                }
                                if (want_k) {
                                    #pragma omp simd
                                    for (long j = 0; j < m; ++j) gkr[j] += dc[j] * xr[j];
                                }
                            } else {
                                if (gxp) {
                                    T *gxr = gxp + xo;
                                    for (long j = 0; j < m; ++j) gxr[j * s] += kr[j] * dc[j];
                                }
                                if (want_k)
                                    for (long j = 0; j < m; ++j) gkr[j] += dc[j] * xr[j * s];
                            }
                        }
                    }
                }
                if (!need_k) continue;
                for (long o = 0; o < kk; ++o) {  /* through K_o = exp(coef E_o) to coef and to dL/dF */
                    if (o == ctr) continue;
                    const long roff = (o / k) * dl - pad, coff = (o % k) * dl - pad;
                    const long mm = o > ctr ? o - ctr - 1 : kk - 2 - o - ctr;
                    long lo, hi;
                    jrange(coff, s, W, Wo, &lo, &hi);
                    const long m = hi - lo;
                    for (long ii = 0; ii < nr; ++ii) {
                        const long r = (i0 + ii) * s + roff;
                        if (r < 0 || r >= H || m <= 0) continue;
                        const long t0 = ii * Wo + lo;
                        T *gkr = gK + o * n + t0;
                        const T *kr = K + o * n + t0, *er = E + o * n + t0;
                        T acc = 0;
                        #pragma omp simd reduction(+ : acc)
                        for (long j = 0; j < m; ++j) {
                            T gkk = gkr[j] * kr[j];  /* dL/d(coef E) */
                            acc += gkk * er[j];
                            gkr[j] = coef * gkk;  /* dL/dE */
                        }
                        gc_acc += (double)acc;
                        if (!gg) continue;
                        const long sr = o > ctr ? (i0 + ii) * s + cofs : r, sc = (o > ctr ? cofs : coff) + lo * s;
                        T *gfr = gF + ((b * nF + mm) * H + sr) * W + sc;
                        if (s == 1) {
                            #pragma omp simd
                            for (long j = 0; j < m; ++j) gfr[j] += gkr[j];
                        } else {
                            for (long j = 0; j < m; ++j) gfr[j * s] += gkr[j];
                        }
                    }
                }
            }  /* implicit barrier: the even tiles are done before the odd ones start */
        }
        if (gcoef) gcoef[tid] = gc_acc;
        if (gw) {
            #pragma omp barrier
            /* sum the per-thread dL/dW^T [CK, Cout] (column-major) into gw [Cout, CK] */
            const int nth = omp_get_num_threads();
            #pragma omp for schedule(static)
            for (long co = 0; co < Cout; ++co)
                for (long i = 0; i < CK; ++i) {
                    T v = 0;
                    for (int th = 0; th < nth; ++th) v += scratch[th * per + (per - Cout * CK) + co * CK + i];
                    gw[co * CK + i] = v;
                }
        }
        if (set_local) ((int (*)(int))set_local)(prev);
    }
    if (gg) {
        if (need_k) {
            FN(dist_bwd)(g, gF, gg, G, threads);
        } else {
            const long n_gg = B * G[3] * H * W;
            for (long i = 0; i < n_gg; ++i) gg[i] = 0;
        }
    }
    return 0;
}
"""

_HEAD = r"""
#include <math.h>
#include <omp.h>
#include <stdlib.h>
/* vector variants of exp from glibc's libmvec (what <math.h> declares under -ffast-math, which
   is not used: its crtfastmath would switch the whole process to flush-to-zero) */
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern double exp(double);
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(n) CAT(n, SUF)
#ifndef JD
#define JD 64
#endif
#define MAX_NF 60  /* (k*k-1)/2 for k <= 11 */

/* output columns j whose input column j*s + off lies in [0, W): [lo, hi) */
static void jrange(long off, long s, long W, long Wo, long *lo, long *hi) {
    long l = off >= 0 ? 0 : (-off + s - 1) / s;
    long h = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / s + 1;
    if (h > Wo) h = Wo;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}
"""

SOURCE = (_HEAD + "#define T float\n#define SUF f32\n#define EXP expf\n" + _BODY + "#undef T\n#undef SUF\n#undef EXP\n"
          "#define T double\n#define SUF f64\n#define EXP exp\n" + _BODY)
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC", "-std=gnu99"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_blas: dict | None = None
_tried = False
_GEO = ctypes.c_long * 13


def _find_blas() -> dict:
    """Addresses of the Fortran-ABI sgemm_/dgemm_ (and MKL's per-thread thread count) torch links."""
    libdir = Path(torch.__file__).resolve().parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        if (libdir / name).is_file():
            lib = ctypes.CDLL(str(libdir / name))  # already loaded by torch: this only opens a handle
            break
    else:
        raise OSError(f"no libtorch_cpu in {libdir}")
    addr = {}
    for sym in ("sgemm_", "dgemm_"):
        addr[sym] = ctypes.cast(getattr(lib, sym), ctypes.c_void_p).value  # AttributeError if absent
    try:
        addr["set_local"] = ctypes.cast(lib.MKL_Set_Num_Threads_Local, ctypes.c_void_p).value
    except AttributeError:
        addr["set_local"] = None
    return addr


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None when unavailable (torch fallback)."""
    global _lib, _blas, _tried
    if os.environ.get("SEMDEPTH_NATIVE", "1") == "0" or os.environ.get("SEMDEPTH_NATIVE_PAC", "1") == "0":
        return None
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        _tried = True
        try:
            blas = _find_blas()
            lib = ctypes.CDLL(str(build_library("pac", SOURCE, FLAGS)))
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
            log.warning("fused PAC kernel unavailable (%s); using the torch implementation", exc)
            return None
        ptr, dbl, cint = ctypes.c_void_p, ctypes.c_double, ctypes.c_int
        for suffix in ("f32", "f64"):
            fwd, bwd = getattr(lib, f"pac_fwd_{suffix}"), getattr(lib, f"pac_bwd_{suffix}")
            fwd.argtypes = [ptr] * 4 + [dbl] + [ptr] * 4 + [cint, ptr, ptr]
            bwd.argtypes = [ptr] * 4 + [dbl] + [ptr] * 8 + [cint, cint, ptr, ptr]
            fwd.restype = bwd.restype = cint
        _blas, _lib = blas, lib
        return _lib


def supported(x: torch.Tensor, guide: torch.Tensor, weight: torch.Tensor, log_sigma: torch.Tensor,
              stride: int, padding: int, dilation: int) -> bool:
    """Whether the fused kernel covers this call (CPU, float32/64, one sigma, centre inside the image)."""
    k = weight.shape[-1]
    tensors = (x, guide, weight, log_sigma)
    return (all(t.device.type == "cpu" and t.dtype == x.dtype for t in tensors)
            and x.dtype in (torch.float32, torch.float64) and log_sigma.numel() == 1
            and weight.shape[-2] == k and k % 2 == 1 and k <= 11 and stride >= 1 and dilation >= 1
            and 0 <= padding <= (k // 2) * dilation and x.numel() > 0 and guide.numel() > 0)


# Tile size: about this many elements of cols (Cin*k*k x R*Wo) per thread; tuned on the benchmark shapes.
TILE_ELEMS = 1 << 17


def _geometry(x, guide, weight, stride, padding, dilation):
    """The long[13] geometry block the C functions take, and (Ho, Wo, R)."""
    from semdepth_core.nets.pac_torch import _out_size

    B, Cin, H, W = x.shape
    Cout, k = weight.shape[0], weight.shape[-1]
    Ho, Wo = _out_size(H, k, stride, padding, dilation), _out_size(W, k, stride, padding, dilation)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"PacConv2d: input {H}x{W} is smaller than the {k}x{k} window (dilation {dilation})")
    r_min = max(1, -(-(k - 1) * dilation // stride))  # tiles two apart never share an input row
    R = min(Ho, max(r_min, TILE_ELEMS // max(1, Cin * k * k * Wo)))
    geo = _GEO(B, Cin, Cout, guide.shape[1], H, W, Ho, Wo, k, stride, padding, dilation, R)
    return geo, Ho, Wo, R


def _suffix(t: torch.Tensor) -> str:
    """Name suffix of the C function for this dtype."""
    return "f32" if t.dtype == torch.float32 else "f64"


def coef_of(log_sigma: torch.Tensor) -> float:
    """-1/2 sigma^-2 of Eq. 5 as a Python float (double precision), for a one-element log sigma."""
    return -0.5 * float(torch.exp(-2.0 * log_sigma.detach().double()).reshape(()))


def forward(x, guide, weight, bias, log_sigma, stride, padding, dilation, keep_dist=False):
    """Eq. 4-5 (one sigma): x [B,Cin,H,W], guide [B,D,H,W], weight [Cout,Cin,k,k] -> [B,Cout,Ho,Wo].

    keep_dist: also return the guide distances [B,(k*k-1)/2,H,W], which `backward` can reuse.
    """
    lib = _lib
    x, guide, weight = x.detach().contiguous(), guide.detach().contiguous(), weight.detach().contiguous()
    b = bias.detach().contiguous() if bias is not None else None
    geo, Ho, Wo, R = _geometry(x, guide, weight, stride, padding, dilation)
    threads = torch.get_num_threads()
    kk, Cin = weight.shape[-1] ** 2, x.shape[1]
    scratch = torch.empty(threads * (2 * kk * R * Wo + Cin * kk * R * Wo), dtype=x.dtype)
    dist = x.new_empty(x.shape[0], (kk - 1) // 2, *x.shape[-2:])  # guide distances F
    out = torch.empty(x.shape[0], weight.shape[0], Ho, Wo, dtype=x.dtype)
    sfx = _suffix(x)
    getattr(lib, f"pac_fwd_{sfx}")(
        x.data_ptr(), guide.data_ptr(), weight.data_ptr(), b.data_ptr() if b is not None else None,
        coef_of(log_sigma), out.data_ptr(), dist.data_ptr(), scratch.data_ptr(), geo, threads,
        _blas["sgemm_" if sfx == "f32" else "dgemm_"], _blas["set_local"])
    return (out, dist) if keep_dist else out


def backward(grad_out, x, guide, weight, log_sigma, stride, padding, dilation, needs, dist=None):
    """(dL/dx, dL/dguide, dL/dweight, dL/dlog_sigma) for the requested ones (others None).

    dist: the guide distances kept by `forward(keep_dist=True)` for these inputs (else recomputed).
    """
    need_x, need_g, need_w, need_s = needs
    lib = _lib
    x, guide, weight = x.detach().contiguous(), guide.detach().contiguous(), weight.detach().contiguous()
    go = grad_out.detach().to(x.dtype).contiguous()
    geo, Ho, Wo, R = _geometry(x, guide, weight, stride, padding, dilation)
    threads = torch.get_num_threads()
    Cout, kk, Cin = weight.shape[0], weight.shape[-1] ** 2, x.shape[1]
    n = R * Wo
    per = 3 * kk * n + 2 * Cin * kk * n + Cout * Cin * kk
    scratch = torch.empty(threads * per, dtype=x.dtype)
    f_ready = dist is not None
    if not f_ready:
        dist = x.new_empty(x.shape[0], (kk - 1) // 2, *x.shape[-2:])  # guide distances F and dL/dF
    elif dist.shape != (x.shape[0], (kk - 1) // 2, *x.shape[-2:]) or dist.dtype != x.dtype or not dist.is_contiguous():
        raise ValueError(f"PAC backward: guide distances of shape {tuple(dist.shape)} do not match the input")
    gdist = torch.zeros_like(dist) if need_g else None
    gx = torch.zeros_like(x) if need_x else None
    gg = torch.empty_like(guide) if need_g else None
    gw = torch.empty_like(weight) if need_w else None
    gcoef = torch.zeros(threads, dtype=torch.float64) if need_s else None
    coef = coef_of(log_sigma)
    sfx = _suffix(x)
    getattr(lib, f"pac_bwd_{sfx}")(
        go.data_ptr(), x.data_ptr(), guide.data_ptr(), weight.data_ptr(), coef,
        *(t.data_ptr() if t is not None else None for t in (gx, gg, gw, gcoef, dist, gdist)),
        scratch.data_ptr(), geo, threads, int(f_ready), _blas["sgemm_" if sfx == "f32" else "dgemm_"],
        _blas["set_local"])
    gs = None
    if need_s:  # coef = -1/2 exp(-2 log_sigma): d coef / d log_sigma = -2 coef
        gs = torch.full_like(log_sigma, float(gcoef.sum()) * (-2.0 * coef))
    return gx, gg, gw, gs
