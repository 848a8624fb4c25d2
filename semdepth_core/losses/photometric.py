"""Photometric appearance loss, paper Eq. 2: alpha*(1-SSIM)/2 + (1-alpha)*|I_t - I_hat_t|.

Two implementations of the same formula:
- `ssim` / `photometric_loss_reference`: the plain autograd version (reads like the equation; the test oracle).
- `photometric_loss`: what training calls. Its forward uses separable 3x3 box sums instead of
  `avg_pool2d` and its backward is the analytic gradient of Eq. 2 w.r.t. the synthesised image (the
  target is a constant of the loss), so no intermediate is kept for autograd. On this project's CPU
  `avg_pool2d` and its backward were ~70 % of the whole loss (docs/experiments.md, train_step_cost).
  On CPU the same forward and backward run as one fused C kernel (`_native_photometric.py`) when a
  C compiler is present; the torch ops are the fallback (and the GPU path).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from semdepth_core.losses import _native_photometric as _native

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, the SSIM term of Eq. 2) on 3x3 mean windows, reflection padding.

    x, y: [B,C,H,W] in [0,1] -> [B,C,H,W] SSIM in [-1, 1] (1 = identical).
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)  # [B,C,H,W]
    mu_y = F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    cov_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)
    denominator = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return numerator / denominator


def photometric_loss_reference(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Eq. 2 by plain autograd: alpha*(1-SSIM)/2 + (1-alpha)*L1, averaged over channels. [B,C,H,W] -> [B,1,H,W]."""
    l1 = (pred - target).abs().mean(1, keepdim=True)  # [B,1,H,W]
    if alpha == 0:
        return l1
    dssim = ((1 - ssim(pred, target)) / 2).clamp(0, 1).mean(1, keepdim=True)  # [B,1,H,W]
    return alpha * dssim + (1 - alpha) * l1


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Valid 3x3 mean over the last two dims, as two separable 3-tap sums: [..., H+2, W+2] -> [..., H, W]."""
    r = x[..., :-2, :] + x[..., 1:-1, :]
    r += x[..., 2:, :]
    out = r[..., :-2] + r[..., 1:-1]
    out += r[..., 2:]
    return out.mul_(1.0 / 9.0)


def _box3_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_box3` (the 3x3 box is symmetric: zero-pad by 2, valid box): [..., H, W] -> [..., H+2, W+2]."""
    shape = g.shape
    g4 = g.reshape(-1, 1, shape[-2], shape[-1])
    return _box3(F.pad(g4, (2, 2, 2, 2))).reshape(*shape[:-2], shape[-2] + 2, shape[-1] + 2)


def _reflect_pad(x: torch.Tensor) -> torch.Tensor:
    """Reflection-pad the last two dims by 1 (any leading dims)."""
    shape = x.shape
    xp = F.pad(x.reshape(-1, shape[-3], shape[-2], shape[-1]), (1, 1, 1, 1), mode="reflect")
    return xp.reshape(*shape[:-2], shape[-2] + 2, shape[-1] + 2)


def _reflect_pad_adjoint(gp: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_reflect_pad` (fold the border back onto the pixels it copied): [..., H+2, W+2] -> [..., H, W]."""
    g = gp[..., 1:-1, :].clone()  # rows first, on the full padded width
    g[..., 1, :] += gp[..., 0, :]
    g[..., -2, :] += gp[..., -1, :]
    out = g[..., 1:-1].clone()
    out[..., 1] += g[..., 0]
    out[..., -2] += g[..., -1]
    return out


def _photometric_forward(x: torch.Tensor, y: torch.Tensor, alpha: float, need_grad: bool):
    """Eq. 2 on x [G,B,C,H,W] vs y [1,B,C,H,W] -> (loss [G,B,1,H,W], the SSIM term's tensors for the
    backward: (xp, yp, inside, dS/dm1, dS/dm2, dS/dm12), empty when alpha = 0 or need_grad is False)."""
    l1 = (x - y).abs_().mean(2, keepdim=True)
    if alpha == 0:
        return l1, ()
    xp, yp = _reflect_pad(x), _reflect_pad(y)
    mx, my = _box3(xp), _box3(yp)
    exx, eyy, exy = _box3(xp * xp), _box3(yp * yp), _box3(xp * yp)
    mxmy = mx * my
    a = mxmy.mul(2).add_(SSIM_C1)  # 2 mu_x mu_y + C1
    b = (exy - mxmy).mul_(2).add_(SSIM_C2)  # 2 sigma_xy + C2
    mx2, my2 = mx * mx, my * my
    c = (mx2 + my2).add_(SSIM_C1)  # mu_x^2 + mu_y^2 + C1
    d = (exx - mx2).add_(eyy - my2).add_(SSIM_C2)  # sigma_x^2 + sigma_y^2 + C2
    ic, id_ = c.reciprocal_(), d.reciprocal_()
    s = (a * b).mul_(ic).mul_(id_)  # SSIM = a b / (c d) [G,B,C,H,W]
    dssim = (1 - s).mul_(0.5)
    inside = (dssim >= 0) & (dssim <= 1) if need_grad else None  # where clamp(0, 1) passes the gradient
    loss = dssim.clamp_(0, 1).mean(2, keepdim=True).mul_(alpha).add_(l1, alpha=1 - alpha)
    if not need_grad:
        return loss, ()
    # dS/d(raw moments) of the window around each pixel: m1 = E[x], m2 = E[x^2], m12 = E[xy]
    #   dS/dm1 = 2 S (mu_y/a - mu_y/b - mu_x/c + mu_x/d),  dS/dm2 = -S/d,  dS/dm12 = 2 S/b
    ia, ib = a.reciprocal_(), b.reciprocal_()
    d_m1 = (ia - ib).mul_(my).add_((id_ - ic).mul_(mx)).mul_(s).mul_(2)
    d_m2 = (s * id_).neg_()
    d_m12 = (s * ib).mul_(2)
    return loss, (xp, yp, inside, d_m1, d_m2, d_m12)


class _PhotometricLoss(torch.autograd.Function):
    """Eq. 2 with an analytic gradient w.r.t. the synthesised image only (the target is constant)."""

    @staticmethod
    def forward(ctx, x, y, alpha, lib):
        ctx.alpha, ctx.C, ctx.lib = alpha, x.shape[2], lib
        if lib is not None:  # the fused C kernel (same maths, _native_photometric.py)
            loss, D = _native.forward(lib, x, y, alpha, need_grad=True)
            ctx.save_for_backward(x, y, D)
            return loss
        loss, ssim_saved = _photometric_forward(x, y, alpha, need_grad=True)
        ctx.save_for_backward(x, y, *ssim_saved)
        return loss

    @staticmethod
    def backward(ctx, g):  # g [G,B,1,H,W]
        alpha, C = ctx.alpha, ctx.C
        if ctx.lib is not None:
            x, y, D = ctx.saved_tensors
            return _native.backward(ctx.lib, g, x, y, D, alpha), None, None, None
        x, y, *rest = ctx.saved_tensors
        grad = torch.sign(x - y).mul_(g * ((1 - alpha) / C))  # L1 term
        if rest:
            xp, yp, inside, d_m1, d_m2, d_m12 = rest
            g_s = (g * (-alpha / (2 * C))) * inside  # dLoss/dSSIM per channel, [G,B,C,H,W]
            grad_p = _box3_adjoint(g_s * d_m1)
            grad_p += _box3_adjoint(g_s * d_m2).mul_(xp).mul_(2)
            grad_p += _box3_adjoint(g_s * d_m12).mul_(yp)
            grad += _reflect_pad_adjoint(grad_p)
        return grad, None, None, None


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85,
                     native: bool = True) -> torch.Tensor:
    """Eq. 2: alpha*(1-SSIM)/2 + (1-alpha)*L1, averaged over channels.

    pred [G*B,C,H,W], target [B,C,H,W] (G >= 1 synthesised images per target, stacked group-major,
    so batched callers need not repeat the target) -> loss map [G*B,1,H,W]. native: use the fused C
    kernel on CPU when it builds (`_native_photometric`), else the torch ops below.
    """
    if pred.ndim != 4 or target.ndim != 4 or pred.shape[1:] != target.shape[1:]:
        raise ValueError(f"photometric_loss: shapes differ {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.shape[0] % max(target.shape[0], 1) != 0:
        raise ValueError(f"photometric_loss: pred batch {pred.shape[0]} is not a multiple of target batch "
                         f"{target.shape[0]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"photometric_loss: alpha must be in [0, 1], got {alpha}")
    if min(pred.shape[-2:]) < 2:
        raise ValueError(f"photometric_loss: images must be at least 2x2, got {tuple(pred.shape[-2:])}")
    B, G = target.shape[0], pred.shape[0] // target.shape[0]
    x = pred.reshape(G, B, *pred.shape[1:])  # [G,B,C,H,W]
    y = target.to(pred.dtype).reshape(1, *target.shape)  # [1,B,C,H,W]
    if target.requires_grad and torch.is_grad_enabled():  # not a constant: differentiate everything
        return photometric_loss_reference(x.reshape(-1, *pred.shape[1:]),
                                          y.expand_as(x).reshape(-1, *pred.shape[1:]), alpha)
    lib = _native.load() if (native and alpha > 0 and _native.supported(x, y)) else None
    if pred.requires_grad and torch.is_grad_enabled():
        loss = _PhotometricLoss.apply(x, y, float(alpha), lib)
    elif lib is not None:
        loss = _native.forward(lib, x, y, float(alpha), need_grad=False)[0]
    else:
        loss = _photometric_forward(x, y, float(alpha), need_grad=False)[0]
    return loss.reshape(G * B, 1, *pred.shape[-2:])
