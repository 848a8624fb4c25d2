"""Ground plane (two-stage training, §4.3): RANSAC fit, below-ground count, camera-height scale."""
from __future__ import annotations

import numpy as np
import pytest

from semdepth_core.geometry.ground_plane import (
    backproject_np,
    below_ground_count,
    camera_height_scale,
    fit_plane_ransac,
)

from conftest import CAM_HEIGHT, road_depth as _road_depth, ROAD_H as H, ROAD_K as K, ROAD_W as W


def _plane_points(n, d, count, rng, extent=10.0, noise=0.0):
    """Points on n·X + d = 0 (n unit) plus Gaussian noise along n."""
    n = np.asarray(n, float) / np.linalg.norm(n)
    a = np.cross(n, [1.0, 0, 0] if abs(n[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    st = rng.uniform(-extent, extent, size=(count, 2))
    return -d * n + st[:, :1] * a + st[:, 1:] * b + rng.normal(0, noise, size=(count, 1)) * n


def test_ransac_recovers_exact_plane_with_30pct_outliers():
    rng = np.random.default_rng(0)
    n_true = np.array([0.1, -0.95, 0.2])
    n_true /= np.linalg.norm(n_true)
    d_true = 1.7
    inl = _plane_points(n_true, d_true, 700, rng)
    out = rng.uniform(-10, 10, size=(300, 3))
    pts = np.concatenate([inl, out])
    perm = rng.permutation(len(pts))
    n, d, mask = fit_plane_ransac(pts[perm], rng=1)
    assert np.linalg.norm(n) == pytest.approx(1.0)
    np.testing.assert_allclose(n, n_true, atol=1e-9)
    assert d == pytest.approx(d_true, abs=1e-9)
    is_inlier = (np.arange(1000) < 700)[perm]
    assert mask[is_inlier].all()
    # uniform outliers only rarely fall within 5 cm of the plane
    assert mask[~is_inlier].mean() < 0.05


def test_ransac_noisy_plane_and_sign_convention():
    rng = np.random.default_rng(2)
    # same plane written with the opposite sign: output must still have the origin on the positive side
    n_raw, d_raw = np.array([0.0, 1.0, 0.0]), -1.65  # y = 1.65 (ground below a y-down camera)
    pts = np.concatenate([_plane_points(n_raw, d_raw, 2000, rng, noise=0.01),
                          rng.uniform(-5, 5, size=(800, 3)) + [0, -2, 10]])
    n, d, mask = fit_plane_ransac(pts, threshold=0.04, rng=3)
    assert d > 0
    assert d == pytest.approx(1.65, abs=0.01)
    np.testing.assert_allclose(n, [0, -1, 0], atol=0.01)
    assert pts[mask] @ n + d == pytest.approx(0, abs=0.04)
    assert np.zeros(3) @ n + d > 0  # camera side is positive


def test_ransac_axis_constraint_rejects_dominant_wall():
    rng = np.random.default_rng(4)
    wall = _plane_points([1.0, 0, 0], -3.0, 3000, rng)  # x = 3: a vertical wall, the largest plane
    ground = _plane_points([0, -1.0, 0], 1.5, 1000, rng)
    pts = np.concatenate([wall, ground])
    n_free, _, _ = fit_plane_ransac(pts, rng=5)
    assert abs(n_free[0]) > 0.99  # unconstrained RANSAC takes the wall
    n, d, _ = fit_plane_ransac(pts, rng=5, axis=(0, 1, 0), max_angle_deg=30)
    np.testing.assert_allclose(n, [0, -1, 0], atol=1e-9)
    assert d == pytest.approx(1.5)


def test_ransac_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N,3\]"):
        fit_plane_ransac(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="at least 3"):
        fit_plane_ransac(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fit_plane_ransac(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="threshold"):
        fit_plane_ransac(np.random.default_rng(0).normal(size=(10, 3)), threshold=0)


def test_backproject_np_puts_road_on_the_plane():
    depth = _road_depth()
    pts = backproject_np(depth, K)
    rows = np.arange(H) > K[1, 2] + 2
    road = pts[rows]
    road = road[road[..., 2] < 59]
    np.testing.assert_allclose(road[..., 1], CAM_HEIGHT, rtol=1e-9)


def test_below_ground_count_equals_hole_pixels_below_plane():
    depth = _road_depth()
    # an "infinite depth" hole (e.g. a car moving with the camera) rendered at 300 m;
    # it spans the horizon, so only its rows far enough below the horizon go under the road
    r0, r1, c0, c1 = 30, 90, 50, 95
    far = 300.0
    depth[r0:r1, c0:c1] = far
    # a car-like obstacle in front (above ground, must not count) and some invalid pixels
    depth[60:75, 10:30] = 8.0
    depth[80:85, 120:140] = 0.0
    margin = 0.5
    res = below_ground_count(depth, K, margin=margin)
    assert res.ok
    np.testing.assert_allclose(res.normal, [0, -1, 0], atol=1e-6)
    assert res.d == pytest.approx(CAM_HEIGHT, abs=1e-6)
    # expected: hole pixels whose back-projected y exceeds height + margin
    y = far * (np.arange(r0, r1) - K[1, 2]) / K[1, 1]
    expected = int((y > CAM_HEIGHT + margin).sum()) * (c1 - c0)
    assert 0 < expected < (r1 - r0) * (c1 - c0)
    assert res.count == expected
    assert res.below_mask[r0:r1, c0:c1].sum() == expected
    assert res.below_mask.sum() == expected
    assert 0.5 < res.inlier_fraction <= 1.0


def test_margin_slope_tolerates_a_tilted_fit_at_range_but_not_a_hole():
    # the far road (rows just below the horizon, depth > 20 m: outside the fit region) predicted on a
    # plane tilted by 1.5 degrees: at depth z it sinks z * tan(1.5 deg) below the fitted near road
    depth = _road_depth()
    v = np.arange(H, dtype=np.float64) - K[1, 2]
    tilt = np.tan(np.deg2rad(1.5))
    far_rows = (v > 0) & (depth[:, 0] > 20.0) & (depth[:, 0] < 59.0)
    # ray-plane intersection with the plane y = CAM_HEIGHT + tilt * z: z = CAM_HEIGHT / (v/f - tilt)
    depth[far_rows] = (CAM_HEIGHT / (v[far_rows] / K[1, 1] - tilt))[:, None]
    sunk = CAM_HEIGHT / (v[far_rows] / K[1, 1] - tilt) * tilt  # metres below the true road
    assert sunk.max() > 0.5  # the plain 0.5 m margin counts some of them
    strict = below_ground_count(depth, K, margin=0.5)
    assert strict.count == int((sunk > 0.5 + 1e-9).sum()) * W > 0
    tolerant = below_ground_count(depth, K, margin=0.5, margin_slope=0.05)  # tan(2.9 deg) > tan(1.5 deg)
    assert tolerant.count == 0
    depth[40:70, 60:90] = 100.0  # an infinite-depth hole still counts
    hole = below_ground_count(depth, K, margin=0.5, margin_slope=0.05)
    y_hole = 100.0 * (np.arange(40, 70) - K[1, 2]) / K[1, 1]  # height below the camera of its points
    assert hole.count == int((y_hole > CAM_HEIGHT + 0.5 + 0.05 * 100.0).sum()) * 30 > 0
    with pytest.raises(ValueError, match="margin_slope"):
        below_ground_count(depth, K, margin_slope=-0.1)


def test_below_ground_count_clean_road_is_zero_and_scale_invariant_margin():
    res = below_ground_count(_road_depth(), K, margin=0.2)
    assert res.ok and res.count == 0
    # too few ground pixels (everything far): no fit, nothing counted
    res2 = below_ground_count(np.full((H, W), 100.0), K)
    assert not res2.ok and res2.count == 0 and np.isnan(res2.d)
    with pytest.raises(ValueError, match="fit_mask"):
        below_ground_count(_road_depth(), K, fit_mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        below_ground_count(np.ones((1, H, W)), K)


@pytest.mark.parametrize("s", [0.05, 1.0, 3.7])
def test_camera_height_scale_recovers_known_scale(s):
    # prediction in model units = metric depth / s (plus a far hole and noise-free road)
    depth_units = _road_depth() / s
    depth_units[50:70, 60:80] = 500.0
    scale = camera_height_scale(depth_units, K, known_height=CAM_HEIGHT)
    assert scale == pytest.approx(s, rel=1e-6)
    with pytest.raises(ValueError, match="known_height"):
        camera_height_scale(depth_units, K, known_height=0)


def test_real_kitti_lidar_ground_plane(kitti_root, kitti_drive_dir):
    """Real Velodyne GT of KITTI frame 0: road ~1.65 m below the camera, nothing below ground."""
    from semdepth_core.data.kitti import KittiCalib, load_velodyne, velodyne_depth

    calib = KittiCalib.from_date_dir(kitti_root / "2011_09_26")
    depth = velodyne_depth(load_velodyne(kitti_drive_dir / "velodyne_points" / "data" / "0000000000.bin"), calib)
    Kr = calib.K(2)
    res = below_ground_count(depth, Kr, margin=0.5)
    assert res.ok and res.count == 0
    assert res.d == pytest.approx(1.65, abs=0.05)  # KITTI camera mounting height
    assert res.normal[1] < -0.99  # near-vertical, pointing up (towards the camera)
    # model-unit depth (metric / 2.5) is rescaled back to metric by the known mounting height
    assert camera_height_scale(depth / 2.5, Kr, known_height=res.d) == pytest.approx(2.5, rel=0.02)
    # simulated infinite-depth hole: valid LiDAR pixels of a lower-image block pushed to 200 m
    hole = np.zeros(depth.shape, bool)
    hole[250:, 500:700] = True
    hole &= depth > 0
    bad = depth.copy()
    bad[hole] = 200.0
    res_bad = below_ground_count(bad, Kr, margin=0.5)
    assert res_bad.count == hole.sum() > 1000
    assert np.array_equal(res_bad.below_mask, hole)
