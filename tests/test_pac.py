"""PacConv2d (Eq. 4-5): equivalence to the unfold reference, gradients, conv special case, ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from semdepth_core.nets.pac import PacConv2d, pac_conv2d
from semdepth_core.nets.pac_reference import pac_conv2d_reference


def _layer(cin, cout, k, dilation, mode, stride=1, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    layer = PacConv2d(cin, cout, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                      sigma_mode=mode, init_sigma=0.8).to(dtype)
    with torch.no_grad():  # distinct sigmas per filter so "filter" mode is really per-filter
        layer.log_sigma.copy_(torch.linspace(-0.3, 0.4, layer.log_sigma.numel(), dtype=dtype))
    return layer


@pytest.mark.parametrize(
    "k,dilation,mode,stride",
    [(3, 1, "layer", 1), (3, 2, "filter", 1), (5, 1, "filter", 1), (1, 1, "layer", 1), (3, 1, "layer", 2),
     (5, 2, "layer", 1), (3, 1, "filter", 2)],
)
def test_matches_unfold_reference_forward_and_backward(k, dilation, mode, stride):
    layer = _layer(5, 7, k, dilation, mode, stride)
    x = torch.randn(2, 5, 11, 13, requires_grad=True)
    g = torch.randn(2, 4, 11, 13, requires_grad=True)
    out = layer(x, g)
    ref = pac_conv2d_reference(x, g, layer.weight, layer.bias, layer.sigma, stride, layer.padding, dilation)
    assert out.shape == ref.shape == (2, 7, (11 - 1) // stride + 1, (13 - 1) // stride + 1)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (out - ref).abs().max()
    # the kernel really adapts: the output differs from the unguided convolution
    plain = nn.functional.conv2d(x, layer.weight, layer.bias, stride, layer.padding, dilation)
    if k > 1:
        assert (out - plain).abs().max() > 1e-2
    # gradients of the memory-efficient backward agree with autograd through the reference
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (x, g, layer.weight, layer.bias, layer.log_sigma))
    ref2 = pac_conv2d_reference(x, g, layer.weight, layer.bias, layer.log_sigma.exp(), stride, layer.padding,
                                dilation)
    rgrads = torch.autograd.grad((ref2 * w).sum(), (x, g, layer.weight, layer.bias, layer.log_sigma))
    for name, a, b in zip(("x", "guide", "weight", "bias", "log_sigma"), grads, rgrads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), f"{name}: {(a - b).abs().max()}"


@pytest.mark.parametrize("padding,mode", [(0, "layer"), (0, "filter"), (2, "layer")])
def test_other_paddings_match_reference(padding, mode):
    """padding=0 on pre-padded inputs (how the decoder uses it) and padding wider than the window."""
    torch.manual_seed(1)
    layer = PacConv2d(6, 5, 3, padding=padding, sigma_mode=mode, init_sigma=4.0)
    x = torch.randn(2, 6, 9, 12, requires_grad=True)
    g = torch.randn(2, 32, 9, 12, requires_grad=True)  # D = 32 as the guidance branch
    out = layer(x, g)
    ref = pac_conv2d_reference(x, g, layer.weight, layer.bias, layer.sigma, 1, padding, 1)
    assert out.shape == ref.shape == (2, 5, 9 - 2 + 2 * padding, 12 - 2 + 2 * padding)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(out.square().sum(), (x, g, layer.log_sigma))
    gb = torch.autograd.grad(ref.square().sum(), (x, g, layer.log_sigma))
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tile", [300, 900])
@pytest.mark.parametrize("mode", ["layer", "filter"])
def test_spatial_tiling_matches_reference(monkeypatch, tile, mode):
    """Tiles smaller than a row and than the mirrored-tap shift give the same result and gradients."""
    import semdepth_core.nets.pac_torch as pac_mod

    monkeypatch.setenv("SEMDEPTH_NATIVE_PAC", "0")  # the torch implementation's tiling (not the fused kernel)
    monkeypatch.setattr(pac_mod, "_TILE_FLOATS", tile)
    monkeypatch.setattr(pac_mod, "_MIN_TILE", 1)
    layer = _layer(3, 4, 5, 2, mode, seed=3)  # k=5, dilation 2: shifts up to 2*2*(Wp+1)
    x = torch.randn(2, 3, 10, 17, requires_grad=True)
    g = torch.randn(2, 5, 10, 17, requires_grad=True)
    assert len(pac_mod._Flat(x, 5, layer.padding, 2).chunks(3 + 4 + 5)) > 3
    out = layer(x, g)
    ref = pac_conv2d_reference(x, g, layer.weight, layer.bias, layer.sigma, 1, layer.padding, 2)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    params = (x, g, layer.weight, layer.bias, layer.log_sigma)
    ga = torch.autograd.grad((out * w).sum(), params)
    gb = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_no_grad_path_equals_training_path():
    layer = _layer(4, 6, 3, 1, "filter")
    x, g = torch.randn(1, 4, 9, 10), torch.randn(1, 3, 9, 10)
    with torch.no_grad():
        a = layer(x, g)
    b = layer(x, g)
    assert b.requires_grad and torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("mode", ["layer", "filter"])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 2), (2, 1)])
def test_gradcheck_float64(mode, stride, dilation):
    # full Jacobian for the basic case (kept tiny), random-projection ("fast") check for the variants
    full = mode == "layer" and stride == 1 and dilation == 1
    B, cin, cout, D, H, W = (1, 2, 3, 2, 5, 5) if full else (2, 3, 4, 2, 6, 7)
    layer = _layer(cin, cout, 3, dilation, mode, stride, dtype=torch.float64)
    x = torch.randn(B, cin, H, W, dtype=torch.float64, requires_grad=True)
    g = (0.5 * torch.randn(B, D, H, W, dtype=torch.float64)).requires_grad_()
    params = (layer.weight, layer.bias, layer.log_sigma)

    def fn(x_, g_, w_, b_, s_):
        return pac_conv2d(x_, g_, w_, b_, s_, stride, layer.padding, dilation)

    assert torch.autograd.gradcheck(fn, (x, g) + params, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=not full)


@pytest.mark.parametrize("mode", ["layer", "filter"])
def test_unit_kernel_reproduces_conv2d(mode):
    """K == 1 (constant guide or sigma -> inf) is the standard convolution (§4.1, last sentence)."""
    layer = _layer(6, 8, 3, 1, mode, dtype=torch.float64)
    conv = nn.Conv2d(6, 8, 3, padding=1).double()
    conv.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x = torch.randn(2, 6, 10, 12, dtype=torch.float64)
    const_guide = torch.full((2, 5, 10, 12), 3.7, dtype=torch.float64)
    with torch.no_grad():
        ref = conv(x)
        out = layer(x, const_guide)
        assert torch.allclose(out, ref, atol=1e-12, rtol=0)  # exact up to summation order
        layer.log_sigma.fill_(60.0)  # sigma = e^60: K = exp(-d / 2e52) == 1 in float64
        out_inf = layer(x, torch.randn(2, 5, 10, 12, dtype=torch.float64))
        assert torch.allclose(out_inf, ref, atol=1e-12, rtol=0)
    # and in float32 with the training path (custom backward) active
    layer32, conv32 = layer.float(), conv.float()
    with torch.no_grad():
        layer32.log_sigma.zero_()
    out32 = layer32(x.float(), const_guide.float())
    assert torch.allclose(out32, conv32(x.float()), atol=1e-5)


def test_sigma_parametrisation_and_errors():
    layer = PacConv2d(4, 5, sigma_mode="filter", init_sigma=2.0)
    assert layer.log_sigma.shape == (5,) and torch.allclose(layer.sigma, torch.full((5,), 2.0))
    assert PacConv2d(4, 5).log_sigma.shape == (1,)
    with pytest.raises(ValueError, match="odd"):
        PacConv2d(4, 5, kernel_size=4)
    with pytest.raises(ValueError, match="stride"):
        PacConv2d(4, 5, stride=3)
    with pytest.raises(ValueError, match="sigma_mode"):
        PacConv2d(4, 5, sigma_mode="pixel")
    with pytest.raises(ValueError, match="guide"):
        PacConv2d(4, 5)(torch.randn(1, 4, 8, 8), torch.randn(1, 2, 7, 8))
    with pytest.raises(ValueError, match="channels"):
        PacConv2d(4, 5)(torch.randn(1, 3, 8, 8), torch.randn(1, 2, 8, 8))


def test_similar_guide_weights_neighbours_more():
    """A neighbour with a distant guide feature is suppressed (Eq. 5), a similar one is not."""
    layer = PacConv2d(1, 1, 3, bias=False, init_sigma=0.5)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0, 1, 2] = 1.0  # out(i) = K(f_i, f_{i+(0,1)}) * x(i+(0,1))
    x = torch.ones(1, 1, 1, 4)
    g = torch.tensor([[[[0.0, 0.0, 3.0, 3.0]]]])  # a "semantic boundary" between columns 1 and 2
    with torch.no_grad():
        out = layer(x, g)[0, 0, 0]
    assert torch.allclose(out[0], torch.tensor(1.0))  # same class on the right
    assert out[1] < 1e-7  # across the boundary: exp(-0.5 * 9 / 0.25)
    assert torch.allclose(out[2], torch.tensor(1.0))
    assert out[3] == 0  # right neighbour is zero padding


@pytest.mark.parametrize("mode", ["layer", "filter"])
def test_onnx_export_matches_onnxruntime(tmp_path, mode):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.pac = _layer(8, 6, 3, 2, mode)

        def forward(self, x, g):
            return self.pac(x, g)

    model = Wrap().eval()
    x, g = torch.randn(1, 8, 12, 20), torch.randn(1, 4, 12, 20)
    path = tmp_path / "pac.onnx"
    torch.onnx.export(model, (x, g), str(path), opset_version=17, dynamo=False, input_names=["x", "guide"],
                      output_names=["y"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert not any("unfold" in o.lower() or o.startswith("ATen") for o in ops), ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy(), "guide": g.numpy()})
    with torch.no_grad():
        want = model(x, g).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
