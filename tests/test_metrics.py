"""KITTI Eigen metrics: hand-computed values, scaling, crop, caps, per-class, infinite depth, accumulator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semdepth_core.data import labels as L
from semdepth_core.eval.metrics import (
    METRIC_KEYS,
    MetricAccumulator,
    compute_depth_metrics,
    format_metrics_table,
    garg_crop_mask,
    upsample_depth,
)

CAR, ROAD, PERSON = L.ID["car"], L.ID["road"], L.ID["person"]


def _hand_case():
    gt = np.array([[2.0, 4.0], [5.0, 10.0]])
    pred = np.array([[1.0, 4.0], [9.0, 8.0]])
    return gt, pred


def test_each_metric_hand_computed():
    gt, pred = _hand_case()
    m = compute_depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
    # per pixel: |e|/gt = .5, 0, .8, .2 ; e^2 = 1, 0, 16, 4 ; max ratio = 2, 1, 1.8, 1.25
    assert m["abs_rel"] == pytest.approx((0.5 + 0 + 0.8 + 0.2) / 4)
    assert m["sq_rel"] == pytest.approx((1 / 2 + 0 + 16 / 5 + 4 / 10) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 16 + 4) / 4))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.8) ** 2 + math.log(1.25) ** 2) / 4))
    assert m["a1"] == pytest.approx(0.25)  # ratio exactly 1.25 is not < 1.25
    assert m["a2"] == pytest.approx(0.5)
    assert m["a3"] == pytest.approx(0.75)
    assert m["scale"] == 1.0 and m["num_pixels"] == 4
    assert m["ratio"] == pytest.approx(np.median(gt) / np.median(pred))


def test_median_scaling():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 60, size=(20, 30))
    m = compute_depth_metrics(gt, gt / 3.0, garg_crop=False)
    assert m["ratio"] == pytest.approx(3.0) and m["scale"] == pytest.approx(3.0)
    assert m["abs_rel"] == pytest.approx(0, abs=1e-12) and m["a1"] == 1.0
    unscaled = compute_depth_metrics(gt, gt / 3.0, garg_crop=False, median_scaling=False)
    assert unscaled["abs_rel"] == pytest.approx(2 / 3) and unscaled["scale"] == 1.0
    assert unscaled["ratio"] == pytest.approx(3.0)  # ratio is reported either way
    # hand case: ratio = median(2,4,5,10) / median(1,4,9,8) = 4.5 / 6
    gt2, pred2 = _hand_case()
    m2 = compute_depth_metrics(gt2, pred2, garg_crop=False)
    s = 4.5 / 6.0
    assert m2["scale"] == pytest.approx(s)
    assert m2["abs_rel"] == pytest.approx(np.mean(np.abs(gt2 - s * pred2) / gt2))
    # a fixed (e.g. camera-height) scale
    m3 = compute_depth_metrics(gt, gt / 3.0, garg_crop=False, median_scaling=False, scale=3.0)
    assert m3["abs_rel"] == pytest.approx(0, abs=1e-12) and m3["scale"] == 3.0
    with pytest.raises(ValueError, match="not both"):
        compute_depth_metrics(gt, gt, scale=2.0)


def test_garg_crop_excludes_pixels():
    H, W = 375, 1242
    mask = garg_crop_mask(H, W)
    r0, r1, c0, c1 = int(0.40810811 * H), int(0.99189189 * H), int(0.03594771 * W), int(0.96405229 * W)
    assert (r0, r1, c0, c1) == (153, 371, 44, 1197)
    assert mask.sum() == (r1 - r0) * (c1 - c0) and mask[r0, c0] and not mask[r0 - 1, c0] and not mask[r0, c1]
    gt = np.full((H, W), 10.0)
    pred = np.where(mask, 10.0, 70.0)  # perfect inside the crop, terrible outside
    m = compute_depth_metrics(gt, pred, median_scaling=False)
    assert m["abs_rel"] == 0.0 and m["num_pixels"] == mask.sum()
    m_nocrop = compute_depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
    assert m_nocrop["abs_rel"] == pytest.approx(6.0 * (~mask).mean())
    assert m_nocrop["num_pixels"] == H * W


def test_min_max_depth_cap_and_pred_clamp():
    gt = np.array([[0.0, 79.0, 80.0, 120.0, 10.0]])
    pred = np.array([[5.0, 200.0, 80.0, 5.0, 0.0]])
    m = compute_depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
    # gt 0 (invalid), 80 (not < max) and 120 are excluded; pred 200 -> 80, pred 0 -> 1e-3
    assert m["num_pixels"] == 2
    expected = ((80.0 - 79.0) / 79.0 + (10.0 - 1e-3) / 10.0) / 2
    assert m["abs_rel"] == pytest.approx(expected)
    m50 = compute_depth_metrics(gt, pred, median_scaling=False, garg_crop=False, max_depth=50.0)
    assert m50["num_pixels"] == 1  # only gt=10 remains
    assert m50["abs_rel"] == pytest.approx((10 - 1e-3) / 10)


def test_bad_input_raises():
    gt = np.ones((10, 12)) * 5
    with pytest.raises(ValueError, match="upsample_depth"):
        compute_depth_metrics(gt, np.ones((5, 6)))
    with pytest.raises(ValueError, match="no valid"):
        compute_depth_metrics(np.zeros((10, 12)), np.ones((10, 12)), garg_crop=False)
    with pytest.raises(ValueError, match="NaN"):
        compute_depth_metrics(gt, np.full((10, 12), np.nan), garg_crop=False)
    with pytest.raises(ValueError, match="2-D"):
        compute_depth_metrics(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="empty"):
        MetricAccumulator().summary()


def test_torch_inputs_and_leading_singleton_dims():
    gt, pred = _hand_case()
    m_np = compute_depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
    m_t = compute_depth_metrics(torch.tensor(gt)[None], torch.tensor(pred)[None, None], median_scaling=False,
                                garg_crop=False)
    for k in METRIC_KEYS:
        assert m_t[k] == pytest.approx(m_np[k])


def test_accumulator_averages_per_image_not_per_pixel():
    acc = MetricAccumulator(median_scaling=False, garg_crop=False)
    acc.add(np.array([[2.0]]), np.array([[1.0]]))  # 1 pixel, abs_rel 0.5
    acc.add(np.full((1, 3), 4.0), np.full((1, 3), 4.0))  # 3 pixels, abs_rel 0
    s = acc.summary()
    assert s["num_images"] == 2 == len(acc)
    assert s["abs_rel"] == pytest.approx(0.25)  # pixel-pooled would give 0.125
    assert s["rmse"] == pytest.approx(0.5)  # mean of per-image rmse (1, 0)
    assert "per_class" not in s and "infinite_depth_fraction" not in s


def test_ratio_spread():
    acc = MetricAccumulator(median_scaling=True, garg_crop=False)
    gt = np.full((4, 4), 12.0)
    for r in (2.0, 3.0, 5.0):
        acc.add(gt, gt / r)
    rs = acc.summary()["ratio_spread"]
    assert rs["median"] == pytest.approx(3.0) and rs["min"] == pytest.approx(2.0) and rs["max"] == pytest.approx(5.0)
    assert rs["std"] == pytest.approx(np.std([2.0, 3.0, 5.0]))


def test_per_class_metrics_and_class_average():
    # image A: road (2 px, exact) and car (1 px, abs_rel 1.0); image B: car (3 px, exact), sky ignored label
    gt_a = np.array([[10.0, 10.0, 5.0]])
    pred_a = np.array([[10.0, 10.0, 10.0]])
    sem_a = np.array([[ROAD, ROAD, CAR]], dtype=np.uint8)
    gt_b = np.array([[4.0, 4.0, 4.0, 7.0]])
    pred_b = np.array([[4.0, 4.0, 4.0, 14.0]])
    sem_b = np.array([[CAR, CAR, CAR, L.IGNORE]], dtype=np.uint8)
    acc = MetricAccumulator(median_scaling=False, garg_crop=False)
    acc.add(gt_a, pred_a, semantic=sem_a)
    acc.add(gt_b, pred_b, semantic=sem_b)
    s = acc.summary()
    pc = s["per_class"]
    assert set(pc) == {"road", "car"}
    assert pc["road"]["abs_rel"] == 0.0 and pc["road"]["num_pixels"] == 2
    # car pooled over its 4 pixels (1.0 + 0 + 0 + 0) / 4
    assert pc["car"]["abs_rel"] == pytest.approx(0.25) and pc["car"]["num_pixels"] == 4
    assert pc["car"]["rmse"] == pytest.approx(math.sqrt(25 / 4))
    assert pc["car"]["a1"] == pytest.approx(0.75)
    assert s["class_avg_abs_rel"] == pytest.approx((0.0 + 0.25) / 2)
    assert s["class_avg"]["rmse"] == pytest.approx((0.0 + 2.5) / 2)
    # the ignored pixel still counts for the image-level metrics
    assert s["abs_rel"] == pytest.approx((1.0 / 3 + 1.0 / 4) / 2)
    # car and road pixels come from semantics, so dynamic = car pixels: one of 4 is at 2x gt -> not > 2x
    assert s["dynamic_pixels"] == 4 and s["infinite_depth_pixels"] == 0
    with pytest.raises(ValueError, match="semantic shape"):
        acc.add(gt_a, pred_a, semantic=np.zeros((2, 2), np.uint8))


def test_infinite_depth_fraction_on_constructed_inputs():
    gt = np.array([[10.0, 10.0, 45.0, 10.0, 20.0, 20.0]])
    # raw predictions at half scale; median scaling (ratio 2) restores them
    pred_scaled = np.array([[25.0, 15.0, 85.0, 200.0, 20.0, 20.0]])
    sem = np.array([[CAR, CAR, PERSON, ROAD, CAR, ROAD]], dtype=np.uint8)
    acc = MetricAccumulator(median_scaling=False, garg_crop=False)
    m = acc.add(gt, pred_scaled, semantic=sem)
    # dynamic (car/person) pixels: 25 > 2*10 (inf), 15 (no), 85 >= 80 (inf; also clamped for metrics), 20 (no)
    assert m["dynamic_pixels"] == 4 and m["infinite_depth_pixels"] == 2
    s = acc.summary()
    assert s["infinite_depth_fraction"] == pytest.approx(0.5)
    # an explicit dynamic mask overrides semantics; road pixel at 200 m now counts
    acc2 = MetricAccumulator(median_scaling=False, garg_crop=False)
    dyn = np.array([[0, 0, 0, 1, 1, 0]], dtype=np.uint8)
    acc2.add(gt, pred_scaled, semantic=sem, dynamic=dyn)
    assert acc2.summary()["infinite_depth_fraction"] == pytest.approx(0.5)
    # the check uses the median-scaled prediction: raw = scaled / 2 would flag nothing
    gt3 = np.full((1, 5), 10.0)
    raw = np.array([[5.0, 5.0, 5.0, 5.0, 12.0]])  # ratio 2 -> last pixel becomes 24 > 20
    acc3 = MetricAccumulator(garg_crop=False)
    acc3.add(gt3, raw, dynamic=np.ones((1, 5), bool))
    s3 = acc3.summary()
    assert s3["infinite_depth_pixels"] == 1 and s3["infinite_depth_fraction"] == pytest.approx(0.2)
    assert s3["infinite_depth_images"] == 1 and s3["dynamic_images"] == 1


def test_upsample_depth_interpolates_inverse_depth():
    d = np.array([[1.0, 2.0]], dtype=np.float32)
    up = upsample_depth(d, (1, 4))
    # half-pixel sampling positions -0.25, 0.25, 0.75, 1.25 on inverse depth [1, 0.5]
    np.testing.assert_allclose(up, [[1.0, 1 / 0.875, 1 / 0.625, 2.0]], rtol=1e-6)
    up_t = upsample_depth(torch.tensor(d)[None, None], (1, 4))
    assert up_t.shape == (1, 1, 1, 4)
    np.testing.assert_allclose(up_t[0, 0].numpy(), up, rtol=1e-6)
    const = upsample_depth(np.full((6, 20), 7.0), (12, 40))
    np.testing.assert_allclose(const, 7.0)
    with pytest.raises(ValueError, match="positive"):
        upsample_depth(np.zeros((2, 2)), (4, 4))


def test_format_metrics_table():
    acc = MetricAccumulator(median_scaling=False, garg_crop=False)
    acc.add(np.array([[10.0, 10.0, 5.0]]), np.array([[10.0, 10.0, 10.0]]),
            semantic=np.array([[ROAD, ROAD, CAR]], dtype=np.uint8))
    s = acc.summary()
    txt = format_metrics_table(s)
    for k in METRIC_KEYS:
        assert k in txt
    assert f"{s['abs_rel']:.3f}" in txt and "car" in txt and "class average" in txt
    assert "infinite depth" in txt and "ratio" in txt
    with pytest.raises(ValueError, match="abs_rel"):
        format_metrics_table({})


def test_upsample_depth_2d_torch_matches_numpy():
    rng = np.random.default_rng(7)
    d = rng.uniform(1, 50, size=(6, 20)).astype(np.float32)
    up_t = upsample_depth(torch.tensor(d), (24, 62))
    assert up_t.shape == (24, 62)
    np.testing.assert_allclose(up_t.numpy(), upsample_depth(d, (24, 62)), rtol=1e-4)


def test_real_kitti_lidar_gt_protocol(kitti_root, kitti_drive_dir):
    """Real 1242x375 Velodyne GT: crop/valid pixel count and exact recovery of a scaled prediction."""
    from semdepth_core.data.kitti import KittiCalib, load_velodyne, velodyne_depth

    calib = KittiCalib.from_date_dir(kitti_root / "2011_09_26")
    gt = velodyne_depth(load_velodyne(kitti_drive_dir / "velodyne_points" / "data" / "0000000000.bin"), calib)
    H, W = gt.shape
    expected_px = int(((gt > 1e-3) & (gt < 80.0) & garg_crop_mask(H, W)).sum())
    assert 5000 < expected_px < int((gt > 0).sum())  # the crop drops some LiDAR pixels
    # dense "prediction": GT / 3 where valid and a constant 5 m elsewhere
    pred = np.where(gt > 0, gt / 3.0, 5.0).astype(np.float32)
    m = compute_depth_metrics(gt, pred)
    assert m["num_pixels"] == expected_px
    assert m["ratio"] == pytest.approx(3.0, rel=1e-5) and m["abs_rel"] < 1e-6 and m["a1"] == 1.0
    acc = MetricAccumulator()
    acc.add(gt, pred, dynamic=np.ones_like(gt, dtype=bool))
    s = acc.summary()
    assert s["infinite_depth_fraction"] == 0.0 and s["dynamic_pixels"] == expected_px
    half = upsample_depth(pred[::2, ::2].copy(), (H, W))
    m_half = compute_depth_metrics(gt, half)
    assert 0 < m_half["abs_rel"] < 0.5 and m_half["num_pixels"] == expected_px
