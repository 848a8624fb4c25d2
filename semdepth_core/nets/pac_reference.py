"""Reference implementations of pixel-adaptive convolution (Eq. 4-5) that the product's paths are checked
against: the naive unfold form in torch (k*k*Cin*H*W memory) and the float64 numpy semantics of the
`semdepth::PacConv2d` custom op (the TensorRT plugin's contract). For tests and benchmarks only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .pac_torch import _out_size


def pac_conv2d_reference(x, guide, weight, bias, sigma, stride=1, padding=1, dilation=1):
    """Naive unfold-based Eq. 4-5 (k*k*Cin*H*W memory) -- for tests only; sigma [1] or [Cout]."""
    # x [B,Cin,H,W], guide [B,D,H,W], weight [Cout,Cin,k,k]
    B, Cin, H, W = x.shape
    D = guide.shape[1]
    Cout, _, k, _ = weight.shape
    Ho = _out_size(H, k, stride, padding, dilation)
    Wo = _out_size(W, k, stride, padding, dilation)
    kw = dict(kernel_size=k, dilation=dilation, padding=padding, stride=stride)
    xu = F.unfold(x, **kw).reshape(B, Cin, k * k, Ho * Wo)  # [B,Cin,k2,L]
    gu = F.unfold(guide, **kw).reshape(B, D, k * k, Ho * Wo)  # [B,D,k2,L]
    centre = gu[:, :, (k * k) // 2 : (k * k) // 2 + 1]  # [B,D,1,L]
    dist = ((gu - centre) ** 2).sum(dim=1)  # [B,k2,L]
    s2 = (sigma.reshape(-1) ** 2).reshape(1, -1, 1, 1)  # [1,S,1,1]
    kern = torch.exp(-0.5 * dist[:, None] / s2).expand(B, Cout, k * k, Ho * Wo)  # [B,Cout,k2,L]
    t = torch.einsum("oik,bikl->bokl", weight.reshape(Cout, Cin, k * k), xu)  # W[p_i - p_j] v_j [B,Cout,k2,L]
    out = (kern * t).sum(dim=2)  # [B,Cout,L]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out.reshape(B, Cout, Ho, Wo)


def pac_conv2d_numpy(x, guide, weight, bias, log_sigma, kernel_size, stride=1, padding=1, dilation=1):
    """float64 numpy reference of `semdepth::PacConv2d` (the custom op's semantics, for tests and
    for checking the CUDA plugin): zero padding of x and guide, Gaussian kernel on the squared
    guide distance to the window centre, sigma = exp(log_sigma) per layer ([1]) or filter ([Cout])."""
    x = np.asarray(x, np.float64)
    guide = np.asarray(guide, np.float64)
    w = np.asarray(weight, np.float64)
    B, Cin, H, W = x.shape
    Cout, _, k, _ = w.shape
    assert k == kernel_size and k % 2 == 1
    Ho, Wo = _out_size(H, k, stride, padding, dilation), _out_size(W, k, stride, padding, dilation)
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    xp, gp = np.pad(x, pad), np.pad(guide, pad)
    coef = (-0.5 * np.exp(-2.0 * np.asarray(log_sigma, np.float64).reshape(-1))).reshape(1, -1, 1, 1)
    c = (k - 1) // 2

    def win(a, n):
        return slice(a * dilation, a * dilation + (n - 1) * stride + 1, stride)

    g_c = gp[:, :, win(c, Ho), win(c, Wo)]
    out = np.zeros((B, Cout, Ho, Wo))
    for a in range(k):
        for b in range(k):
            xo = xp[:, :, win(a, Ho), win(b, Wo)]
            d = ((g_c - gp[:, :, win(a, Ho), win(b, Wo)]) ** 2).sum(1, keepdims=True)
            out += np.exp(d * coef) * np.einsum("oi,bihw->bohw", w[:, :, a, b], xo)
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    return out
