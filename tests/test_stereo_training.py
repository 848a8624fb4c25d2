"""Training on real data: SGBM depth hints, the stereo pair as a context (Monodepth2 "MS"), Depth Hints,
the mixed-source config and dataset builder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semdepth_core.config import ConfigError, load_config
from semdepth_core.data.dataset import KittiDataset, collate
from semdepth_core.data.kitti import KittiDrive
from semdepth_core.data.stereo_hints import StereoHints, sgbm_depth
from semdepth_core.losses.depth_hints import depth_hint_loss, hint_reprojection_loss
from semdepth_core.losses.sfm import SfmLoss
from semdepth_core.paths import REPO_ROOT


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ SGBM hints
def test_sgbm_hints_agree_with_the_lidar_on_both_cameras(kitti_drive_dir):
    drive = KittiDrive(kitti_drive_dir, cams=(2, 3))
    for cam in (2, 3):
        other = drive.stereo_partner(cam)
        T = drive.T_between(other, cam)
        args = (drive.load_image(0, cam), drive.load_image(0, other), drive.K(cam)[0, 0],
                float(np.linalg.norm(T[:3, 3])), T[0, 3] < 0)
        gt = drive.velodyne_depth(0, cam)
        m = (gt > 1e-3) & (gt < 80)
        errors = {}
        for name, kw in (("raw", dict(lr_check=False, min_texture=0.0)), ("filtered", {})):
            hint = sgbm_depth(*args, **kw)
            both = m & (hint > 0)
            assert both.sum() > 0.7 * m.sum(), (cam, name)  # the matcher covers most LiDAR pixels
            errors[name] = np.mean(np.abs(hint[both] - gt[both]) / gt[both])
            assert errors[name] < 0.08, (cam, name)  # metric, unscaled
        # the left-right check and the texture floor remove more wrong depths than right ones
        assert errors["filtered"] < errors["raw"], (cam, errors)


def test_hint_cache_is_reused_and_heals(kitti_drive_dir, tmp_path):
    drive = KittiDrive(kitti_drive_dir, cams=(2, 3))
    hints = StereoHints(cache_dir=tmp_path)
    first = hints.depth(drive, 1, 2)
    (cached,) = list(tmp_path.glob("*.png"))
    stamp = cached.stat().st_mtime_ns
    again = hints.depth(drive, 1, 2)
    assert cached.stat().st_mtime_ns == stamp  # read back, not recomputed
    np.testing.assert_allclose(again, first, atol=0.5 / 256 + 1e-6)  # the depth PNG's 1/256 m steps
    cached.write_bytes(b"garbage")  # a damaged cache file is recomputed, not an error
    np.testing.assert_allclose(hints.depth(drive, 1, 2), first, atol=0.5 / 256 + 1e-6)
    assert len(list(tmp_path.glob("*"))) == 1  # no temporary files left behind


# ------------------------------------------------------------------------------ losses
@pytest.fixture(scope="module")
def stereo_batch(synthetic_root):
    """Two samples of a synthetic drive (dense GT, calibrated stereo) at 160x48, with GT depth as the hint."""
    ds = KittiDataset(synthetic_root, height=48, width=160, stereo=True, with_gt=True, gt_source="dense")
    items = [ds.load(i) for i in (3, 6)]
    for it in items:  # the dense GT at the network size stands in for a perfect hint
        it["depth_hint"] = torch.nn.functional.interpolate(it["depth_gt"][None], size=(48, 160), mode="nearest")[0]
    return collate(items)


def _loss(batch, depth, hint_weight=0.0, **kw):
    cfg = load_config(None, [f"loss.depth_hint_weight={hint_weight}", "loss.automask=false", "data.stereo=true",
                             "data.depth_hints=true"]).loss
    inv = [1.0 / depth.clamp(min=0.1)] * 4
    pose = torch.zeros(depth.shape[0], 2, 6)  # temporal contexts: no motion known; the stereo pose is exact
    return SfmLoss(cfg)(batch, inv, pose, batch["K"], **kw)


def test_the_stereo_context_prefers_the_true_depth(stereo_batch):
    gt = torch.nn.functional.interpolate(stereo_batch["depth_gt"], size=(48, 160), mode="nearest")
    gt = torch.where(gt > 0, gt, torch.full_like(gt, 80.0))
    right = _loss(stereo_batch, gt)["photometric"]
    for factor in (0.5, 2.0):
        assert right < _loss(stereo_batch, gt * factor)["photometric"]
    no_stereo = {k: v for k, v in stereo_batch.items() if k not in ("rgb_stereo", "T_stereo")}
    # without the stereo image (zero motion poses) the wrong scale is not penalised the same way
    assert abs(float(_loss(no_stereo, gt)["photometric"]) - float(_loss(no_stereo, gt * 2)["photometric"])) < \
        abs(float(right) - float(_loss(stereo_batch, gt * 2)["photometric"]))
    with pytest.raises(ValueError, match="stereo context needs metric"):
        _loss(stereo_batch, gt, scale_free=True)


def test_depth_hints_pull_only_where_the_hint_reprojects_better(stereo_batch):
    gt = torch.nn.functional.interpolate(stereo_batch["depth_gt"], size=(48, 160), mode="nearest")
    gt = torch.where(gt > 0, gt, torch.full_like(gt, 80.0))
    exact = _loss(stereo_batch, gt, hint_weight=1.0)
    wrong = _loss(stereo_batch, gt * 2.0, hint_weight=1.0)
    assert float(exact["depth_hint"]) < 0.02 and float(wrong["depth_hint"]) > 0.3
    assert float(wrong["total"]) > float(wrong["photometric"]) + float(wrong["depth_hint"]) * 0.99
    # the rule itself: no hint (0) or a worse reprojection -> no pull
    pred, hint = torch.full((1, 1, 2, 2), 10.0), torch.tensor([[[[0.0, 20.0], [20.0, 20.0]]]])
    pred_loss = torch.tensor([[[[0.1, 0.1], [0.3, 0.1]]]])
    hint_loss = torch.tensor([[[[float("inf"), 0.2], [0.2, 0.2]]]])
    expect = np.log1p(10.0) / 4  # only the bottom-left pixel: its hint reprojects better
    assert float(depth_hint_loss(pred, hint, pred_loss, hint_loss)) == pytest.approx(expect, rel=1e-6)
    # loss.depth_hint_mode "always": every pixel with a hint pulls (distillation)
    assert float(depth_hint_loss(pred, hint, None, None)) == pytest.approx(3 * np.log1p(10.0) / 4, rel=1e-6)
    b = stereo_batch
    hl = hint_reprojection_loss(b["rgb"], b["rgb_stereo"], b["depth_hint"], b["T_stereo"], b["K"])
    assert hl.shape == (2, 1, 48, 160) and torch.isinf(hl[b["depth_hint"] == 0]).all()


# ------------------------------------------------------------------------------ config and data sources
def test_real_config_sources_on_the_shared_data():
    from training.data import build_mixed_datasets

    cfg = load_config(REPO_ROOT / "training" / "configs" / "real_sg.yaml",
                      ["data.height=64", "data.width=192", "data.depth_hints=false", "loss.depth_hint_weight=0"])
    assert cfg.data.stereo and cfg.model.guidance and "espnet_cityscapes" in cfg.model.semantic.weights
    assert [s.kind for s in cfg.data.sources] == ["kitti", "odometry", "synthetic"]
    cfg.data.sources = cfg.data.sources[:2]  # the real ones (rendering the synthetic drives takes minutes)
    train, val = build_mixed_datasets(cfg, verbose=False)
    assert val is None
    names = {train[i]["filename"].split("/")[1] for i in range(0, len(train), 7)}
    assert "2011_09_26_drive_0023_sync" not in names  # the held-out drive never trains
    # drive 0001: frames 1-6 x 2 cameras, repeated 4x; the odometry snippets: 49 frames x 2 cameras each, 2x
    assert len(train) == 6 * 2 * 4 + 2 * 49 * 2 * 2
    it = train[0]
    assert {"rgb_stereo", "T_stereo", "speed", "dt", "pose_gt"} <= set(it)


@pytest.mark.parametrize("override, message", [
    (["data.stereo=true", "loss.depth_normalization=true"], "data.stereo: the stereo context warps with metric"),
    (["data.depth_hints=true"], "data.depth_hints: hints come from the stereo pair"),
    (["loss.depth_hint_weight=1.0"], "loss.depth_hint_weight: needs data.depth_hints"),
    (["data.kind=mixed"], "data.sources: data.kind mixed needs at least one source"),
    (["data.kind=mixed", "data.sources=[{kind: lidar, root: x}]"], r"data.sources\[0\].kind: 'lidar'"),
    (["data.kind=mixed", "data.sources=[{kind: odometry}]"], r"data.sources\[0\].root: required"),
    (["data.kind=mixed", "data.sources=[{kind: kitti, root: x, cams: [0]}]"], r"data.sources\[0\].cams"),
    (["data.augment.grayscale_prob=1.5"], "data.augment.grayscale_prob: must be in"),
    (["train.cache_semantics=true"], "train.cache_semantics: needs model.guidance"),
    (["loss.depth_hint_mode=sometimes"], "loss.depth_hint_mode: 'sometimes' is not one of"),
    (["model.pose_last_block=15"], "model.pose_last_block: must be 16, 17 or 18"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)
