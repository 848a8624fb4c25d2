"""Pixel-adaptive convolution (Su et al., 2019) as used for semantic guidance (paper §4.1, Eq. 4-5).

    v'_i = sum_{j in Omega(i)} K(f_i, f_j) W[p_i - p_j] v_j + b                      (Eq. 4)
    K(f_i, f_j) = exp(-1/2 ||f_i - f_j||^2 / sigma^2)                                 (Eq. 5)

On CPU with one sigma per layer (float32/float64, padding <= (k//2)*dilation) the layer runs on a
fused kernel, `_native_pac` (C compiled on first use: per spatial tile a kernel-modulated im2col and
one BLAS GEMM, forward and backward, OpenMP across tiles); everything else, and the fallback when
that kernel is unavailable or disabled (SEMDEPTH_NATIVE_PAC=0, `pac_conv2d(..., native=False)`),
is the torch implementation (`pac_torch.py`). The float64 unfold and numpy references that the tests
compare both against are in `pac_reference.py`.

Border handling: x is zero-padded; the guide is zero-padded too, and a neighbour outside the
image contributes nothing because its x value is zero (so its kernel value is irrelevant and
receives no gradient). The guide "centre" f_i is the guide at the window centre, so kernel_size
must be odd.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import _native_pac
from .pac_torch import pac_conv2d_torch, pac_loop

SIGMA_MODES = ("layer", "filter")


def _check_inputs(x: torch.Tensor, guide: torch.Tensor, weight: torch.Tensor) -> None:
    """Shapes of x, guide and weight agree, or a ValueError saying how they do not."""
    if x.dim() != 4 or guide.dim() != 4:
        raise ValueError(f"PacConv2d expects 4-D x and guide, got {tuple(x.shape)} and {tuple(guide.shape)}")
    if x.shape[0] != guide.shape[0] or x.shape[-2:] != guide.shape[-2:]:
        raise ValueError(
            f"PacConv2d: guide {tuple(guide.shape)} must match x {tuple(x.shape)} in batch and spatial size"
        )
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"PacConv2d: x has {x.shape[1]} channels, the layer expects {weight.shape[1]}")


class _PacNativeFunction(torch.autograd.Function):
    """Eq. 4-5 with one sigma per layer on the fused CPU kernel (`_native_pac`), forward and backward."""

    @staticmethod
    def forward(ctx, x, guide, weight, bias, log_sigma, stride, padding, dilation):
        ctx.conf = (stride, padding, dilation, bias is not None)
        out, dist = _native_pac.forward(x, guide, weight, bias, log_sigma, stride, padding, dilation, keep_dist=True)
        # the guide distances ([B,(k*k-1)/2,H,W], 4 maps for 3x3) are kept: backward skips recomputing them
        ctx.save_for_backward(x, guide, weight, log_sigma, dist)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, guide, weight, log_sigma, dist = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        need_x, need_g, need_w, need_b, need_s = ctx.needs_input_grad[:5]
        gb = grad_out.sum(dim=(0, 2, 3)) if (has_bias and need_b) else None
        gx, gg, gw, gs = _native_pac.backward(grad_out, x, guide, weight, log_sigma, stride, padding, dilation,
                                              (need_x, need_g, need_w, need_s), dist=dist)
        return gx, gg, gw, gb, gs, None, None, None


def _use_native(native, x, guide, weight, bias, log_sigma, stride, padding, dilation) -> bool:
    """Whether this call runs on the fused kernel; native=True insists (error if it cannot)."""
    if native is False:
        return False
    ok = (_native_pac.load() is not None
          and _native_pac.supported(x, guide, weight, log_sigma, stride, padding, dilation)
          and (bias is None or (bias.dtype == x.dtype and bias.device.type == "cpu")))
    if native is True and not ok:
        raise RuntimeError("pac_conv2d(native=True): the fused kernel is unavailable or does not cover this call "
                           "(needs CPU float32/float64, one sigma per layer, padding <= (k//2)*dilation, a C "
                           "compiler and SEMDEPTH_NATIVE / SEMDEPTH_NATIVE_PAC not 0)")
    return ok


def pac_conv2d(x, guide, weight, bias=None, log_sigma=None, stride=1, padding=1, dilation=1, native=None):
    """Functional Eq. 4-5: x[B,Cin,H,W], guide[B,D,H,W], weight[Cout,Cin,k,k], log_sigma[1|Cout].

    native: None uses the fused CPU kernel where it applies, False the torch implementation,
    True requires the fused kernel.
    """
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if not tracing:  # shapes are static constants while tracing
        _check_inputs(x, guide, weight)
    if log_sigma is None:
        log_sigma = x.new_zeros(1)
    tensors = (x, guide, weight, log_sigma) + ((bias,) if bias is not None else ())
    if tracing:  # standard ops only, out of place: exports to ONNX
        return pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)
    if _use_native(native, x, guide, weight, bias, log_sigma, stride, padding, dilation):
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
            return _native_pac.forward(x, guide, weight, bias, log_sigma, stride, padding, dilation)
        return _PacNativeFunction.apply(x, guide, weight, bias, log_sigma, stride, padding, dilation)
    return pac_conv2d_torch(x, guide, weight, bias, log_sigma, stride, padding, dilation)


class PacConv2d(nn.Module):
    """Pixel-adaptive convolution, Eq. 4 with the Gaussian kernel of Eq. 5 and learnable sigma.

    sigma_mode="layer" (the default) learns one sigma per layer; "filter" learns one sigma per
    output filter, the literal reading of §4.1. The default is "layer" because a kernel map shared
    by all output channels is computed once per offset ([B,1,H,W]) and factors onto the input
    side in backward (2 GEMMs per tap, as many as nn.Conv2d's backward), whereas per-filter sigma
    needs Cout kernel maps per offset ([B,Cout,H,W]: Cout x more exp/mul work) and a third GEMM
    per tap in backward to get dL/dK.
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
