"""KittiDataset on the real snippet at 640x192, flip / jitter semantics, dense-GT drives, collate."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from semdepth_core.config import AugmentConfig
from semdepth_core.data.dataset import (
    JitterParams, KittiDataset, adjust_hue, collate, hsv_to_rgb, rgb_to_hsv,
)
from semdepth_core.data.kitti import KittiCalib, KittiFormatError, write_depth_png
from semdepth_core.data.splits import SampleRef, write_split_file
from semdepth_core.geometry.camera import resize_intrinsics

H, W = 192, 640


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Per-image colour ops are tiny; on the shared 2-core box intra-op threads only add contention
    (DataLoader workers run single-threaded too). Restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ds(kitti_root) -> KittiDataset:
    return KittiDataset(kitti_root, height=H, width=W, augment=AugmentConfig(), training=True)


@pytest.fixture(scope="module")
def plain(ds):
    return ds.load(0, flip=False, jitter=None)


@pytest.fixture(scope="module")
def flipped(ds):
    return ds.load(0, flip=True, jitter=None)


def test_item_keys_shapes_real_snippet(ds, plain, kitti_drive_dir):
    assert len(ds) == 11  # frames 1..6 of drive 0001 and 1..5 of drive 0023 have both contexts
    it = plain
    assert it["rgb"].shape == (3, H, W) and it["rgb"].dtype == torch.float32
    assert it["rgb_aug"].shape == (3, H, W)
    assert it["rgb_context"].shape == (2, 3, H, W) and it["rgb_context_aug"].shape == (2, 3, H, W)
    assert 0.0 <= float(it["rgb"].min()) and float(it["rgb"].max()) <= 1.0 and float(it["rgb"].std()) > 0.05
    assert it["depth_gt"].shape == (1, 375, 1242) and it["depth_gt"].dtype == torch.float32
    assert 17_000 <= int((it["depth_gt"] > 0).sum()) <= 21_000
    assert "semantic_gt" not in it and "dynamic_gt" not in it
    assert it["filename"] == "2011_09_26/2011_09_26_drive_0001_sync/0000000001"
    assert it["original_size"].tolist() == [1242, 375]
    # K at network resolution, half-pixel rule
    K_full = KittiCalib.from_date_dir(kitti_drive_dir.parent).K(2)
    np.testing.assert_allclose(it["K"].numpy(), resize_intrinsics(K_full, (1242, 375), (W, H)), rtol=1e-6)
    assert it["K"].dtype == torch.float32 and float(it["K"][0, 0]) == pytest.approx(721.5377 * W / 1242, rel=1e-6)
    # OXTS-derived supervision
    assert it["speed"].shape == () and 12.0 < float(it["speed"]) < 14.0
    assert it["dt"].shape == (2,) and torch.allclose(it["dt"], torch.full((2,), 0.103), atol=0.005)
    T = it["pose_gt"]
    assert T.shape == (2, 4, 4) and T.dtype == torch.float32
    # context -1 is behind the target: target points appear further ahead (+z) in it, and vice versa
    assert float(T[0, 2, 3]) > 1.1 and float(T[1, 2, 3]) < -1.1
    dist = T[:, :3, 3].norm(dim=1)
    assert torch.allclose(dist, it["speed"] * it["dt"], rtol=0.12)
    # without augmentation *_aug are equal copies (not the same storage)
    assert torch.equal(it["rgb_aug"], it["rgb"]) and it["rgb_aug"].data_ptr() != it["rgb"].data_ptr()


def test_resize_uses_inter_area(ds, plain, kitti_drive_dir):
    bgr = cv2.imread(str(kitti_drive_dir / "image_02" / "data" / "0000000001.png"))
    ref = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (W, H), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(plain["rgb"].permute(1, 2, 0).numpy() * 255.0, ref, atol=1e-3)


def test_flip_consistency(plain, flipped):
    np.testing.assert_array_equal(flipped["rgb"].numpy(), np.flip(plain["rgb"].numpy(), axis=-1))
    np.testing.assert_array_equal(flipped["rgb_context"].numpy(), np.flip(plain["rgb_context"].numpy(), axis=-1))
    np.testing.assert_array_equal(flipped["depth_gt"].numpy(), np.flip(plain["depth_gt"].numpy(), axis=-1))
    K, Kf = plain["K"], flipped["K"]
    assert float(Kf[0, 2]) == pytest.approx(W - 1 - float(K[0, 2]))
    assert torch.equal(Kf[1], K[1]) and Kf[0, 0] == K[0, 0]
    F = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(flipped["pose_gt"], F @ plain["pose_gt"] @ F, atol=1e-7)
    # mirroring keeps forward motion, flips the sign of lateral translation
    assert torch.allclose(flipped["pose_gt"][:, 0, 3], -plain["pose_gt"][:, 0, 3])
    assert flipped["speed"] == plain["speed"] and torch.equal(flipped["dt"], plain["dt"])


def test_flipped_pose_and_K_are_geometrically_consistent(plain, flipped):
    """A 3D point projected through (K, T) then mirrored equals the projection through (K', F T F)."""
    X = torch.tensor([2.0, 0.5, 12.0, 1.0])
    Xf = torch.tensor([-2.0, 0.5, 12.0, 1.0])  # the point in the mirrored world

    def proj(K, T, P):
        q = K @ (T @ P)[:3]
        return q[:2] / q[2]

    u, v = proj(plain["K"], plain["pose_gt"][0], X)
    uf, vf = proj(flipped["K"], flipped["pose_gt"][0], Xf)
    assert float(uf) == pytest.approx(W - 1 - float(u), abs=1e-3) and float(vf) == pytest.approx(float(v), abs=1e-3)


def test_jitter_only_on_aug_and_shared_by_context(ds, plain):
    jp = JitterParams(brightness=1.25, contrast=0.8, saturation=1.3, hue=0.06)
    it = ds.load(0, flip=False, jitter=jp)
    assert torch.equal(it["rgb"], plain["rgb"]) and torch.equal(it["rgb_context"], plain["rgb_context"])
    assert (it["rgb_aug"] - it["rgb"]).abs().mean() > 0.01
    assert torch.allclose(it["rgb_aug"], jp.apply(it["rgb"]))
    for i in range(2):  # same parameters on every context frame
        assert torch.allclose(it["rgb_context_aug"][i], jp.apply(it["rgb_context"][i]), atol=1e-6)
    assert 0.0 <= float(it["rgb_aug"].min()) and float(it["rgb_aug"].max()) <= 1.0


def test_colour_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 9, generator=g)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    green = adjust_hue(red, 1.0 / 3.0)
    assert torch.allclose(green, torch.stack([torch.zeros(2, 2), torch.ones(2, 2), torch.zeros(2, 2)]), atol=1e-5)
    grey = JitterParams(saturation=0.0).apply(x)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)
    flat = JitterParams(contrast=0.0).apply(x)
    assert float(flat.std(dim=(-3, -2, -1)).max()) < 1e-5
    assert torch.allclose(JitterParams(brightness=0.5).apply(x), x * 0.5)
    assert torch.equal(JitterParams().apply(x), x)


def test_random_augmentation_via_getitem(ds, plain):
    torch.manual_seed(3)
    flips, changed = 0, 0
    for _ in range(6):
        it = ds[0]
        is_flipped = float(it["K"][0, 2]) != pytest.approx(float(plain["K"][0, 2]))
        flips += is_flipped
        base = plain["rgb"].flip(-1) if is_flipped else plain["rgb"]
        assert torch.equal(it["rgb"], base)  # the loss image is never jittered
        changed += bool((it["rgb_aug"] - it["rgb"]).abs().mean() > 1e-3)
    assert 0 < flips < 6 and changed == 6


def test_no_augmentation_when_not_training(kitti_root):
    ds = KittiDataset(kitti_root, augment=AugmentConfig(), training=False, with_gt=False)
    it = ds[2]
    assert torch.equal(it["rgb_aug"], it["rgb"]) and "depth_gt" not in it
    assert it["filename"].endswith("0000000003")


def test_dataloader_batches(ds):
    dl = DataLoader(ds, batch_size=2, collate_fn=collate, shuffle=False)
    b = next(iter(dl))
    assert b["rgb"].shape == (2, 3, H, W) and b["rgb_context"].shape == (2, 2, 3, H, W)
    assert b["K"].shape == (2, 3, 3) and b["pose_gt"].shape == (2, 2, 4, 4) and b["depth_gt"].shape == (2, 1, 375, 1242)
    assert b["speed"].shape == (2,) and b["dt"].shape == (2, 2) and len(b["filename"]) == 2
    b2 = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))  # torch's default collate also works
    assert b2["rgb"].shape == (2, 3, H, W)


def test_collate_ragged_gt():
    a = {"rgb": torch.zeros(3, 4, 5), "depth_gt": torch.zeros(1, 10, 20), "filename": "a", "x": torch.zeros(1)}
    b = {"rgb": torch.ones(3, 4, 5), "depth_gt": torch.zeros(1, 12, 22), "filename": "b"}
    out = collate([a, b])
    assert out["rgb"].shape == (2, 3, 4, 5)
    assert isinstance(out["depth_gt"], list) and [t.shape[-1] for t in out["depth_gt"]] == [20, 22]
    assert out["filename"] == ["a", "b"] and "x" not in out


def test_gt_source_and_refs_validation(kitti_root, tmp_path):
    with pytest.raises(KittiFormatError, match="no dense depth for frame 1"):
        KittiDataset(kitti_root, gt_source="dense").load(0)
    velo = KittiDataset(kitti_root, gt_source="velodyne", context=(-1,)).load(6)
    assert velo["filename"].endswith("0000000007") and velo["rgb_context"].shape == (1, 3, H, W)
    assert int((velo["depth_gt"] > 0).sum()) > 15_000
    with pytest.raises(ValueError, match="gt_source"):
        KittiDataset(kitti_root, gt_source="lidar")
    # a frame whose context is missing (frame 0 has no -1) is refused up front, by name
    with pytest.raises(KittiFormatError, match=r"0000000000 \(needs frame -1"):
        KittiDataset(kitti_root, refs=[SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 0, 2)])
    with pytest.raises(FileNotFoundError, match="drive_0099_sync: drive folder does not exist"):
        KittiDataset(kitti_root, refs=[SampleRef("2011_09_26", "2011_09_26_drive_0099_sync", 3, 2)])
    split = tmp_path / "split.txt"
    write_split_file(split, [SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 4, 3)])
    ds = KittiDataset(kitti_root, refs=split, with_gt=False)  # right camera from a zhou split
    assert len(ds) == 1 and ds.load(0)["rgb"].shape == (3, H, W)


# ------------------------------------------------------------------ dense-GT drive (synthetic-style)

@pytest.fixture(scope="module")
def dense_root(tmp_path_factory, kitti_drive_dir):
    """A small KITTI-layout drive (frames 3..6, 64x32) with dense depth, semantics, dynamic masks, no OXTS."""
    root = tmp_path_factory.mktemp("dense")
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0042_sync"
    lines = [("S_rect_0%s: 6.4e+01 3.2e+01" % ln[8]) if ln.startswith("S_rect_0") else ln
             for ln in (kitti_drive_dir.parent / "calib_cam_to_cam.txt").read_text().splitlines()]
    date.mkdir()
    (date / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    (date / "calib_velo_to_cam.txt").write_text((kitti_drive_dir.parent / "calib_velo_to_cam.txt").read_text())
    rng = np.random.default_rng(1)
    sub = {"img": drive / "image_02" / "data", "depth": drive / "proj_depth" / "groundtruth" / "image_02",
           "sem": drive / "semantic" / "image_02", "dyn": drive / "dynamic" / "image_02"}
    for p in sub.values():
        p.mkdir(parents=True)
    for f in range(3, 7):
        name = f"{f:010d}.png"
        cv2.imwrite(str(sub["img"] / name), rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
        depth = np.tile(np.linspace(2.0, 50.0, 64, dtype=np.float32), (32, 1)) + f
        depth[:4] = 0.0
        write_depth_png(sub["depth"] / name, depth)
        sem = np.tile(np.arange(64, dtype=np.uint8) % 19, (32, 1))
        sem[0] = 255
        cv2.imwrite(str(sub["sem"] / name), sem)
        cv2.imwrite(str(sub["dyn"] / name), (sem == 13).astype(np.uint8))
    return root


def test_dense_gt_drive(dense_root):
    ds = KittiDataset(dense_root, height=16, width=32)
    assert [r.frame for r in ds.refs] == [4, 5]
    it = ds.load(0)
    assert it["depth_gt"].shape == (1, 32, 64)
    assert float(it["depth_gt"][0, 10, 0]) == pytest.approx(2.0 + 4, abs=1 / 256)  # the dense PNG, not Velodyne
    assert float(it["depth_gt"][0, 0, 0]) == 0.0
    assert it["semantic_gt"].dtype == torch.int64 and it["semantic_gt"].shape == (32, 64)
    assert it["semantic_gt"][5, :19].tolist() == list(range(19)) and int(it["semantic_gt"][0, 0]) == 255
    assert it["dynamic_gt"].dtype == torch.uint8 and int(it["dynamic_gt"].sum()) == 3 * 31  # columns 13, 32, 51; row 0 is 255
    assert not ({"speed", "dt", "pose_gt"} & set(it))  # no OXTS in this drive
    fl = ds.load(0, flip=True)
    for k in ("depth_gt", "semantic_gt", "dynamic_gt"):
        assert torch.equal(fl[k], it[k].flip(-1))
    assert float(fl["K"][0, 2]) == pytest.approx(31 - float(it["K"][0, 2]))


def test_image_size_must_match_calibration(dense_root, tmp_path):
    import shutil
    root = tmp_path / "r"
    shutil.copytree(dense_root, root)
    img = root / "2011_09_26" / "2011_09_26_drive_0042_sync" / "image_02" / "data" / "0000000004.png"
    cv2.imwrite(str(img), np.zeros((30, 64, 3), np.uint8))
    with pytest.raises(KittiFormatError, match="0000000004.png: image is 64x30 but S_rect_02"):
        KittiDataset(root, height=16, width=32).load(0)


def test_augment_from_mapping(kitti_root, plain):
    """A plain dict (parsed YAML) configures augmentation as well as AugmentConfig does."""
    ds = KittiDataset(kitti_root, augment={"flip": False, "brightness": 0.5}, with_gt=False)
    torch.manual_seed(0)
    for _ in range(2):
        it = ds[0]
        assert torch.equal(it["K"], plain["K"]) and torch.equal(it["rgb"], plain["rgb"])  # never flipped
        ratio = it["rgb_aug"].sum() / it["rgb"].sum()
        assert 0.5 <= float(ratio) <= 1.5 and abs(float(ratio) - 1.0) > 1e-4


def test_synthetic_drive_reads_and_oxts_poses_match_generator(synthetic_root):
    """Drives of semdepth_core.data.synthetic load like real ones, and the OXTS -> camera-pose chain
    reproduces the generator's own camera trajectory (scene.json) to sub-millimetre accuracy."""
    import json

    from semdepth_core.data.kitti import KittiDrive, find_drives

    (drive_dir,) = find_drives(synthetic_root)
    drive = KittiDrive(drive_dir)
    assert drive.frames == list(range(12)) and drive.has_oxts and drive.has_velodyne
    scene = json.loads((drive_dir / "scene.json").read_text())
    ds = KittiDataset(synthetic_root, height=48, width=160)
    assert len(ds) == 10
    it = ds.load(4)  # target frame 5, contexts 4 and 6
    assert it["depth_gt"].shape == (1, 96, 320) and "semantic_gt" in it and "dynamic_gt" in it
    T_w = np.array(scene["T_world_cam02"])
    for n, ctx in enumerate((4, 6)):
        expected = np.linalg.inv(T_w[ctx]) @ T_w[5]
        np.testing.assert_allclose(it["pose_gt"][n].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(it["dt"].numpy(), np.abs(np.array(scene["times"])[[4, 6]] - scene["times"][5]),
                               atol=1e-5)
    # dense GT (auto) agrees with the Velodyne projection where both exist (the renderer samples pixel
    # centres, so the nearest-pixel placement, not the published protocol's one-pixel shift)
    velo = drive.velodyne_depth(5, size=(320, 96), placement="nearest")
    dense = it["depth_gt"][0].numpy()
    both = (velo > 0) & (dense > 0)
    assert both.sum() > 1000 and np.median(np.abs(velo[both] - dense[both])) < 0.1
