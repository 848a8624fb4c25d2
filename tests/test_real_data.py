"""The real-data layer: KITTI odometry sequences, drive 0023's packaged LiDAR, stereo pairs as samples,
SGBM depth hints, greyscale handling and the bad inputs of each (clear errors or counted skips)."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from semdepth_core.data.dataset import KittiDataset, OdometryDataset
from semdepth_core.data.kitti import (
    KittiDrive, KittiFormatError, KittiMissingFileError, read_image_as_rgb, read_projected_depth,
)
from semdepth_core.data.kitti_odometry import OdometrySequence, find_odometry_sequences, read_odometry_poses
from semdepth_core.data.splits import SampleRef

H, W = 64, 208


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def odo_root(shared_data):
    return shared_data / "kitti_odometry"


@pytest.fixture(scope="module")
def drive23(kitti_root):
    return kitti_root / "2011_09_26" / "2011_09_26_drive_0023_sync"


# ------------------------------------------------------------------------------ KITTI odometry
def test_odometry_sequences_load_with_calibration_poses_and_speed(odo_root):
    assert find_odometry_sequences(odo_root) == ["snippet1", "snippet2"]
    s1 = OdometrySequence(odo_root, "snippet1", cams=(0, 1))
    assert s1.frames == list(range(51)) and s1.name == "odometry/snippet1"
    assert s1.native_size(0) == (1226, 370) and s1.K(0)[0, 0] == pytest.approx(707.0912)
    rgb = s1.load_image(10, 0)
    assert rgb.shape == (370, 1226, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])  # grey x3
    # the stereo pose comes from the calibration: the right camera sits ~0.537 m along +x
    T_1_0 = s1.T_between(1, 0)
    np.testing.assert_allclose(T_1_0[:3, :3], np.eye(3))
    assert T_1_0[0, 3] == pytest.approx(-s1.baseline) and 0.53 < s1.baseline < 0.545
    np.testing.assert_allclose(T_1_0[1:3, 3], 0.0, atol=1e-9)
    np.testing.assert_allclose(s1.T_between(0, 1), np.linalg.inv(T_1_0), atol=1e-12)
    # metric motion at a nominal 10 Hz: 1.0-1.2 m per frame
    m = s1.motion(10, [9, 11], 0)
    assert 9.0 < m["speed"] < 13.0
    np.testing.assert_allclose(m["dt"], [0.1, 0.1])
    assert m["pose_gt"].shape == (2, 4, 4)
    t_prev = m["pose_gt"][0][:3, 3]  # T_9_10: the camera moved forward, so frame 10's points are ahead in 9
    assert t_prev[2] > 0.9 and np.linalg.norm(t_prev) == pytest.approx(m["speed"] * 0.1, rel=0.1)
    # the right camera's motion is the left one's seen from the right camera
    mr = s1.motion(10, [9], 1)
    np.testing.assert_allclose(mr["pose_gt"][0], T_1_0 @ m["pose_gt"][0] @ np.linalg.inv(T_1_0), atol=1e-6)
    assert s1.depth_gt(10, 0) is None
    with pytest.raises(KittiMissingFileError, match="no depth ground truth"):
        s1.depth_gt(10, 0, "velodyne")


def test_odometry_dataset_stereo_items_and_both_cameras_as_targets(odo_root):
    ds = OdometryDataset(odo_root, ["snippet2"], cams=(0, 1), height=H, width=W, stereo=True, training=False)
    assert len(ds) == 49 * 2  # frames 1..49 have both neighbours; each camera is a target
    left, right = ds.load(0), ds.load(1)
    assert left["filename"] == "odometry/snippet2/000001" and right["filename"] == "odometry/snippet2/000001 r"
    assert int(left["cam"]) == 0 and int(right["cam"]) == 1
    for it in (left, right):
        assert it["rgb"].shape == (3, H, W) and it["rgb_context"].shape == (2, 3, H, W)
        assert it["rgb_stereo"].shape == (3, H, W) and "depth_gt" not in it
        assert it["speed"] > 5.0 and it["pose_gt"].shape == (2, 4, 4)
    assert float(left["T_stereo"][0, 3]) < -0.5 and float(right["T_stereo"][0, 3]) > 0.5
    assert torch.equal(left["rgb_stereo"], right["rgb"]) and torch.equal(right["rgb_stereo"], left["rgb"])
    fl = ds.load(0, flip=True)
    assert float(fl["T_stereo"][0, 3]) == pytest.approx(-float(left["T_stereo"][0, 3]))  # F T F
    assert torch.equal(fl["rgb_stereo"], left["rgb_stereo"].flip(-1))


def _copy_sequence(odo_root, tmp_path, name="snippet1", frames=6):
    root = tmp_path / "odo"
    for cam in (0, 1):
        d = root / "sequences" / name / f"image_{cam}"
        d.mkdir(parents=True)
        for f in range(frames):
            shutil.copy(odo_root / "sequences" / name / f"image_{cam}" / f"{f:06d}.png", d / f"{f:06d}.png")
    shutil.copy(odo_root / "sequences" / name / "calib.txt", root / "sequences" / name / "calib.txt")
    (root / "poses").mkdir()
    lines = (odo_root / "poses" / f"{name}.txt").read_text().splitlines()[:frames]
    (root / "poses" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_odometry_bad_input_is_named_or_counted(odo_root, tmp_path):
    root = _copy_sequence(odo_root, tmp_path)
    seq = root / "sequences" / "snippet1"
    # a stereo side missing: the frame is left out and counted, with the missing file named
    (seq / "image_1" / "000003.png").unlink()
    s = OdometrySequence(root, "snippet1", cams=(0, 1))
    assert 3 not in s.frames and s.has(3, 0) and not s.has(3, 1)
    ds = OdometryDataset(root, ["snippet1"], cams=(0,), height=H, width=W, stereo=True)
    assert ds.skipped == {"no image_1 image (stereo side missing)": 1}
    assert ds.skipped_examples["no image_1 image (stereo side missing)"].endswith("image_1/000003.png")
    assert [smp.frame for smp in ds.samples] == [1, 2, 4]  # the left camera's contexts need no right image
    # a poses file of the wrong length, a malformed line, or none at all
    poses = root / "poses" / "snippet1.txt"
    good = poses.read_text()
    poses.write_text("\n".join(good.splitlines()[:4]) + "\n")
    with pytest.raises(KittiFormatError, match=r"snippet1.txt: 4 poses for frames up to 5"):
        OdometrySequence(root, "snippet1")
    poses.write_text(good.replace(good.splitlines()[2], "1 0 0"))
    with pytest.raises(KittiFormatError, match=r"snippet1.txt:3: a pose line must hold 12 finite numbers"):
        read_odometry_poses(poses)
    poses.unlink()
    with pytest.raises(KittiMissingFileError, match="missing poses file of sequence 'snippet1'"):
        OdometrySequence(root, "snippet1")
    poses.write_text(good)
    # mixed greyscale and colour inputs: a colour file in the greyscale camera's folder
    bad = seq / "image_0" / "000004.png"
    cv2.imwrite(str(bad), np.zeros((370, 1226, 3), np.uint8) + np.array([0, 0, 255], np.uint8))
    s = OdometrySequence(root, "snippet1")
    with pytest.raises(KittiFormatError, match=r"image_0/000004.png: a colour image in a greyscale camera folder"):
        s.load_image(4, 0)


# ------------------------------------------------------------------------------ KITTI raw: 0023 and stereo
def test_drive_0023_ground_truth_is_its_packaged_projection(drive23, tmp_path):
    drive = KittiDrive(drive23, cams=(2, 3))
    assert drive.frames == list(range(7)) and drive.velodyne_path(0) is None
    gt = drive.depth_gt(3, 2)
    assert gt.shape == (375, 1242) and gt.dtype == np.float32
    assert 17_000 <= np.count_nonzero(gt) <= 21_000 and 1.0 < gt[gt > 0].min() and gt.max() < 85.0
    assert np.array_equal(gt, read_projected_depth(drive23 / "proj_depth/velodyne/image_02/0000000003.npz"))
    # an npz without the expected key, and one that is not an npz
    p = tmp_path / "0000000000.npz"
    np.savez(p, depth=np.zeros((4, 4), np.float32))
    with pytest.raises(KittiFormatError, match=r"0000000000.npz: no array 'velodyne_depth' in the npz \(it holds \['depth'\]\)"):
        read_projected_depth(p)
    p.write_bytes(b"not a zip")
    with pytest.raises(KittiFormatError, match="0000000000.npz: cannot read the npz"):
        read_projected_depth(p)


def test_kitti_stereo_pose_from_the_calibration(kitti_drive_dir):
    drive = KittiDrive(kitti_drive_dir, cams=(2, 3))
    T_3_2 = drive.T_between(3, 2)
    np.testing.assert_allclose(T_3_2[:3, :3], np.eye(3))
    assert T_3_2[0, 3] == pytest.approx(-drive.calib.baseline, abs=2e-3) and 0.53 < drive.calib.baseline < 0.545
    # consistent with the projection matrices: K T_3_2 X = P_rect_03 X_rect0 - ... for any rectified point
    X2 = np.array([1.5, -0.7, 12.0, 1.0])  # a point in camera 2's frame
    X0 = np.linalg.inv(drive.calib.T_camrect_cam0rect(2)) @ X2
    uvw = drive.calib.P_rect(3) @ X0
    uvw2 = drive.K(3) @ (T_3_2 @ X2)[:3]
    np.testing.assert_allclose(uvw[:2] / uvw[2], uvw2[:2] / uvw2[2], atol=1e-9)


def test_kitti_stereo_dataset_counts_a_missing_side(kitti_root, kitti_drive_dir, tmp_path):
    ds = KittiDataset(kitti_root, refs=[SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 3, c) for c in (2, 3)],
                      height=H, width=W, stereo=True, with_gt=True)
    a, b = ds.load(0), ds.load(1)
    assert torch.equal(a["rgb_stereo"], b["rgb"]) and float(a["T_stereo"][0, 3]) < -0.5
    assert a["depth_gt"].shape == (1, 375, 1242) and b["depth_gt"].shape == (1, 375, 1242)
    # right image 3 removed: its target is skipped and counted, not dropped silently
    root = tmp_path / "k"
    date = root / "2011_09_26"
    date.mkdir(parents=True)
    for f in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        shutil.copy(kitti_drive_dir.parent / f, date / f)
    shutil.copytree(kitti_drive_dir, date / kitti_drive_dir.name, ignore=shutil.ignore_patterns("velodyne_points"))
    (date / kitti_drive_dir.name / "image_03" / "data" / "0000000003.png").unlink()
    ds = KittiDataset(root, height=H, width=W, stereo=True, with_gt=False)
    assert [s.frame for s in ds.samples] == [1, 2, 4, 5, 6] and ds.skipped == {"no image_03 image (stereo side missing)": 1}


def test_greyscale_in_a_colour_folder_is_named(tmp_path):
    p = tmp_path / "0000000000.png"
    cv2.imwrite(str(p), np.zeros((8, 8), np.uint8))
    assert read_image_as_rgb(p).shape == (8, 8, 3)
    with pytest.raises(KittiFormatError, match="0000000000.png: a greyscale image in a colour camera folder"):
        read_image_as_rgb(p, "colour")


def test_greyscale_augmentation_turns_only_the_network_input_grey(kitti_root):
    ds = KittiDataset(kitti_root, height=H, width=W, augment={"flip": False, "brightness": 0.0, "contrast": 0.0,
                                                             "saturation": 0.0, "hue": 0.0, "grayscale_prob": 1.0})
    torch.manual_seed(0)
    it = ds[0]
    aug = it["rgb_aug"]
    assert torch.allclose(aug[0], aug[1]) and torch.allclose(aug[1], aug[2])
    assert not torch.allclose(it["rgb"][0], it["rgb"][2])  # the loss's images stay in colour


@pytest.mark.parametrize("make", ["kitti", "odometry"])
def test_image_cache_decodes_each_image_once(make, kitti_root, odo_root, monkeypatch):
    if make == "kitti":
        ds = KittiDataset(kitti_root, height=H, width=W, stereo=True, cache_images=True, with_gt=False)
    else:
        ds = OdometryDataset(odo_root, ["snippet1"], height=H, width=W, stereo=True, cache_images=True)
    first = ds.load(2, flip=True)
    seq = ds.samples[2].seq
    calls = []
    original = type(seq).load_image
    monkeypatch.setattr(type(seq), "load_image", lambda self, *a: calls.append(a) or original(self, *a))
    again = ds.load(2, flip=True)
    assert calls == []  # target, contexts and the stereo image all came from memory
    for key in ("rgb", "rgb_context", "rgb_stereo", "T_stereo", "K"):
        assert torch.equal(first[key], again[key]), key
