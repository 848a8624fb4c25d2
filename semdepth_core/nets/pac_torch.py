"""The torch implementations of pixel-adaptive convolution (Eq. 4-5), behind `pac.PacConv2d`: the
traceable loop that ONNX export records, and the memory-efficient autograd path that runs wherever the
fused CPU kernel (`_native_pac`) does not (other devices, per-filter sigma, stride 2, no compiler).

Memory-efficient formulation: the input is never unfolded (no k*k*Cin*H*W tensor). The layer
loops over the k*k kernel taps o; each tap contributes K_o * (W[:, :, o] x_o), where x_o is the
input shifted by o, W[:, :, o] a [Cout,Cin] matrix (a 1x1 convolution) and K_o the per-pixel
kernel map exp(-1/2 d_o / sigma^2) with d_o = sum_D (f_centre - f_o)^2 from shifted guide
differences.
- Stride 1 (training and inference): the zero-padded maps are flattened so every shifted view is
  a contiguous range (see `_Flat`); per tap one GEMM on a view, accumulated in place (with a
  per-layer sigma K_o moves to the input side and the GEMM accumulates W_o (K_o x_o) directly).
  Mirrored taps share one guide-distance evaluation, and the flat output is processed in spatial
  tiles so that all taps of a tile run in cache. A custom autograd Function recomputes the
  kernel maps in backward, so the tensors kept for backward are x, guide, weight and sigma only:
  the same order of memory as nn.Conv2d (which keeps x and weight).
- Stride 2: the same loop on strided slices of the padded maps (`pac_loop` + its backward).
- Tracing / ONNX export: `pac_loop` with standard ops only (pad, slice, conv 1x1, mul, sum, exp),
  out of place, so the layer exports to ONNX opset 17 with no custom operator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

def _out_size(n: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (same formula as nn.Conv2d)."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _window(a: int, dilation: int, n_out: int, stride: int) -> slice:
    """Slice of the padded input seen by kernel tap `a` for all n_out output positions."""
    start = a * dilation
    return slice(start, start + (n_out - 1) * stride + 1, stride)


def _kernel_coef(log_sigma: torch.Tensor) -> torch.Tensor:
    """-1/2 sigma^-2 from log sigma (Eq. 5), shape [1,S,1,1] with S = 1 (layer) or Cout (filter)."""
    return (-0.5 * torch.exp(-2.0 * log_sigma)).reshape(1, -1, 1, 1)


def pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation):
    """Eq. 4 by a loop over kernel offsets with standard ops only (used for no-grad / tracing)."""
    # x [B,Cin,H,W], guide [B,D,H,W], weight [Cout,Cin,k,k], log_sigma [1] or [Cout]
    k = weight.shape[-1]
    c = (k - 1) // 2
    H, W = x.shape[-2:]
    Ho = _out_size(H, k, stride, padding, dilation)
    Wo = _out_size(W, k, stride, padding, dilation)
    xp = F.pad(x, (padding, padding, padding, padding))  # [B,Cin,H+2p,W+2p]
    gp = F.pad(guide, (padding, padding, padding, padding))  # [B,D,H+2p,W+2p]
    g_c = gp[:, :, _window(c, dilation, Ho, stride), _window(c, dilation, Wo, stride)]  # [B,D,Ho,Wo]
    coef = _kernel_coef(log_sigma)  # [1,S,1,1]
    out = None
    for a in range(k):
        for b in range(k):
            rs, cs = _window(a, dilation, Ho, stride), _window(b, dilation, Wo, stride)
            x_o = xp[:, :, rs, cs]  # [B,Cin,Ho,Wo]
            y_o = F.conv2d(x_o, weight[:, :, a:a + 1, b:b + 1])  # [B,Cout,Ho,Wo]
            d_o = ((g_c - gp[:, :, rs, cs]) ** 2).sum(dim=1, keepdim=True)  # [B,1,Ho,Wo]
            term = torch.exp(d_o * coef) * y_o  # [B,S,Ho,Wo] * [B,Cout,Ho,Wo]
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out  # [B,Cout,Ho,Wo]


class _Flat:
    """Stride-1 layout: the zero-padded maps flattened row-major, one extra zero row at the bottom.

    Output pixel (i, j) sits at flat index q = i*Wp + j of an Ho x Wp grid (columns j >= Wo are
    scratch and discarded), and kernel tap (a, b) reads input index q + a*d*Wp + b*d, so every
    shifted view x_o is a plain contiguous range of the flat input: the per-offset products are
    GEMMs on views, with no copy of the input and no unfolding.
    """

    def __init__(self, x, k, padding, dilation):
        B, _, H, W = x.shape
        p = padding
        self.H, self.W, self.p, self.d, self.k = H, W, p, dilation, k
        self.Hp, self.Wp = H + 2 * p, W + 2 * p
        self.Ho, self.Wo = _out_size(H, k, 1, p, dilation), _out_size(W, k, 1, p, dilation)
        self.L = self.Ho * self.Wp  # flat output length (with Wp - Wo scratch columns per row)
        c = (k - 1) // 2
        self.centre = c * dilation * (self.Wp + 1)

    def pad(self, t):
        """[B,C,H,W] -> zero-padded flat [B,C,(Hp+1)*Wp]."""
        p = self.p
        return F.pad(t, (p, p, p, p + 1)).flatten(2)

    def unpad(self, tf):
        """Flat padded [B,C,(Hp+1)*Wp] -> [B,C,H,W] (a view)."""
        p = self.p
        return tf.unflatten(2, (self.Hp + 1, self.Wp))[:, :, p:p + self.H, p:p + self.W]

    def offsets(self):
        """Flat start index of every kernel tap (a, b), row-major like weight[:, :, a, b]."""
        for a in range(self.k):
            for b in range(self.k):
                yield a, b, (a * self.Wp + b) * self.d

    def chunks(self, channels: int):
        """(q0, n) ranges of the flat output: tiles small enough for all taps to run in cache."""
        n = max(_MIN_TILE, _TILE_FLOATS // max(1, channels))
        return [(q0, min(n, self.L - q0)) for q0 in range(0, self.L, n)]


# Spatial tiling: per tile the taps' operands (input, output, guide, kernel maps) stay in cache
# instead of streaming the whole maps from memory k*k times (small-channel layers are otherwise
# memory-bound). _TILE_FLOATS / (Cin + Cout + D) flat positions per tile.
_TILE_FLOATS = 1 << 19
_MIN_TILE = 1024


def _tap_pairs(fl: "_Flat"):
    """Kernel taps as mirrored pairs ((a,b,off), (a',b',off'), s) with s = off - centre > 0.

    The squared guide distance of a tap and of its mirror are the same map shifted by s:
    E(r) = ||f[r] - f[r+s]||^2 gives d_{+s}(q) = E(centre+q) and d_{-s}(q) = E(centre+q-s), so one
    evaluation over n+s positions serves both taps of a tile of n outputs (half the guide work).
    The centre tap has K = 1.
    """
    taps = list(fl.offsets())
    n = len(taps)
    return [(taps[n - 1 - t], taps[t], taps[n - 1 - t][2] - fl.centre) for t in range(n // 2)]


def _pair_kernel(gf, fl: "_Flat", s: int, q0: int, n: int, coef):
    """Eq. 5 for a mirrored tap pair on tile [q0, q0+n): diff [B,D,n+s], E [B,1,n+s], K [B,S,n+s]."""
    start = fl.centre - s + q0
    diff = gf[:, :, start:start + n + s] - gf[:, :, start + s:start + 2 * s + n]  # f_r - f_{r+s}
    E = diff.square().sum(dim=1, keepdim=True)  # ||f_r - f_{r+s}||^2 (faster than vector_norm on CPU)
    return diff, E, torch.exp(E * coef)


def _pac_flat_forward(x, guide, weight, bias, log_sigma, padding, dilation):
    """Eq. 4 for stride 1 (no autograd): per tile and tap one GEMM on a view, accumulated in place."""
    B, Cin = x.shape[:2]
    Cout, k = weight.shape[0], weight.shape[-1]
    fl = _Flat(x, k, padding, dilation)
    xf, gf = fl.pad(x), fl.pad(guide)  # [B,Cin,Lf], [B,D,Lf]
    wk = weight.permute(2, 3, 0, 1).contiguous()  # [k,k,Cout,Cin]
    coef = _kernel_coef(log_sigma).reshape(1, -1, 1)  # [1,S,1]
    per_filter = log_sigma.numel() != 1
    out = x.new_zeros(B, Cout, fl.L)  # [B,Cout,L]
    if bias is not None:
        out += bias.reshape(1, -1, 1)
    c = (k - 1) // 2
    pairs = _tap_pairs(fl)
    for q0, n in fl.chunks(Cin + Cout + guide.shape[1]):
        o_t = out[:, :, q0:q0 + n]  # [B,Cout,n] view
        z = None if per_filter else x.new_empty(Cin, n)  # K_o * x_o buffer
        for i in range(B):  # centre tap: K(f_i, f_i) = 1
            o_t[i].addmm_(wk[c, c], xf[i, :, fl.centre + q0:fl.centre + q0 + n])
        for (a, b, off), (a2, b2, off2), s in pairs:
            _, _, Kx = _pair_kernel(gf, fl, s, q0, n, coef)  # [B,S,n+s]
            for (ta, tb, toff), K in (((a, b, off), Kx[..., s:s + n]), ((a2, b2, off2), Kx[..., :n])):
                x_o = xf[:, :, toff + q0:toff + q0 + n]  # [B,Cin,n] view
                w_o = wk[ta, tb]  # [Cout,Cin]
                for i in range(B):
                    if per_filter:
                        o_t[i].addcmul_(K[i], w_o @ x_o[i])
                    else:  # K is shared by all channels: W_o (K x_o), accumulated by the GEMM itself
                        torch.mul(x_o[i], K[i], out=z)
                        o_t[i].addmm_(w_o, z)
    return out.unflatten(2, (fl.Ho, fl.Wp))[..., :fl.Wo].contiguous()  # [B,Cout,Ho,Wo]


def _pac_flat_backward(grad_out, x, guide, weight, log_sigma, padding, dilation, needs):
    """Gradients of Eq. 4-5 for stride 1, recomputing the kernel maps tile by tile, pair by pair."""
    need_x, need_g, need_w, need_s = needs
    B, Cin = x.shape[:2]
    Cout, k = weight.shape[0], weight.shape[-1]
    fl = _Flat(x, k, padding, dilation)
    xf, gf = fl.pad(x), fl.pad(guide)
    wk = weight.permute(2, 3, 0, 1).contiguous()  # [k,k,Cout,Cin]
    wkt = wk.transpose(2, 3).contiguous()  # [k,k,Cin,Cout]
    coef = _kernel_coef(log_sigma).reshape(1, -1, 1)  # [1,S,1]
    per_filter = log_sigma.numel() != 1
    # grad_out on the Ho x Wp grid with zeros in the scratch columns: they then contribute nothing
    go_all = F.pad(grad_out, (0, fl.Wp - fl.Wo)).flatten(2)  # [B,Cout,L]
    gxf = torch.zeros_like(xf) if need_x else None
    ggf = torch.zeros_like(gf) if need_g else None
    gwk = torch.zeros_like(wk) if need_w else None  # [k,k,Cout,Cin]
    gcoef = torch.zeros_like(coef) if need_s else None
    need_k = need_g or need_s
    c = (k - 1) // 2

    def tap_grads(ta, tb, lo, go, K):
        """Accumulate dL/dx, dL/dW of one tap on a tile (input from flat index lo); return dL/dK [B,S,n]."""
        n = go.shape[-1]
        x_o = xf[:, :, lo:lo + n]  # [B,Cin,n]
        gK = x.new_empty(B, K.shape[1], n) if (need_k and K is not None) else None
        for i in range(B):
            if K is not None and not per_filter:
                # shared K: one GEMM h = W_o^T g serves dL/dx_o = K h and dL/dK = sum_cin h x_o
                h = wkt[ta, tb] @ go[i]  # [Cin,n]
                if need_x:
                    gxf[i, :, lo:lo + n].addcmul_(h, K[i])
                if need_w:
                    gwk[ta, tb].addmm_(go[i], (x_o[i] * K[i]).t())
                if gK is not None:
                    gK[i] = h.mul_(x_o[i]).sum(dim=0, keepdim=True)
                continue
            gy = go[i] if K is None else go[i] * K[i]  # dL/dy_o = g K (centre tap: K = 1)
            if need_x:
                gxf[i, :, lo:lo + n].addmm_(wkt[ta, tb], gy)
            if need_w:
                gwk[ta, tb].addmm_(gy, x_o[i].t())
            if gK is not None:  # per-filter K: dL/dK = g * (W_o x_o), one more GEMM
                torch.mul(go[i], wk[ta, tb] @ x_o[i], out=gK[i])
        return gK

    pairs = _tap_pairs(fl)
    for q0, n in fl.chunks(2 * (Cin + Cout) + guide.shape[1]):
        go = go_all[:, :, q0:q0 + n]  # [B,Cout,n]
        tap_grads(c, c, fl.centre + q0, go, None)  # centre tap: K = 1, no kernel gradient
        for (a, b, off), (a2, b2, off2), s in pairs:
            diff, E, Kx = _pair_kernel(gf, fl, s, q0, n, coef)  # [B,D,n+s], [B,1,n+s], [B,S,n+s]
            GE = torch.zeros_like(E) if need_g else None  # dL/dE [B,1,n+s]
            for (ta, tb, toff), sl in (((a, b, off), slice(s, s + n)), ((a2, b2, off2), slice(0, n))):
                K = Kx[..., sl]
                gK = tap_grads(ta, tb, toff + q0, go, K)
                if gK is None:
                    continue
                gKK = gK.mul_(K)  # dL/d(coef * E) [B,S,n]
                if need_s:
                    gcoef += (gKK * E[..., sl]).sum(dim=(0, 2), keepdim=True)
                if need_g:
                    GE[..., sl] += (gKK * coef).sum(dim=1, keepdim=True)
            if need_g:
                gdiff = diff.mul_(GE.mul_(2.0))  # dL/d(f_r - f_{r+s}) [B,D,n+s]
                start = fl.centre - s + q0
                ggf[:, :, start:start + n + s] += gdiff
                ggf[:, :, start + s:start + 2 * s + n] -= gdiff
    gx = fl.unpad(gxf) if need_x else None
    gg = fl.unpad(ggf) if need_g else None
    gw = gwk.permute(2, 3, 0, 1).contiguous() if need_w else None
    gs = (gcoef * (-2.0 * coef)).reshape(log_sigma.shape) if need_s else None
    return gx, gg, gw, gs


class _PacFunction(torch.autograd.Function):
    """Eq. 4-5 with a hand-written backward that recomputes per-offset kernel maps (low memory)."""

    @staticmethod
    def forward(ctx, x, guide, weight, bias, log_sigma, stride, padding, dilation):
        ctx.conf = (stride, padding, dilation, bias is not None)
        ctx.save_for_backward(x, guide, weight, log_sigma)
        if stride == 1:
            return _pac_flat_forward(x, guide, weight, bias, log_sigma, padding, dilation)
        return pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, guide, weight, log_sigma = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        need_x, need_g, need_w, need_b, need_s = ctx.needs_input_grad[:5]
        gb = grad_out.sum(dim=(0, 2, 3)) if (has_bias and need_b) else None
        if stride == 1:
            gx, gg, gw, gs = _pac_flat_backward(grad_out, x, guide, weight, log_sigma, padding, dilation,
                                                (need_x, need_g, need_w, need_s))
            return gx, gg, gw, gb, gs, None, None, None
        # stride 2: strided slices of the padded maps (the flat trick needs stride 1)
        k = weight.shape[-1]
        c = (k - 1) // 2
        B, Cin, H, W = x.shape
        Ho, Wo = grad_out.shape[-2:]
        per_filter = log_sigma.numel() != 1  # (with Cout == 1 both modes are the same maths)
        p = padding
        xp = F.pad(x, (p, p, p, p))  # [B,Cin,Hp,Wp]
        gp = F.pad(guide, (p, p, p, p))  # [B,D,Hp,Wp]
        rc, cc = _window(c, dilation, Ho, stride), _window(c, dilation, Wo, stride)
        g_c = gp[:, :, rc, cc]  # [B,D,Ho,Wo]
        coef = _kernel_coef(log_sigma)  # [1,S,1,1]
        go = grad_out.contiguous()  # [B,Cout,Ho,Wo]

        gxp = torch.zeros_like(xp) if need_x else None
        ggp = torch.zeros_like(gp) if need_g else None
        gw = torch.zeros_like(weight) if need_w else None
        gcoef = torch.zeros_like(coef) if need_s else None  # dL/d(coef)
        for a in range(k):
            for b in range(k):
                rs, cs = _window(a, dilation, Ho, stride), _window(b, dilation, Wo, stride)
                x_o = xp[:, :, rs, cs]  # [B,Cin,Ho,Wo]
                diff = g_c - gp[:, :, rs, cs]  # [B,D,Ho,Wo]
                d_o = (diff * diff).sum(dim=1, keepdim=True)  # [B,1,Ho,Wo]
                K_o = torch.exp(d_o * coef)  # [B,S,Ho,Wo]
                w_o = weight[:, :, a, b]  # [Cout,Cin]
                if per_filter:
                    gy = go * K_o  # dL/dy_o [B,Cout,Ho,Wo]
                    if need_x:
                        gxp[:, :, rs, cs] += torch.einsum("oi,bohw->bihw", w_o, gy)
                    if need_g or need_s:
                        y_o = torch.einsum("oi,bihw->bohw", w_o, x_o)  # [B,Cout,Ho,Wo]
                        gK = go * y_o  # dL/dK_o [B,Cout,Ho,Wo]
                else:
                    # K_o is shared by all channels, so it can be moved to the input side:
                    # y_o*K_o = W_o (K_o x_o) and dL/dK_o = sum_cin (W_o^T g) * x_o.
                    h_o = torch.einsum("oi,bohw->bihw", w_o, go)  # W_o^T g [B,Cin,Ho,Wo]
                    if need_x:
                        gxp[:, :, rs, cs] += h_o * K_o
                    if need_g or need_s:
                        gK = (h_o * x_o).sum(dim=1, keepdim=True)  # [B,1,Ho,Wo]
                    gy = go * K_o if need_w else None
                if need_w:
                    gw[:, :, a, b] = torch.einsum("bohw,bihw->oi", gy, x_o)
                if need_g or need_s:
                    gKK = gK * K_o  # dL/d(exponent) [B,S,Ho,Wo]
                    if need_s:
                        gcoef += (gKK * d_o).sum(dim=(0, 2, 3), keepdim=True)
                    if need_g:
                        gd = (gKK * coef).sum(dim=1, keepdim=True)  # dL/dd_o [B,1,Ho,Wo]
                        gdiff = 2.0 * gd * diff  # [B,D,Ho,Wo]
                        ggp[:, :, rc, cc] += gdiff
                        ggp[:, :, rs, cs] -= gdiff
        gx = gxp[:, :, p:p + H, p:p + W] if need_x else None
        gg = ggp[:, :, p:p + H, p:p + W] if need_g else None
        # coef = -1/2 exp(-2 log_sigma)  =>  d coef / d log_sigma = -2 coef
        gs = (gcoef * (-2.0 * coef)).reshape(log_sigma.shape) if need_s else None
        return gx, gg, gw, gb, gs, None, None, None


def pac_conv2d_torch(x, guide, weight, bias, log_sigma, stride, padding, dilation):
    """Eq. 4-5 in torch: the tiled flat path (stride 1) or the loop, with the recomputing autograd Function."""
    tensors = (x, guide, weight, log_sigma) + ((bias,) if bias is not None else ())
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        with torch.no_grad():
            if stride == 1:
                return _pac_flat_forward(x, guide, weight, bias, log_sigma, padding, dilation)
            return pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)
    return _PacFunction.apply(x, guide, weight, bias, log_sigma, stride, padding, dilation)
