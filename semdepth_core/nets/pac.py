"""Pixel-adaptive convolution (Su et al., 2019) as used for semantic guidance (paper §4.1, Eq. 4-5).

    v'_i = sum_{j in Omega(i)} K(f_i, f_j) W[p_i - p_j] v_j + b                      (Eq. 4)
    K(f_i, f_j) = exp(-1/2 ||f_i - f_j||^2 / sigma^2)                                 (Eq. 5)

Memory-efficient formulation: instead of unfolding the input into k*k*Cin*H*W, the layer loops
over the k*k kernel offsets o. For each offset it takes a shifted (strided) view x_o of the
zero-padded input, projects it with the 1x1 weight slice W[:, :, o] (y_o = W_o x_o, [B,Cout,H',W']),
multiplies by the per-pixel kernel map K_o = exp(-1/2 d_o / sigma^2), where
d_o = sum_D (f_centre - f_o)^2 comes from shifted guide differences, and accumulates.

Training uses a custom autograd Function whose backward recomputes the (cheap) kernel maps per
offset, so the only tensors kept for backward are x, guide, weight and sigma -- the same order of
memory as a plain convolution (which keeps x and weight). Tracing / ONNX export and no-grad
inference use the same per-offset loop written with standard ops only (pad, slice, conv, mul,
sum, exp), so the layer exports to ONNX opset 17 without custom operators.

Border handling: x is zero-padded; the guide is zero-padded too, and a neighbour outside the
image contributes nothing because its x value is zero (so its kernel value is irrelevant and
receives no gradient). The guide "centre" f_i is the guide at the window centre, so kernel_size
must be odd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGMA_MODES = ("layer", "filter")


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


def _pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation):
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


class _PacFunction(torch.autograd.Function):
    """Eq. 4-5 with a hand-written backward that recomputes per-offset kernel maps (low memory)."""

    @staticmethod
    def forward(ctx, x, guide, weight, bias, log_sigma, stride, padding, dilation):
        ctx.conf = (stride, padding, dilation, bias is not None)
        ctx.save_for_backward(x, guide, weight, log_sigma)
        return _pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, guide, weight, log_sigma = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        need_x, need_g, need_w, need_b, need_s = ctx.needs_input_grad[:5]
        k = weight.shape[-1]
        c = (k - 1) // 2
        B, Cin, H, W = x.shape
        Cout = weight.shape[0]
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
        gb = go.sum(dim=(0, 2, 3)) if (has_bias and need_b) else None
        # coef = -1/2 exp(-2 log_sigma)  =>  d coef / d log_sigma = -2 coef
        gs = (gcoef * (-2.0 * coef)).reshape(log_sigma.shape) if need_s else None
        return gx, gg, gw, gb, gs, None, None, None


def _check_inputs(x: torch.Tensor, guide: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 4 or guide.dim() != 4:
        raise ValueError(f"PacConv2d expects 4-D x and guide, got {tuple(x.shape)} and {tuple(guide.shape)}")
    if x.shape[0] != guide.shape[0] or x.shape[-2:] != guide.shape[-2:]:
        raise ValueError(
            f"PacConv2d: guide {tuple(guide.shape)} must match x {tuple(x.shape)} in batch and spatial size"
        )
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"PacConv2d: x has {x.shape[1]} channels, the layer expects {weight.shape[1]}")


def pac_conv2d(x, guide, weight, bias=None, log_sigma=None, stride=1, padding=1, dilation=1):
    """Functional Eq. 4-5: x[B,Cin,H,W], guide[B,D,H,W], weight[Cout,Cin,k,k], log_sigma[1|Cout]."""
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if not tracing:  # shapes are static constants while tracing
        _check_inputs(x, guide, weight)
    if log_sigma is None:
        log_sigma = x.new_zeros(1)
    tensors = (x, guide, weight, log_sigma) + ((bias,) if bias is not None else ())
    if tracing or not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return _pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)
    return _PacFunction.apply(x, guide, weight, bias, log_sigma, stride, padding, dilation)


class PacConv2d(nn.Module):
    """Pixel-adaptive convolution, Eq. 4 with the Gaussian kernel of Eq. 5 and learnable sigma.

    sigma_mode="layer" (the default) learns one sigma per layer; "filter" learns one sigma per
    output filter, the literal reading of §4.1. The default is "layer" because a kernel map shared
    by all output channels is computed once per offset ([B,1,H,W]) and factors onto the input
    side in backward, whereas per-filter sigma needs Cout kernel maps per offset ([B,Cout,H,W])
    and an extra projection in backward (Cout x more exp/mul work, roughly 1.5x the GEMMs).
    sigma is parametrised as log sigma so it stays positive.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = True,
        sigma_mode: str = "layer",
        init_sigma: float = 1.0,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PacConv2d: kernel_size must be odd and >= 1 (the guide centre), got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"PacConv2d: stride must be 1 or 2, got {stride}")
        if dilation < 1 or padding < 0:
            raise ValueError(f"PacConv2d: need dilation >= 1 and padding >= 0, got {dilation}, {padding}")
        if sigma_mode not in SIGMA_MODES:
            raise ValueError(f"PacConv2d: sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        if not init_sigma > 0:
            raise ValueError(f"PacConv2d: init_sigma must be > 0, got {init_sigma}")
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.sigma_mode = sigma_mode
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_ch)) if bias else None
        n_sigma = 1 if sigma_mode == "layer" else out_ch
        self.log_sigma = nn.Parameter(torch.full((n_sigma,), math.log(init_sigma)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as nn.Conv2d for weight and bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_ch * self.kernel_size * self.kernel_size
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def sigma(self) -> torch.Tensor:
        """Current sigma of Eq. 5, shape [1] (layer) or [Cout] (filter)."""
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """x[B,Cin,H,W], guide[B,D,H,W] -> [B,Cout,H',W'] (Eq. 4)."""
        return pac_conv2d(x, guide, self.weight, self.bias, self.log_sigma, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            f"sigma_mode={self.sigma_mode}"
        )


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
    out = torch.einsum("oik,bokl,bikl->bol", weight.reshape(Cout, Cin, k * k), kern, xu)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out.reshape(B, Cout, Ho, Wo)
