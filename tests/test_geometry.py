"""Geometry: intrinsics half-pixel rule, (back-)projection, SE(3), view synthesis."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from semdepth_core.geometry import (
    Camera,
    axis_angle_to_matrix,
    backproject,
    compose,
    euler_to_matrix,
    euler_to_matrix_np,
    invert_se3,
    invert_se3_np,
    mat_to_pose_vec,
    matrix_to_axis_angle,
    pixel_grid,
    pose_vec_to_mat,
    project,
    resize_intrinsics,
    view_synthesis,
)

K0 = np.array([[300.0, 0.0, 311.3], [0.0, 290.0, 95.7], [0.0, 0.0, 1.0]])


def _render_blob(K, W, H, X, sigma):
    """Float image of a Gaussian blob centred on the projection of 3D point X."""
    u, v = (K @ X)[:2] / X[2]
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2)).astype(np.float32), (u, v)


def _centroid(img):
    vv, uu = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    s = img.sum()
    return (uu * img).sum() / s, (vv * img).sum() / s


@pytest.mark.parametrize("dst", [(320, 96), (160, 48), (1280, 384)])
def test_resize_intrinsics_matches_cv2_resize(dst):
    W0, H0 = 640, 192
    X = np.array([0.7, 0.2, 5.0])
    img, _ = _render_blob(K0, W0, H0, X, sigma=8.0)
    small = cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR if dst[0] > W0 else cv2.INTER_AREA)
    cu, cv = _centroid(small)
    K1 = resize_intrinsics(K0, (W0, H0), dst)
    pu, pv = (K1 @ X)[:2] / X[2]
    assert abs(cu - pu) < 0.02 and abs(cv - pv) < 0.02
    # the naive rule (cx*s) is measurably wrong, so the test discriminates
    s = dst[0] / W0
    naive_u = (K0[0, 0] * s * X[0] / X[2]) + K0[0, 2] * s
    assert abs(naive_u - cu) > 0.1


def test_resize_intrinsics_torch_and_validation():
    Kt = torch.tensor(K0, dtype=torch.float32)[None].repeat(2, 1, 1)
    K1 = resize_intrinsics(Kt, (640, 192), (320, 96))
    assert isinstance(K1, torch.Tensor) and K1.shape == (2, 3, 3)
    np.testing.assert_allclose(K1[0].numpy(), resize_intrinsics(K0, (640, 192), (320, 96)), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        resize_intrinsics(K0, (640, 192), (0, 96))


def test_camera_scaled_and_cropped():
    cam = Camera(K0, 640, 192)
    s = cam.scaled(320, 96)
    assert (s.width, s.height) == (320, 96)
    assert s.fx == pytest.approx(150.0) and s.cx == pytest.approx((311.3 + 0.5) / 2 - 0.5)
    c = cam.cropped(10, 20, 600, 150)
    assert c.cx == pytest.approx(301.3) and c.cy == pytest.approx(75.7) and c.fx == cam.fx
    # a point projects to the same image content before and after the crop
    X = np.array([1.0, 0.5, 8.0])
    p0 = (cam.K @ X)[:2] / X[2]
    p1 = (c.K @ X)[:2] / X[2]
    np.testing.assert_allclose(p0 - p1, [10, 20])
    with pytest.raises(ValueError, match="outside"):
        cam.cropped(100, 0, 600, 192)
    with pytest.raises(ValueError, match="3x3"):
        Camera(np.eye(4), 10, 10)


def test_pixel_grid_layout():
    g = pixel_grid(2, 3)
    assert g.shape == (3, 6)
    np.testing.assert_array_equal(g[0].numpy(), [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(g[1].numpy(), [0, 0, 0, 1, 1, 1])
    assert torch.all(g[2] == 1)
    with pytest.raises(ValueError):
        pixel_grid(0, 3)


def test_backproject_project_round_trip():
    torch.manual_seed(0)
    B, H, W = 2, 12, 17
    K = torch.tensor(K0, dtype=torch.float64)[None].repeat(B, 1, 1)
    K[1, 0, 0] = 200.0
    depth = torch.rand(B, 1, H, W, dtype=torch.float64) * 50 + 1
    pts = backproject(depth, torch.linalg.inv(K))
    assert pts.shape == (B, 3, H, W)
    torch.testing.assert_close(pts[:, 2:3], depth)
    uv, z = project(pts, K)
    grid = pixel_grid(H, W, dtype=torch.float64)[:2].reshape(2, H, W)
    torch.testing.assert_close(uv, grid.expand(B, -1, -1, -1))
    torch.testing.assert_close(z, depth)


def test_project_guards_zero_depth_and_bad_shapes():
    pts = torch.zeros(1, 3, 2, 2)
    pts[:, 0] = 1.0
    uv, z = project(pts, torch.tensor(K0, dtype=torch.float32)[None])
    assert torch.isfinite(uv).all() and torch.all(z == 0)
    with pytest.raises(ValueError, match="depth"):
        backproject(torch.ones(1, 2, 3, 3), torch.eye(3)[None])
    with pytest.raises(ValueError, match="K"):
        project(torch.ones(1, 3, 3, 3), torch.eye(4)[None])


# ----------------------------------------------------------------------------- SE(3)


def _explicit_rxyz(r, p, y):
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def test_euler_convention_matches_explicit_product():
    rng = np.random.default_rng(1)
    for r, p, y in rng.uniform(-np.pi, np.pi, size=(20, 3)):
        expected = _explicit_rxyz(r, p, y)
        np.testing.assert_allclose(euler_to_matrix_np(r, p, y), expected, atol=1e-12)
        got = euler_to_matrix(torch.tensor(r), torch.tensor(p), torch.tensor(y))
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    # pure yaw turns the x axis (forward in OXTS) towards y (left)
    np.testing.assert_allclose(euler_to_matrix_np(0, 0, np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    assert euler_to_matrix_np(np.zeros(4), np.zeros(4), np.ones(4)).shape == (4, 3, 3)


def test_axis_angle_matches_scipy_and_round_trips():
    rng = np.random.default_rng(2)
    aa = rng.normal(size=(200, 3))
    aa *= (rng.uniform(0, np.pi - 1e-6, size=(200, 1)) / np.linalg.norm(aa, axis=1, keepdims=True))
    R = axis_angle_to_matrix(torch.tensor(aa))
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(200, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(200, dtype=torch.float64))
    np.testing.assert_allclose(matrix_to_axis_angle(R).numpy(), aa, atol=1e-7)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-5, 1e-3])
def test_axis_angle_tiny_angles(angle):
    axis = np.array([0.3, -0.5, 0.8])
    aa = torch.tensor(axis / np.linalg.norm(axis) * angle, requires_grad=True)
    R = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R.detach().numpy(), Rotation.from_rotvec(aa.detach().numpy()).as_matrix(),
                               atol=1e-15)
    np.testing.assert_allclose(matrix_to_axis_angle(R.detach()).numpy(), aa.detach().numpy(),
                               atol=1e-12, rtol=1e-6)
    # d R / d aa at small angles is the skew generator: finite and non-zero
    (R[1, 0]).backward()
    assert torch.isfinite(aa.grad).all()
    assert aa.grad[2].item() == pytest.approx(1.0, abs=1e-3)


def test_axis_angle_near_pi():
    for axis in ([1.0, 0, 0], [0, 1.0, 0], [0.6, 0.0, 0.8], [1, 1, 1]):
        n = np.array(axis) / np.linalg.norm(axis)
        for ang in (np.pi, np.pi - 1e-7, np.pi - 1e-3):
            R = torch.tensor(Rotation.from_rotvec(n * ang).as_matrix())
            back = axis_angle_to_matrix(matrix_to_axis_angle(R))
            torch.testing.assert_close(back, R, atol=1e-6, rtol=0)


def test_se3_inverse_compose_and_pose_vec():
    torch.manual_seed(3)
    vec = torch.randn(5, 6, dtype=torch.float64)
    T = pose_vec_to_mat(vec)
    assert T.shape == (5, 4, 4)
    torch.testing.assert_close(T[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(5, 4))
    torch.testing.assert_close(T[:, :3, 3], vec[:, :3])
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    torch.testing.assert_close(compose(invert_se3(T), T), eye)
    torch.testing.assert_close(compose(T, invert_se3(T)), eye)
    torch.testing.assert_close(invert_se3(T), torch.linalg.inv(T))
    np.testing.assert_allclose(invert_se3_np(T.numpy()), torch.linalg.inv(T).numpy(), atol=1e-12)
    T2 = pose_vec_to_mat(torch.randn(5, 6, dtype=torch.float64))
    # T_a_c = T_a_b T_b_c maps points the same way as applying the two transforms in turn
    X = torch.randn(5, 4, 1, dtype=torch.float64)
    X[:, 3] = 1
    torch.testing.assert_close(compose(T, T2) @ X, T @ (T2 @ X))
    torch.testing.assert_close(compose(invert_se3(T2), invert_se3(T)), invert_se3(compose(T, T2)))
    small = vec.clone()
    small[:, 3:] = small[:, 3:] / small[:, 3:].norm(dim=-1, keepdim=True) * 2.0
    torch.testing.assert_close(mat_to_pose_vec(pose_vec_to_mat(small)), small)
    with pytest.raises(ValueError, match="6"):
        pose_vec_to_mat(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="4"):
        invert_se3_np(np.eye(3))


# ----------------------------------------------------------------------------- view synthesis


def _K(B, fx=100.0, H=24, W=32):
    K = torch.tensor([[fx, 0, (W - 1) / 2], [0, fx, (H - 1) / 2], [0, 0, 1.0]])
    return K[None].repeat(B, 1, 1)


def test_view_synthesis_identity_reproduces_image():
    torch.manual_seed(4)
    B, C, H, W = 2, 3, 24, 32
    src = torch.rand(B, C, H, W)
    depth = torch.rand(B, 1, H, W) * 20 + 1
    warped, valid = view_synthesis(src, depth, torch.eye(4).expand(B, 4, 4), _K(B))
    torch.testing.assert_close(warped, src, atol=1e-4, rtol=0)
    assert valid.dtype == src.dtype and torch.all(valid == 1)


@pytest.mark.parametrize("shift", [3.0, -2.0, 1.37])
def test_view_synthesis_x_translation_shifts_by_fx_t_over_z(shift):
    B, H, W, fx, Z = 1, 24, 32, 100.0, 10.0
    tx = shift * Z / fx  # source camera sees target point at u + fx*tx/Z
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = tx
    depth = torch.full((B, 1, H, W), Z)
    # bilinear sampling of a linear ramp is exact, so the warped ramp must equal the shifted ramp
    uu = torch.arange(W, dtype=torch.float32).expand(H, W)
    src = torch.stack([uu, torch.rand(H, W)])[None]  # channel 1 random texture for the integer check
    warped, valid = view_synthesis(src, depth, T, _K(B, fx, H, W))
    exp_valid = ((uu + shift) >= 0) & ((uu + shift) <= W - 1)
    assert torch.equal(valid[0, 0].bool(), exp_valid)
    torch.testing.assert_close(warped[0, 0][exp_valid], (uu + shift)[exp_valid], atol=1e-3, rtol=0)
    if float(shift).is_integer():
        s = int(shift)
        got = warped[0, 1][:, max(0, -s) : W - max(0, s)]
        ref = src[0, 1][:, max(0, s) : W + min(0, s)]
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_view_synthesis_points_behind_camera_invalid():
    B, H, W = 1, 8, 8
    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = -20.0  # source camera 20 m in front of every target point
    warped, valid = view_synthesis(torch.rand(B, 3, H, W), torch.full((B, 1, H, W), 5.0), T, _K(B, 10.0, H, W))
    assert torch.all(valid == 0)


def test_view_synthesis_gradients_flow_to_depth_pose_and_src():
    torch.manual_seed(5)
    B, H, W = 2, 16, 20
    yy, xx = torch.meshgrid(torch.linspace(0, 3, H), torch.linspace(0, 4, W), indexing="ij")
    src = torch.stack([torch.sin(xx * 2 + yy), torch.cos(xx - yy * 2), xx * yy / 12])[None].repeat(B, 1, 1, 1)
    src.requires_grad_(True)
    depth = (torch.rand(B, 1, H, W) * 5 + 5).requires_grad_(True)
    vec = torch.tensor([[0.05, 0.01, 0.1, 0.01, -0.02, 0.005]] * B, requires_grad=True)
    warped, valid = view_synthesis(src, depth, pose_vec_to_mat(vec), _K(B, 30.0, H, W), padding_mode="border")
    (warped * valid).mean().backward()
    for name, t in (("src", src), ("depth", depth), ("pose", vec)):
        assert torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    # finite-difference check of the pose gradient along tx
    with torch.no_grad():
        eps = 1e-3
        v2 = vec.detach().clone()
        v2[:, 0] += eps
        w2, no_valid = view_synthesis(src.detach(), depth.detach(), pose_vec_to_mat(v2), _K(B, 30.0, H, W),
                                      padding_mode="border", with_valid=False)  # as the losses call it
        assert no_valid is None
        w2_ref, _ = view_synthesis(src.detach(), depth.detach(), pose_vec_to_mat(v2), _K(B, 30.0, H, W),
                                   padding_mode="border")
        assert torch.equal(w2, w2_ref)
        v1 = vec.detach().clone()
        v1[:, 0] -= eps
        w1, _ = view_synthesis(src.detach(), depth.detach(), pose_vec_to_mat(v1), _K(B, 30.0, H, W),
                               padding_mode="border")
        fd = ((w2 * valid).mean() - (w1 * valid).mean()) / (2 * eps)
    assert vec.grad[:, 0].sum().item() == pytest.approx(fd.item(), rel=0.05, abs=1e-5)


def test_view_synthesis_rejects_bad_input():
    src, depth, T, K = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), torch.eye(4)[None], _K(1, 10.0, 8, 8)
    with pytest.raises(ValueError, match="depth_tgt"):
        view_synthesis(src, torch.ones(1, 2, 8, 8), T, K)
    with pytest.raises(ValueError, match="T_src_tgt"):
        view_synthesis(src, depth, torch.eye(3)[None], K)
    with pytest.raises(ValueError, match="padding_mode"):
        view_synthesis(src, depth, T, K, padding_mode="wrap")
    with pytest.raises(ValueError, match="batch"):
        view_synthesis(torch.rand(2, 3, 8, 8), depth, T, K)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_floats = st.floats(-3.0, 3.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.tuples(_floats, _floats, _floats, _floats, _floats, _floats))
def test_pose_vec_round_trip_property(v):
    vec = torch.tensor([v], dtype=torch.float64)
    T = pose_vec_to_mat(vec)
    torch.testing.assert_close(invert_se3(invert_se3(T)), T)
    R = T[0, :3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64))
    # angle in [0, pi] after the round trip, and the same rotation
    aa = matrix_to_axis_angle(R)
    assert aa.norm().item() <= math.pi + 1e-9
    torch.testing.assert_close(axis_angle_to_matrix(aa), R, atol=1e-7, rtol=0)
