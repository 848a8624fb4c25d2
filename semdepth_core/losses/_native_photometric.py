"""Fused CPU kernel for paper Eq. 2 (SSIM + L1) and its gradient, compiled on first use.

The torch version in `photometric.py` is ~60 memory passes over [G,B,C,H,W] forward and backward;
this C kernel reads each image once per pass, keeps the 3x3 window sums in per-plane scratch and
writes the loss, three per-pixel SSIM derivatives (forward) and the gradient (backward). It is the
same maths as `photometric.photometric_loss` (tests/test_losses.py compares them, values and
gradients, in float32 and float64).

It is built with the system C compiler (`$CC`, else `cc`) into a per-user cache, keyed by the
source, the compiler flags and the CPU, written atomically. No compiler, a failed build, or
SEMDEPTH_NATIVE=0 leaves `load()` returning None and the callers use the torch version.
"""
from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import threading

import torch

from semdepth_core.native_build import build_library

log = logging.getLogger(__name__)

_BODY = r"""
/* x [G,B,C,H,W], y [B,C,H,W] (contiguous); loss [G,B,H,W]; D [3,G,B,C,H,W] = dS/d(E[x], E[x^2], E[xy])
   where the clamp of (1-S)/2 to [0,1] passes the gradient, else 0. 3x3 windows, reflection padding. */
static void FN(hsum3)(const T *r, T *o, long W) {  /* 3-tap row sum, reflected at both ends */
    o[0] = r[1] + r[0] + r[1];
    for (long j = 1; j < W - 1; ++j) o[j] = r[j - 1] + r[j] + r[j + 1];
    o[W - 1] = r[W - 2] + r[W - 1] + r[W - 2];
}

int FN(photometric_fwd)(const T *x, const T *y, T *loss, T *D, long G, long B, long C, long H, long W,
                        double alpha_d, int need_grad, int threads) {
    const long HW = H * W, planes = G * B * C;
    const T alpha = (T)alpha_d, c1 = (T)1e-4, c2 = (T)9e-4, ninth = (T)(1.0 / 9.0), invC = (T)1 / (T)C;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
    T *h = (T *)malloc(sizeof(T) * (5 * HW + 3 * W));  /* scratch, one per thread */
    #pragma omp for schedule(static)
    for (long gb = 0; gb < G * B; ++gb) {
        if (!h) {
            #pragma omp atomic write
            failed = 1;
            continue;
        }
        T *hx = h, *hy = h + HW, *hxx = h + 2 * HW, *hyy = h + 3 * HW, *hxy = h + 4 * HW;
        T *sq = h + 5 * HW, *sq2 = sq + W, *sq3 = sq2 + W;
        T *l = loss + gb * HW;
        for (long k = 0; k < HW; ++k) l[k] = 0;
        for (long c = 0; c < C; ++c) {
            const T *xp = x + (gb * C + c) * HW, *yp = y + ((gb % B) * C + c) * HW;
            for (long i = 0; i < H; ++i) {  /* horizontal 3-tap sums of x, y, x^2, y^2, xy */
                const T *xr = xp + i * W, *yr = yp + i * W;
                FN(hsum3)(xr, hx + i * W, W);
                FN(hsum3)(yr, hy + i * W, W);
                for (long j = 0; j < W; ++j) { sq[j] = xr[j] * xr[j]; sq2[j] = yr[j] * yr[j]; sq3[j] = xr[j] * yr[j]; }
                FN(hsum3)(sq, hxx + i * W, W);
                FN(hsum3)(sq2, hyy + i * W, W);
                FN(hsum3)(sq3, hxy + i * W, W);
            }
            for (long i = 0; i < H; ++i) {  /* vertical 3-tap sums, then SSIM per pixel */
                long r0 = (i == 0 ? 1 : i - 1) * W, r1 = i * W, r2 = (i == H - 1 ? H - 2 : i + 1) * W;
                T *d1 = need_grad ? D + (gb * C + c) * HW + r1 : 0;
                T *d2 = need_grad ? d1 + planes * HW : 0, *d3 = need_grad ? d2 + planes * HW : 0;
                for (long j = 0; j < W; ++j) {
                    T mx = (hx[r0 + j] + hx[r1 + j] + hx[r2 + j]) * ninth;
                    T my = (hy[r0 + j] + hy[r1 + j] + hy[r2 + j]) * ninth;
                    T exx = (hxx[r0 + j] + hxx[r1 + j] + hxx[r2 + j]) * ninth;
                    T eyy = (hyy[r0 + j] + hyy[r1 + j] + hyy[r2 + j]) * ninth;
                    T exy = (hxy[r0 + j] + hxy[r1 + j] + hxy[r2 + j]) * ninth;
                    T mxmy = mx * my, mx2 = mx * mx, my2 = my * my;
                    T a = 2 * mxmy + c1, b = 2 * (exy - mxmy) + c2;
                    T cc = mx2 + my2 + c1, d = (exx - mx2) + (eyy - my2) + c2;
                    T ia = 1 / a, ib = 1 / b, ic = 1 / cc, id = 1 / d;
                    T s = a * b * ic * id;
                    T ds = (1 - s) * (T)0.5;
                    T in = (ds >= 0 && ds <= 1) ? (T)1 : (T)0;
                    T dsc = ds < 0 ? 0 : (ds > 1 ? 1 : ds);
                    T diff = xp[r1 + j] - yp[r1 + j];
                    l[r1 + j] += (alpha * dsc + (1 - alpha) * (diff < 0 ? -diff : diff)) * invC;
                    if (need_grad) {
                        T si = s * in;
                        d1[j] = 2 * si * (my * (ia - ib) + mx * (id - ic));
                        d2[j] = -si * id;
                        d3[j] = 2 * si * ib;
                    }
                }
            }
        }
    }
    free(h);
    }
    return failed;  /* 1: out of memory for the scratch */
}

/* gl [G,B,H,W] = dLoss/dloss; returns gx [G,B,C,H,W] = dLoss/dx. The box-sum adjoint is taken on
   the padded (H+2)x(W+2) grid (padded row P gets the windows centred on rows P-2..P) and folded
   back through the reflection (padded 0 -> 1, 1..H -> 0..H-1, H+1 -> H-2; same for columns). */
int FN(photometric_bwd)(const T *gl, const T *x, const T *y, const T *D, T *gx, long G, long B, long C,
                        long H, long W, double alpha_d, int threads) {
    const long HW = H * W, planes = G * B * C;
    const T alpha = (T)alpha_d, ninth = (T)(1.0 / 9.0);
    const T k_ssim = -alpha / (2 * (T)C), k_l1 = (1 - alpha) / (T)C;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
    T *buf = (T *)malloc(sizeof(T) * (3 * HW + 3 * W));  /* scratch, one per thread */
    #pragma omp for schedule(static)
    for (long gb = 0; gb < G * B; ++gb) {
        if (!buf) {
            #pragma omp atomic write
            failed = 1;
            continue;
        }
        T *h1 = buf, *h2 = buf + HW, *h3 = buf + 2 * HW, *v1 = buf + 3 * HW, *v2 = v1 + W, *v3 = v2 + W;
        const T *g = gl + gb * HW;
        for (long c = 0; c < C; ++c) {
            long off = (gb * C + c) * HW;
            const T *xp = x + off, *yp = y + ((gb % B) * C + c) * HW;
            const T *e1 = D + off, *e2 = D + planes * HW + off, *e3 = D + 2 * planes * HW + off;
            T *out = gx + off;
            for (long k = 0; k < HW; ++k) {
                T gs = g[k] * k_ssim, diff = xp[k] - yp[k];
                h1[k] = gs * e1[k];
                h2[k] = gs * e2[k];
                h3[k] = gs * e3[k];
                out[k] = g[k] * k_l1 * (T)((diff > 0) - (diff < 0));
            }
            for (long P = 0; P < H + 2; ++P) {
                long i = P == 0 ? 1 : (P == H + 1 ? H - 2 : P - 1);
                long q0 = P - 2 < 0 ? 0 : P - 2, q1 = P < H - 1 ? P : H - 1;
                for (long j = 0; j < W; ++j) { v1[j] = 0; v2[j] = 0; v3[j] = 0; }
                for (long q = q0; q <= q1; ++q) {  /* vertical adjoint of the box: window rows q0..q1 */
                    const T *a1 = h1 + q * W, *a2 = h2 + q * W, *a3 = h3 + q * W;
                    for (long j = 0; j < W; ++j) { v1[j] += a1[j]; v2[j] += a2[j]; v3[j] += a3[j]; }
                }
                const T *xr = xp + i * W, *yr = yp + i * W;
                T *o = out + i * W;
                /* interior padded columns Q = 2..W-1 -> pixel j = Q-1 in 1..W-2, taps j-1..j+1 */
                for (long j = 1; j < W - 1; ++j)
                    o[j] += ((v1[j - 1] + v1[j] + v1[j + 1]) + 2 * xr[j] * (v2[j - 1] + v2[j] + v2[j + 1])
                             + yr[j] * (v3[j - 1] + v3[j] + v3[j + 1])) * ninth;
                /* border padded columns: Q = 1 -> j 0 (taps 0, 1), Q = W -> j W-1 (taps W-2, W-1),
                   Q = 0 -> j 1 (tap 0), Q = W+1 -> j W-2 (tap W-1) */
                o[0] += ((v1[0] + v1[1]) + 2 * xr[0] * (v2[0] + v2[1]) + yr[0] * (v3[0] + v3[1])) * ninth;
                o[W - 1] += ((v1[W - 2] + v1[W - 1]) + 2 * xr[W - 1] * (v2[W - 2] + v2[W - 1])
                             + yr[W - 1] * (v3[W - 2] + v3[W - 1])) * ninth;
                o[1] += (v1[0] + 2 * xr[1] * v2[0] + yr[1] * v3[0]) * ninth;
                o[W - 2] += (v1[W - 1] + 2 * xr[W - 2] * v2[W - 1] + yr[W - 2] * v3[W - 1]) * ninth;
            }
        }
    }
    free(buf);
    }
    return failed;
}
"""

SOURCE = ("#include <stdlib.h>\n#define CAT2(a, b) a##_##b\n#define CAT(a, b) CAT2(a, b)\n#define FN(n) CAT(n, SUF)\n"
          "#define T float\n#define SUF f32\n" + _BODY + "#undef T\n#undef SUF\n"
          "#define T double\n#define SUF f64\n" + _BODY)
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None when unavailable (torch fallback)."""
    if os.environ.get("SEMDEPTH_NATIVE", "1") == "0":
        return None
    if not _tried:  # decided once: afterwards every loss evaluation reads _lib without the lock
        _open_once()
    return _lib


def _open_once() -> None:
    """Build/open the library and declare its C signatures (once, under the lock)."""
    global _lib, _tried
    with _lock:
        if _tried:
            return
        try:
            lib = ctypes.CDLL(str(build_library("photometric", SOURCE, FLAGS)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("fused photometric kernel unavailable (%s); using the torch implementation", exc)
            lib = None
        if lib is not None:
            ptr, lng = ctypes.c_void_p, ctypes.c_long
            for suffix in ("f32", "f64"):
                fwd, bwd = getattr(lib, f"photometric_fwd_{suffix}"), getattr(lib, f"photometric_bwd_{suffix}")
                fwd.argtypes = [ptr] * 4 + [lng] * 5 + [ctypes.c_double, ctypes.c_int, ctypes.c_int]
                bwd.argtypes = [ptr] * 5 + [lng] * 5 + [ctypes.c_double, ctypes.c_int]
                fwd.restype = bwd.restype = ctypes.c_int
        _lib, _tried = lib, True  # _lib first: a reader that sees _tried sees the library


def supported(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the kernel handles these inputs (CPU, float32/float64, same dtype, images >= 2x2)."""
    return (x.device.type == "cpu" and y.device.type == "cpu" and x.dtype == y.dtype
            and x.dtype in (torch.float32, torch.float64) and min(x.shape[-2:]) >= 2)


def _suffix(t: torch.Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def forward(lib: ctypes.CDLL, x: torch.Tensor, y: torch.Tensor, alpha: float, need_grad: bool):
    """x [G,B,C,H,W], y [1,B,C,H,W] -> (loss [G,B,1,H,W], D [3,G,B,C,H,W] or None)."""
    x, y = x.contiguous(), y.contiguous()
    G, B, C, H, W = x.shape
    loss = torch.empty(G, B, 1, H, W, dtype=x.dtype)
    D = torch.empty(3, G, B, C, H, W, dtype=x.dtype) if need_grad else None
    failed = getattr(lib, f"photometric_fwd_{_suffix(x)}")(
        x.data_ptr(), y.data_ptr(), loss.data_ptr(), D.data_ptr() if D is not None else None,
        G, B, C, H, W, float(alpha), int(need_grad), torch.get_num_threads())
    if failed:
        raise MemoryError(f"fused photometric kernel: no memory for its scratch ({H}x{W} images)")
    return loss, D


def backward(lib: ctypes.CDLL, g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, D: torch.Tensor,
             alpha: float) -> torch.Tensor:
    """g [G,B,1,H,W] = dL/dloss -> dL/dx [G,B,C,H,W]."""
    g, x, y = g.to(x.dtype).contiguous(), x.contiguous(), y.contiguous()
    G, B, C, H, W = x.shape
    gx = torch.empty_like(x)
    failed = getattr(lib, f"photometric_bwd_{_suffix(x)}")(
        g.data_ptr(), x.data_ptr(), y.data_ptr(), D.data_ptr(), gx.data_ptr(),
        G, B, C, H, W, float(alpha), torch.get_num_threads())
    if failed:
        raise MemoryError(f"fused photometric kernel: no memory for its scratch ({H}x{W} images)")
    return gx
