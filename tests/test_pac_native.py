"""Fused CPU PAC kernel (`semdepth_core.nets._native_pac`): exact against the unfold reference and the
torch implementation in float64 (values, every gradient, gradcheck), and the fallback when it is off."""
from __future__ import annotations

import pytest
import torch

import semdepth_core.nets._native_pac as native_mod
from semdepth_core.nets.pac import PacConv2d, pac_conv2d
from semdepth_core.nets.pac_reference import pac_conv2d_reference

pytestmark = pytest.mark.skipif(native_mod.load() is None, reason="fused PAC kernel unavailable (no C compiler?)")

F64 = torch.float64


def _inputs(cin, cout, k, B=2, D=4, H=9, W=13, dtype=F64, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(B, cin, H, W, dtype=dtype, requires_grad=True)
    g = torch.randn(B, D, H, W, dtype=dtype, requires_grad=True)
    w = torch.randn(cout, cin, k, k, dtype=dtype, requires_grad=True)
    b = torch.randn(cout, dtype=dtype, requires_grad=True)
    s = torch.tensor([0.3], dtype=dtype, requires_grad=True)  # log sigma
    return x, g, w, b, s


@pytest.mark.parametrize(
    "k,stride,padding,dilation,H,W",
    [(3, 1, 1, 1, 9, 13), (3, 1, 0, 1, 9, 13), (3, 2, 1, 1, 9, 13), (3, 2, 0, 1, 10, 7), (5, 1, 2, 1, 8, 11),
     (5, 2, 1, 1, 12, 9), (3, 1, 2, 2, 9, 13), (5, 1, 4, 2, 11, 10), (1, 1, 0, 1, 5, 6), (3, 1, 1, 1, 3, 70),
     (3, 3, 1, 1, 11, 12), (7, 1, 3, 1, 4, 5), (3, 1, 0, 1, 5, 150)],
)
def test_native_matches_reference_float64(k, stride, padding, dilation, H, W):
    """Values and all five gradients equal the unfold reference to float64 rounding."""
    x, g, w, b, s = _inputs(5, 7, k, H=H, W=W)
    out = pac_conv2d(x, g, w, b, s, stride, padding, dilation, native=True)
    ref = pac_conv2d_reference(x, g, w, b, s.exp(), stride, padding, dilation)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    wt = torch.randn_like(ref)
    got = torch.autograd.grad((out * wt).sum(), (x, g, w, b, s))
    want = torch.autograd.grad((ref * wt).sum(), (x, g, w, b, s))
    for name, a, e in zip(("x", "guide", "weight", "bias", "log_sigma"), got, want):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")


def test_native_matches_torch_path_float32_and_partial_grads():
    """float32 against the torch implementation, and only the requested gradients are produced."""
    x, g, w, b, s = _inputs(6, 4, 3, B=1, D=32, H=12, W=40, dtype=torch.float32)
    s.data.fill_(1.5)
    a = pac_conv2d(x, g, w, b, s, 1, 1, 1, native=True)
    e = pac_conv2d(x, g, w, b, s, 1, 1, 1, native=False)
    torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    wt = torch.randn_like(a)
    ga = torch.autograd.grad((a * wt).sum(), (x, g, w, b, s))
    ge = torch.autograd.grad((e * wt).sum(), (x, g, w, b, s))
    for u, v in zip(ga, ge):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
    # weight-only and input-only backward (the others are not requested)
    (gw,) = torch.autograd.grad((pac_conv2d(x.detach(), g.detach(), w, None, s.detach(), native=True) * wt).sum(), (w,))
    torch.testing.assert_close(gw, ge[2], rtol=1e-4, atol=1e-4)
    (gx,) = torch.autograd.grad((pac_conv2d(x, g.detach(), w.detach(), b.detach(), s.detach(), native=True) * wt).sum(),
                                (x,))
    torch.testing.assert_close(gx, ge[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_gradcheck_native_and_fallback(native, stride, padding, dilation):
    """torch.autograd.gradcheck (float64, full Jacobian) of the fused kernel and of the torch path."""
    x, g, w, b, s = _inputs(2, 3, 3, B=2, D=3, H=6, W=7)
    with torch.no_grad():
        g.mul_(0.5)

    def fn(x_, g_, w_, b_, s_):
        return pac_conv2d(x_, g_, w_, b_, s_, stride, padding, dilation, native=native)

    assert torch.autograd.gradcheck(fn, (x, g, w, b, s), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_threads_and_batch_do_not_change_the_result():
    """1 and 2 threads, batch 3 with many tiles: same values and gradients (tile phases keep writes apart)."""
    x, g, w, b, s = _inputs(3, 5, 3, B=3, D=5, H=37, W=21)
    prev = torch.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = pac_conv2d(x, g, w, b, s, 1, 1, 1, native=True)
            res.append((out,) + torch.autograd.grad(out.square().sum(), (x, g, w, s)))
    finally:
        torch.set_num_threads(prev)
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_no_grad_inference_uses_native_and_matches():
    layer = PacConv2d(4, 6, 3, padding=0).double()
    x, g = torch.randn(1, 4, 10, 12, dtype=F64), torch.randn(1, 8, 10, 12, dtype=F64)
    with torch.no_grad():
        fast = layer(x, g)
        slow = pac_conv2d(x, g, layer.weight, layer.bias, layer.log_sigma, 1, 0, 1, native=False)
    assert not fast.requires_grad
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_unsupported_calls_fall_back_or_refuse():
    """Per-filter sigma and padding beyond the window centre stay on the torch path; native=True refuses."""
    x, g, w, b, _ = _inputs(3, 4, 3)
    s_filter = torch.linspace(-0.2, 0.3, 4, dtype=F64)
    assert not native_mod.supported(x, g, w, s_filter, 1, 1, 1)
    assert not native_mod.supported(x, g, w, torch.zeros(1, dtype=F64), 1, 2, 1)  # padding 2 > centre offset 1
    assert not native_mod.supported(x.half(), g.half(), w.half(), torch.zeros(1).half(), 1, 1, 1)
    out = pac_conv2d(x, g, w, b, s_filter, 1, 2, 1)  # falls back silently
    torch.testing.assert_close(out, pac_conv2d_reference(x, g, w, b, s_filter.exp(), 1, 2, 1))
    with pytest.raises(RuntimeError, match="fused kernel"):
        pac_conv2d(x, g, w, b, s_filter, 1, 1, 1, native=True)


def test_env_switch_disables_native(monkeypatch):
    """SEMDEPTH_NATIVE_PAC=0 (or SEMDEPTH_NATIVE=0): load() is None and the torch path gives the same result."""
    x, g, w, b, s = _inputs(3, 4, 3)
    fast = pac_conv2d(x, g, w, b, s)
    for var in ("SEMDEPTH_NATIVE_PAC", "SEMDEPTH_NATIVE"):
        monkeypatch.setenv(var, "0")
        assert native_mod.load() is None
        with pytest.raises(RuntimeError, match="fused kernel"):
            pac_conv2d(x, g, w, b, s, native=True)
        torch.testing.assert_close(pac_conv2d(x, g, w, b, s), fast, rtol=1e-12, atol=1e-12)
        monkeypatch.delenv(var)
    assert native_mod.load() is not None


def test_missing_compiler_falls_back(monkeypatch, tmp_path, caplog):
    """No compiler (fresh cache): load() warns and returns None, and PacConv2d still runs on torch."""
    monkeypatch.setattr(native_mod, "_tried", False)
    monkeypatch.setattr(native_mod, "_lib", None)
    monkeypatch.setenv("SEMDEPTH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level("WARNING"):
        assert native_mod.load() is None
    assert "fused PAC kernel unavailable" in caplog.text
    x, g, w, b, s = _inputs(3, 4, 3)
    out = pac_conv2d(x, g, w, b, s)
    torch.testing.assert_close(out, pac_conv2d_reference(x, g, w, b, s.exp(), 1, 1, 1))
    assert not list(tmp_path.rglob("*.so"))


def test_reused_guide_distances_are_checked():
    x, g, w, _, s = _inputs(3, 4, 3)
    go = torch.randn(2, 4, 9, 13, dtype=F64)
    with pytest.raises(ValueError, match="guide distances"):
        native_mod.backward(go, x, g, w, s, 1, 1, 1, (True, True, True, True), dist=torch.zeros(2, 3, 9, 13, dtype=F64))
