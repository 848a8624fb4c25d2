"""Losses against the paper's equations (Eq. 1-3), Monodepth2's min reprojection/auto-mask, velocity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semdepth_core.losses.photometric import (
    SSIM_C1,
    SSIM_C2,
    photometric_loss,
    photometric_loss_reference,
    ssim,
)
from semdepth_core.losses.reprojection import min_reprojection_loss
from semdepth_core.losses.smoothness import smoothness_loss
from semdepth_core.losses.velocity import velocity_loss


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


# ----------------------------------------------------------------------------- Eq. 2

def test_identical_images_have_ssim_one_and_zero_photometric_loss():
    img = _rand(2, 3, 16, 24)
    s = ssim(img, img)
    assert s.shape == (2, 3, 16, 24)
    torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)
    loss = photometric_loss(img, img)
    assert loss.shape == (2, 1, 16, 24)
    assert loss.abs().max().item() < 1e-5


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two 3x3 windows written out from Wang et al. 2004 (population statistics)."""
    mu_a, mu_b = a.mean(), b.mean()
    var_a, var_b = ((a - mu_a) ** 2).mean(), ((b - mu_b) ** 2).mean()
    cov = ((a - mu_a) * (b - mu_b)).mean()
    return ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )


def test_ssim_matches_direct_formula_inside_and_at_reflected_border():
    x = _rand(1, 1, 5, 6, seed=1).double()
    y = (0.5 * x + 0.4 * _rand(1, 1, 5, 6, seed=2).double()).clamp(0, 1)
    s = ssim(x, y)[0, 0].numpy()
    xn, yn = x[0, 0].numpy(), y[0, 0].numpy()
    # interior pixel (row 2, col 3): plain 3x3 window
    assert s[2, 3] == pytest.approx(_ssim_direct(xn[1:4, 2:5], yn[1:4, 2:5]), abs=1e-10)
    # corner pixel (0, 0): reflection padding mirrors row 1 / column 1 (edge not repeated)
    rows, cols = [1, 0, 1], [1, 0, 1]
    win_x, win_y = xn[np.ix_(rows, cols)], yn[np.ix_(rows, cols)]
    assert s[0, 0] == pytest.approx(_ssim_direct(win_x, win_y), abs=1e-10)


def test_photometric_loss_on_constant_images_matches_eq2_by_hand():
    a, b, alpha = 0.2, 0.5, 0.85
    pred = torch.full((1, 3, 8, 8), a, dtype=torch.float64)
    target = torch.full((1, 3, 8, 8), b, dtype=torch.float64)
    # zero variance and covariance: SSIM reduces to the luminance term
    ssim_ab = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    expected = alpha * (1 - ssim_ab) / 2 + (1 - alpha) * abs(a - b)
    loss = photometric_loss(pred, target, alpha=alpha)
    torch.testing.assert_close(loss, torch.full_like(loss, expected), atol=1e-9, rtol=0)
    # alpha = 0 is the pure L1 term
    torch.testing.assert_close(photometric_loss(pred, target, alpha=0.0), torch.full_like(loss, 0.3))


def test_photometric_loss_averages_channels():
    target = torch.zeros(1, 3, 4, 4)
    pred = target.clone()
    pred[:, 0] = 0.3  # only the red channel differs
    l1 = photometric_loss(pred, target, alpha=0.0)
    torch.testing.assert_close(l1, torch.full((1, 1, 4, 4), 0.1))


@pytest.mark.parametrize("native", [True, False], ids=["C-kernel", "torch"])
@pytest.mark.parametrize("groups,batch,channels,size,alpha", [
    (1, 2, 3, (5, 7), 0.85), (3, 2, 3, (6, 5), 0.85), (2, 1, 1, (4, 4), 0.0), (2, 2, 3, (3, 3), 1.0),
    (2, 1, 3, (2, 2), 0.85), (1, 2, 2, (2, 6), 0.85),
])
def test_fused_photometric_loss_equals_the_autograd_reference(groups, batch, channels, size, alpha, native):
    # the training path (box sums + analytic backward, target broadcast over groups; the fused C kernel
    # or its torch fallback) vs Eq. 2 by autograd
    from semdepth_core.losses import _native_photometric

    if native and _native_photometric.load() is None:
        pytest.skip("no C compiler: the fused kernel is unavailable (the torch fallback is tested)")
    g = torch.Generator().manual_seed(groups * 10 + channels)
    x = torch.rand(groups * batch, channels, *size, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(batch, channels, *size, generator=g, dtype=torch.float64)
    with torch.no_grad():  # some pixels nearly equal, so the SSIM clamp at 0 is exercised too
        x[:batch] = y + 0.01 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    ref = photometric_loss_reference(x, y.repeat(groups, 1, 1, 1), alpha)
    out = photometric_loss(x, y, alpha, native=native)
    assert out.shape == (groups * batch, 1, *size)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    w = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    (g_out,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: photometric_loss(a, y, alpha, native=native), (x,))


def test_fused_c_kernel_float32_and_its_fallback(monkeypatch, tmp_path, caplog):
    from semdepth_core.losses import _native_photometric as nat

    lib = nat.load()
    if lib is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 3, 24, 40, generator=g, requires_grad=True)
    y = torch.rand(4, 3, 24, 40, generator=g)
    a, b = photometric_loss(x, y), photometric_loss(x, y, native=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    w = torch.rand(a.shape, generator=g)
    (ga,), (gb,) = torch.autograd.grad((a * w).sum(), x), torch.autograd.grad((b * w).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-5)
    assert nat.supported(x, y) and not nat.supported(x.double(), y)  # mixed dtypes go to torch
    # a compiler that fails: load() reports it and returns None, and the loss still works (torch)
    monkeypatch.setattr(nat, "_tried", False)
    monkeypatch.setattr(nat, "_lib", None)
    monkeypatch.setenv("SEMDEPTH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level("WARNING"):
        assert nat.load() is None
    assert "torch implementation" in caplog.text
    torch.testing.assert_close(photometric_loss(x, y), b)
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left behind
    monkeypatch.setenv("SEMDEPTH_NATIVE", "0")
    monkeypatch.setattr(nat, "_tried", False)
    assert nat.load() is None


def test_fused_photometric_loss_without_grad_and_with_a_differentiable_target():
    x, y = _rand(2, 3, 8, 9, seed=11), _rand(2, 3, 8, 9, seed=12)
    with torch.no_grad():
        torch.testing.assert_close(photometric_loss(x, y), photometric_loss_reference(x, y))
    yg = y.clone().requires_grad_()  # target not constant: falls back to autograd, both get gradients
    photometric_loss(x.clone().requires_grad_(), yg).sum().backward()
    assert yg.grad is not None and yg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not a multiple"):
        photometric_loss(_rand(3, 3, 8, 9), y)
    with pytest.raises(ValueError, match="shapes differ"):
        photometric_loss(_rand(2, 1, 8, 9), y)


# ----------------------------------------------------------------------------- min reprojection, auto-mask

def test_min_over_contexts_picks_the_smaller_loss_and_mean_averages():
    target = _rand(2, 3, 12, 16, seed=3) * 0.5
    near = target + 0.05
    far = target + 0.3
    expected_near = photometric_loss(near, target)
    expected_far = photometric_loss(far, target)
    loss, mask = min_reprojection_loss(target, [far, near], None, automask=False)
    torch.testing.assert_close(loss, expected_near)
    assert mask.dtype == torch.bool and bool(mask.all())
    avg, _ = min_reprojection_loss(target, [far, near], None, automask=False, min_reprojection=False)
    torch.testing.assert_close(avg, (expected_near + expected_far) / 2)


def test_automask_selects_identity_loss_on_static_frames():
    target = _rand(2, 3, 12, 16, seed=4)
    static_context = [target.clone(), target.clone()]  # the camera did not move
    wrongly_warped = [torch.roll(target, 3, dims=-1), torch.roll(target, -2, dims=-2)]
    loss, mask = min_reprojection_loss(target, wrongly_warped, static_context, automask=True)
    assert mask.shape == (2, 1, 12, 16) and mask.dtype == torch.bool
    assert not bool(mask.any()), "every pixel should be auto-masked: the identity loss (~0) wins"
    assert loss.abs().max().item() < 1e-4  # the identity loss (0 + tie-breaking noise) is used


def test_automask_keeps_pixels_where_the_warp_explains_the_motion():
    target = _rand(1, 3, 12, 16, seed=5)
    moved_context = [torch.roll(target, 4, dims=-1)]  # identity loss is large
    perfect_warp = [target.clone()]
    loss, mask = min_reprojection_loss(target, perfect_warp, moved_context, automask=True)
    assert bool(mask.all())
    assert loss.abs().max().item() < 1e-5


def test_automask_requires_identity_images():
    target = _rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="identity"):
        min_reprojection_loss(target, [target], None, automask=True)


# ----------------------------------------------------------------------------- Eq. 3

def test_smoothness_is_zero_on_constant_depth():
    image = _rand(2, 3, 10, 12, seed=6)
    inv_depth = torch.full((2, 1, 10, 12), 0.25)
    assert smoothness_loss(inv_depth, image).item() == pytest.approx(0.0, abs=1e-7)


def test_smoothness_penalises_depth_edges_less_across_image_edges():
    h, w = 8, 16
    inv_depth = torch.full((1, 1, h, w), 0.1)
    inv_depth[..., w // 2:] = 0.5  # depth discontinuity between columns 7 and 8
    edge_image = torch.zeros(1, 3, h, w)
    edge_image[..., w // 2:] = 1.0  # image edge at the same place
    flat_image = torch.full((1, 3, h, w), 0.5)
    at_edge = smoothness_loss(inv_depth, edge_image).item()
    in_flat = smoothness_loss(inv_depth, flat_image).item()
    assert 0 < at_edge < in_flat
    # by hand: d* = d / mean(d) -> jump 0.4/0.3; one jump per row among h*(w-1) x-gradients
    jump = 0.4 / 0.3
    assert in_flat == pytest.approx(jump * h / (h * (w - 1)), rel=1e-5)
    assert at_edge == pytest.approx(jump * math.exp(-1.0) / (w - 1), rel=1e-5)


def test_smoothness_is_invariant_to_inverse_depth_scale():
    image = _rand(1, 3, 10, 12, seed=7)
    inv_depth = _rand(1, 1, 10, 12, seed=8) + 0.1
    torch.testing.assert_close(smoothness_loss(inv_depth, image), smoothness_loss(10 * inv_depth, image))


# ----------------------------------------------------------------------------- velocity

def test_velocity_loss_by_hand():
    translation = torch.tensor([[[3.0, 0.0, 4.0], [0.0, 0.0, -1.0]]])  # norms 5 and 1
    speed = torch.tensor([10.0])
    dt = torch.tensor([[-0.4, 0.1]])  # previous and next frame; distances 4 m and 1 m
    assert velocity_loss(translation, speed, dt).item() == pytest.approx((1.0 + 0.0) / 2)


def test_velocity_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="dt"):
        velocity_loss(torch.zeros(2, 2, 3), torch.ones(2), torch.ones(2, 3))


# ----------------------------------------------------------------------------- Eq. 1 (SfmLoss)

def _random_sfm_inputs(B=2, N=2, H=32, W=64, seed=9):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "rgb": torch.rand(B, 3, H, W, generator=g),
        "rgb_context": torch.rand(B, N, 3, H, W, generator=g),
        "speed": torch.full((B,), 8.0),
        "dt": torch.tensor([[-0.1, 0.1]]).repeat(B, 1),
    }
    inv_depths = [
        (0.05 + 0.5 * torch.rand(B, 1, H // 2**s, W // 2**s, generator=g)).requires_grad_(True) for s in range(4)
    ]
    pose_vecs = (0.01 * torch.randn(B, N, 6, generator=g)).requires_grad_(True)
    K = torch.tensor([[W * 0.6, 0.0, W / 2 - 0.5], [0.0, W * 0.6, H / 2 - 0.5], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    return batch, inv_depths, pose_vecs, K


@pytest.mark.parametrize("upsample", [True, False])
def test_sfm_loss_runs_and_gradients_reach_inverse_depth_and_pose(upsample):
    from semdepth_core.config import LossConfig
    from semdepth_core.losses.sfm import SfmLoss

    batch, inv_depths, pose_vecs, K = _random_sfm_inputs()
    cfg = LossConfig(velocity_weight=0.1, upsample_scales=upsample)
    out = SfmLoss(cfg)(batch, inv_depths, pose_vecs, K)
    assert set(out) == {"total", "photometric", "smoothness", "velocity", "scale_anchor", "depth_hint",
                        "automask_fraction"}
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    assert 0.0 <= out["automask_fraction"].item() <= 1.0
    # Eq. 1 composition: total = L_p + lambda_1 L_s + w_v L_v
    expected_total = out["photometric"] + cfg.smoothness_weight * out["smoothness"] + 0.1 * out["velocity"]
    torch.testing.assert_close(out["total"], expected_total)
    # velocity by hand: distance 0.8 m per context, predicted ~|t| small
    expected_vel = (pose_vecs[..., :3].norm(dim=-1) - 0.8).abs().mean()
    torch.testing.assert_close(out["velocity"], expected_vel)
    out["total"].backward()
    for s, inv in enumerate(inv_depths):
        assert inv.grad is not None and inv.grad.abs().sum() > 0, f"no gradient at scale {s}"
    assert pose_vecs.grad is not None and pose_vecs.grad[..., :3].abs().sum() > 0
    assert pose_vecs.grad[..., 3:].abs().sum() > 0


def test_sfm_loss_without_velocity_weight_ignores_speed():
    from semdepth_core.config import LossConfig
    from semdepth_core.losses.sfm import SfmLoss

    batch, inv_depths, pose_vecs, K = _random_sfm_inputs()
    out = SfmLoss(LossConfig())(batch, inv_depths, pose_vecs, K)
    assert out["velocity"].item() == 0.0
    torch.testing.assert_close(out["total"], out["photometric"] + 1e-3 * out["smoothness"])


@pytest.mark.parametrize("upsample", [True, False])
def test_depth_normalization_makes_the_objective_scale_free(upsample):
    from semdepth_core.config import LossConfig
    from semdepth_core.losses.sfm import SfmLoss

    batch, inv_depths, pose_vecs, K = _random_sfm_inputs()
    scaled = [(3.0 * d.detach()).requires_grad_() for d in inv_depths]
    plain = SfmLoss(LossConfig(upsample_scales=upsample))
    normed = SfmLoss(LossConfig(upsample_scales=upsample, depth_normalization=True))
    torch.manual_seed(0)  # the auto-mask's tie-breaking noise
    a = normed(batch, inv_depths, pose_vecs, K)
    torch.manual_seed(0)
    b = normed(batch, scaled, pose_vecs, K)
    torch.testing.assert_close(a["total"], b["total"])  # any global depth scale gives the same loss
    b["total"].backward()
    # no gradient along the scale direction: <grad, inv> = 0 for every image (Euler, scale invariance)
    radial = sum((d.grad * d.detach()).sum(dim=(1, 2, 3)) for d in scaled)
    assert radial.abs().max().item() < 1e-5 * sum(d.grad.abs().sum().item() for d in scaled)
    torch.manual_seed(0)
    c = plain(batch, scaled, pose_vecs, K)
    assert abs(c["total"].item() - a["total"].item()) > 1e-4  # without it the scale matters
    # scale_free=True, velocity_active=False is what the trainer passes during the velocity warm-up:
    # same maths, velocity skipped
    vel = SfmLoss(LossConfig(upsample_scales=upsample, velocity_weight=0.1))
    torch.manual_seed(0)
    d = vel(batch, inv_depths, pose_vecs, K, scale_free=True, velocity_active=False)
    torch.testing.assert_close(d["total"], a["total"])
    assert d["velocity"].item() == 0.0
    assert vel(batch, inv_depths, pose_vecs, K)["velocity"].item() > 0


def test_depth_scale_terms_of_normalised_training():
    """With depth_normalization the anchor or the velocity sets only the raw depth scale (losses/scale.py)."""
    import math

    from semdepth_core.config import LossConfig
    from semdepth_core.losses.scale import depth_scale_loss
    from semdepth_core.losses.velocity import velocity_mean_inv_depth
    from semdepth_core.losses.sfm import SfmLoss

    batch, inv_depths, pose_vecs, K = _random_sfm_inputs()
    # the anchor: zero exactly at the anchor scale, |log ratio| elsewhere
    at_anchor = [(d.detach() * (0.1 / d.detach().mean(dim=(1, 2, 3), keepdim=True))) for d in inv_depths]
    assert depth_scale_loss(at_anchor[0], 0.1).item() < 1e-6
    assert abs(depth_scale_loss(2.0 * at_anchor[0], 0.1).item() - math.log(2.0)) < 1e-6
    anchored = SfmLoss(LossConfig(depth_normalization=True, scale_anchor_weight=0.01, scale_anchor_depth=10.0))
    free = SfmLoss(LossConfig(depth_normalization=True))
    torch.manual_seed(0)
    a = anchored(batch, at_anchor, pose_vecs, K)
    torch.manual_seed(0)
    b = anchored(batch, [3.0 * d for d in at_anchor], pose_vecs, K)
    torch.manual_seed(0)
    f = free(batch, at_anchor, pose_vecs, K)
    torch.testing.assert_close(a["photometric"], b["photometric"])  # warping is unchanged by the scale
    torch.testing.assert_close(a["total"], f["total"], atol=1e-6, rtol=0)  # nothing to pay at the anchor
    assert abs(b["scale_anchor"].item() - math.log(3.0)) < 1e-5
    torch.testing.assert_close(b["total"], b["photometric"] + 1e-3 * b["smoothness"] + 0.01 * b["scale_anchor"])

    # the velocity: metric mean inverse depth = ||t_n|| / (|v| dt), here 8 m/s x 0.1 s = 0.8 m
    t = pose_vecs.detach()[..., :3]
    expected_target = (t.norm(dim=-1) / 0.8).log().mean(dim=1).exp().clamp(0.02, 5.0)  # [B]
    torch.testing.assert_close(velocity_mean_inv_depth(t, batch["speed"], batch["dt"], 0.02, 5.0), expected_target)
    vel = SfmLoss(LossConfig(depth_normalization=True, velocity_weight=0.1, scale_anchor_weight=0.01))
    torch.manual_seed(0)
    v = vel(batch, inv_depths, pose_vecs, K)
    expected = torch.stack([(d.mean(dim=(1, 2, 3)).log() - expected_target.log()).abs().mean()
                            for d in inv_depths]).mean()
    torch.testing.assert_close(v["velocity"], expected)
    assert v["scale_anchor"].item() == 0.0  # the velocity replaces the anchor
    torch.testing.assert_close(v["total"], v["photometric"] + 1e-3 * v["smoothness"] + 0.1 * v["velocity"])
    v["total"].backward()
    assert pose_vecs.grad is not None  # the photometric term still trains the pose
    # during the warm-up (velocity_active=False) and for samples that did not move: the anchor instead
    torch.manual_seed(0)
    w = vel(batch, inv_depths, pose_vecs, K, velocity_active=False)
    assert w["velocity"].item() == 0.0 and w["scale_anchor"].item() > 0
    still = {**batch, "speed": torch.zeros(2)}
    torch.manual_seed(0)
    z = vel(still, inv_depths, pose_vecs, K)
    assert z["velocity"].item() == 0.0 and z["scale_anchor"].item() > 0
    mixed = {**batch, "speed": torch.tensor([8.0, 0.0])}  # one sample moved, one stood still: each gets its term
    torch.manual_seed(0)
    m = vel(mixed, inv_depths, pose_vecs, K)
    expected_vel = torch.stack([(d[:1].mean().log() - expected_target[0].log()).abs() for d in inv_depths]).mean()
    expected_anchor = torch.stack([(d[1:].mean().log() - math.log(0.1)).abs() for d in inv_depths]).mean()
    torch.testing.assert_close(m["velocity"], expected_vel)
    torch.testing.assert_close(m["scale_anchor"], expected_anchor)
    torch.testing.assert_close(m["total"], m["photometric"] + 1e-3 * m["smoothness"] + 0.1 * m["velocity"]
                               + 0.01 * m["scale_anchor"])
    with pytest.raises(ValueError, match="translation"):
        velocity_mean_inv_depth(t[..., :2], batch["speed"], batch["dt"], 0.02, 5.0)


def test_sfm_loss_is_lower_for_the_true_depth_and_pose():
    """A scene rendered with a known plane depth and pure forward motion: true geometry beats a wrong one."""
    from semdepth_core.config import LossConfig
    from semdepth_core.geometry.warp import view_synthesis
    from semdepth_core.losses.sfm import SfmLoss

    B, H, W = 1, 32, 64
    K = torch.tensor([[[40.0, 0.0, W / 2 - 0.5], [0.0, 40.0, H / 2 - 0.5], [0.0, 0.0, 1.0]]])
    g = torch.Generator().manual_seed(11)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, H // 4, W // 4, generator=g), size=(H, W),
                                              mode="bilinear", align_corners=False)
    depth = torch.full((B, 1, H, W), 10.0)  # fronto-parallel wall
    pose_true = torch.tensor([[[0.0, 0.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]])
    from semdepth_core.geometry.se3 import invert_se3, pose_vec_to_mat

    # context images: the target texture seen from the context cameras (inverse warp of the texture)
    ctx = []
    for j in range(2):
        T_tgt_ctx = invert_se3(pose_vec_to_mat(pose_true[:, j]))
        depth_ctx = depth + pose_true[0, j, 2]  # wall distance from the context camera (X_ctx = X_tgt + t)
        ctx.append(view_synthesis(texture, depth_ctx, T_tgt_ctx, K, padding_mode="border")[0])
    batch = {"rgb": texture, "rgb_context": torch.stack(ctx, 1)}
    cfg = LossConfig(num_scales=1, automask=False)
    loss = SfmLoss(cfg)
    true = loss(batch, [1.0 / depth], pose_true, K)["photometric"]
    wrong = loss(batch, [1.0 / depth], torch.zeros_like(pose_true), K)["photometric"]
    assert true.item() < 0.2 * wrong.item(), (true.item(), wrong.item())


def test_per_scale_images_are_an_antialiased_pyramid():
    """The coarse scales compare area-averaged images (Monodepth's resize_area), not aliased bilinear taps."""
    import torch.nn.functional as F

    from semdepth_core.losses.sfm import _resize

    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, 96, 320, generator=g)
    for f in (2, 4, 8):
        torch.testing.assert_close(_resize(img, (96 // f, 320 // f)), F.avg_pool2d(img, f))
    # a one-pixel checkerboard carries no content at 1/8 resolution: flat grey, not a pattern of taps
    checker = ((torch.arange(96)[:, None] + torch.arange(320)[None, :]) % 2).float().expand(1, 3, 96, 320)
    torch.testing.assert_close(_resize(checker, (12, 40)), torch.full((1, 3, 12, 40), 0.5))
    # enlarging stays bilinear (the upsampled-loss path resizes inverse depth up)
    small = torch.rand(1, 1, 12, 40, generator=g)
    torch.testing.assert_close(_resize(small, (96, 320)),
                               F.interpolate(small, size=(96, 320), mode="bilinear", align_corners=False))
