"""KITTI raw layer on the real shared snippet (2011_09_26_drive_0001_sync, frames 0-7) and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from semdepth_core.data.kitti import (
    EARTH_RADIUS, OXTS_FIELDS, KittiCalib, KittiDrive, KittiFormatError, KittiMissingFileError,
    camera_poses, find_drives, load_velodyne, oxts_poses, parse_oxts_line, project_points_to_depth,
    read_calib_file, read_depth_png, read_oxts, read_oxts_dir, read_timestamps, velodyne_depth,
    write_depth_png,
)
from semdepth_core.geometry.camera import resize_intrinsics
from semdepth_core.geometry.se3 import euler_to_matrix_np


@pytest.fixture(scope="module")
def drive(kitti_drive_dir) -> KittiDrive:
    return KittiDrive(kitti_drive_dir)


@pytest.fixture(scope="module")
def calib(kitti_drive_dir) -> KittiCalib:
    return KittiCalib.from_date_dir(kitti_drive_dir.parent)


# ---------------------------------------------------------------------------- drive index

def test_cut_short_drive_indexes_frames_present_not_timestamps(drive, kitti_drive_dir):
    assert len(drive.timestamps("image_02")) == 108  # the file lists the full drive
    assert drive.frames == list(range(8))  # only 0..7 exist
    assert drive.frames_with_context((-1, 1)) == [1, 2, 3, 4, 5, 6]
    assert drive.frames_with_context((-2, 2)) == [2, 3, 4, 5]
    assert drive.has_oxts and drive.has_velodyne
    assert drive.date == "2011_09_26" and drive.drive == "2011_09_26_drive_0001_sync"
    assert drive.image_path(7, 3) == kitti_drive_dir / "image_03" / "data" / "0000000007.png"
    assert drive.velodyne_path(0).is_file()
    assert drive.dense_depth_path(0) is None and drive.semantic_path(0) is None and drive.dynamic_path(0) is None
    assert drive.velodyne_path(8) is None
    with pytest.raises(KittiFormatError, match="no timestamp for frame 200"):
        drive.timestamp(200)
    assert KittiDrive(kitti_drive_dir, cams=(2, 3)).frames == list(range(8))


def test_find_drives(kitti_root, kitti_drive_dir, tmp_path):
    # the shared root holds drives 0001 (Velodyne .bin) and 0023 (projected LiDAR), sorted by name
    assert find_drives(kitti_root) == [kitti_drive_dir, kitti_root / "2011_09_26" / "2011_09_26_drive_0023_sync"]
    with pytest.raises(KittiMissingFileError, match="does not exist"):
        find_drives(tmp_path / "nope")


def test_timestamps_parse_nanoseconds(drive, tmp_path):
    ts = drive.timestamps("image_02")
    assert ts.dtype == np.float64
    d = np.diff(ts)
    assert np.all(d > 0) and 0.09 < np.median(d) < 0.11  # 10 Hz
    p = tmp_path / "timestamps.txt"
    p.write_text("2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.064389446\n\n")
    t = read_timestamps(p)
    assert len(t) == 2 and abs((t[1] - t[0]) - 0.100000001) < 1e-6
    # absolute epoch seconds of 2011-09-26 13:02:25 UTC
    assert abs(t[0] - (1317042145 + 0.964389445)) < 1e-6
    p.write_text("2011-09-26 13:02:25.964389445\n2011-09-26 13:02\n")
    with pytest.raises(KittiFormatError, match=r"timestamps.txt:2: malformed timestamp"):
        read_timestamps(p)


# ---------------------------------------------------------------------------- calibration

def test_calib_intrinsics_and_baseline(calib, kitti_drive_dir):
    K = calib.K(2)
    assert K[0, 0] == pytest.approx(721.5377) and K[1, 1] == pytest.approx(721.5377)
    assert K[0, 2] == pytest.approx(609.5593) and K[1, 2] == pytest.approx(172.854)
    assert calib.image_size(2) == (1242, 375)
    assert 0.53 < calib.baseline < 0.55
    K_small = calib.K(2, size=(640, 192))
    np.testing.assert_allclose(K_small, resize_intrinsics(K, (1242, 375), (640, 192)))
    assert K_small[0, 0] == pytest.approx(721.5377 * 640 / 1242)
    assert K_small[0, 2] == pytest.approx((609.5593 + 0.5) * 640 / 1242 - 0.5)
    raw = read_calib_file(kitti_drive_dir.parent / "calib_cam_to_cam.txt")
    assert raw["calib_time"] == "09-Jan-2012 13:57:47"
    assert raw["P_rect_02"].shape == (12,)


def test_T_cam_velo_reproduces_projection_matrix(calib, kitti_drive_dir):
    """K @ T_cam_velo[:3] must equal the devkit chain P_rect_0x @ R_rect_00 @ Tr_velo_to_cam."""
    c2c = read_calib_file(kitti_drive_dir.parent / "calib_cam_to_cam.txt")
    v2c = read_calib_file(kitti_drive_dir.parent / "calib_velo_to_cam.txt")
    Tr = np.eye(4)
    Tr[:3, :3], Tr[:3, 3] = v2c["R"].reshape(3, 3), v2c["T"]
    R_rect = np.eye(4)
    R_rect[:3, :3] = c2c["R_rect_00"].reshape(3, 3)
    for cam in (0, 2, 3):
        P = c2c[f"P_rect_0{cam}"].reshape(3, 4)
        np.testing.assert_allclose(calib.K(cam) @ calib.T_cam_velo(cam)[:3], P @ R_rect @ Tr, atol=1e-9)
    # rectified cam 3 sits one baseline to the right of cam 2 (x right): X_3 = X_2 - (b, 0, 0)
    T_3_2 = calib.T_cam_velo(3) @ np.linalg.inv(calib.T_cam_velo(2))
    np.testing.assert_allclose(T_3_2[:3, :3], np.eye(3), atol=1e-12)
    assert T_3_2[0, 3] == pytest.approx(-calib.baseline, abs=5e-3)
    # KITTI rig (Geiger et al. 2013, Fig. 3): the OXTS unit is ~0.72 m below the cameras (1.65 m vs
    # 0.93 m height; y is down) and ~1.1 m behind them (z forward)
    imu_in_cam = calib.T_cam_imu(2)[:3, 3]
    assert 0.6 < imu_in_cam[1] < 0.85 and -1.3 < imu_in_cam[2] < -0.9


def _c2c_lines(kitti_drive_dir) -> list[str]:
    return (kitti_drive_dir.parent / "calib_cam_to_cam.txt").read_text().splitlines()


def _write_date_dir(tmp_path, kitti_drive_dir, c2c_lines):
    d = tmp_path / "2011_09_26"
    d.mkdir(exist_ok=True)
    (d / "calib_cam_to_cam.txt").write_text("\n".join(c2c_lines) + "\n")
    for name in ("calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (d / name).write_text((kitti_drive_dir.parent / name).read_text())
    return d


@pytest.mark.parametrize("seed", range(12))
def test_malformed_calibration_fuzz(seed, kitti_drive_dir, tmp_path):
    """Small seeded fuzz: one mutation of a line KittiCalib relies on must raise KittiFormatError."""
    rng = np.random.default_rng(seed)
    lines = _c2c_lines(kitti_drive_dir)
    used = [i for i, ln in enumerate(lines) if ln.split(":")[0] in
            {f"P_rect_0{c}" for c in range(4)} | {f"S_rect_0{c}" for c in range(4)} | {"R_rect_00"}]
    i = int(rng.choice(used))
    key, values = lines[i].split(":", 1)
    toks = values.split()
    kind = seed % 4
    if kind == 0:  # drop the colon
        lines[i] = key + " " + values
    elif kind == 1:  # one value becomes text
        toks[int(rng.integers(len(toks)))] = "x1.2e"
        lines[i] = key + ": " + " ".join(toks)
    elif kind == 2:  # one value missing
        del toks[int(rng.integers(len(toks)))]
        lines[i] = key + ": " + " ".join(toks)
    else:  # key deleted
        del lines[i]
    d = _write_date_dir(tmp_path, kitti_drive_dir, lines)
    with pytest.raises(KittiFormatError, match="calib_cam_to_cam.txt"):
        KittiCalib.from_date_dir(d)


def test_calibration_bad_lines_and_missing_files(kitti_drive_dir, tmp_path):
    lines = _c2c_lines(kitti_drive_dir)
    d = _write_date_dir(tmp_path, kitti_drive_dir, lines + ["P_rect_00: 1 2 3"])
    with pytest.raises(KittiFormatError, match=r"calib_cam_to_cam.txt:\d+: duplicate key 'P_rect_00'"):
        KittiCalib.from_date_dir(d)
    d = _write_date_dir(tmp_path, kitti_drive_dir, lines + ["S_rect_02:"])
    with pytest.raises(KittiFormatError, match="has no value"):
        KittiCalib.from_date_dir(d)
    (d / "calib_velo_to_cam.txt").unlink()
    (d / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(FileNotFoundError, match="calib_velo_to_cam.txt: missing calibration file") as ei:
        KittiCalib.from_date_dir(d)
    assert isinstance(ei.value, KittiFormatError)
    # the IMU calibration is optional until someone needs it
    (d / "calib_velo_to_cam.txt").write_text((kitti_drive_dir.parent / "calib_velo_to_cam.txt").read_text())
    (d / "calib_imu_to_velo.txt").unlink()
    c = KittiCalib.from_date_dir(d)
    with pytest.raises(KittiMissingFileError, match="calib_imu_to_velo.txt"):
        c.T_cam_imu(2)


# ---------------------------------------------------------------------------- OXTS

def test_oxts_fields_and_speed(drive, kitti_drive_dir):
    fmt = (kitti_drive_dir / "oxts" / "dataformat.txt").read_text().splitlines()
    assert len(OXTS_FIELDS) == 30 and OXTS_FIELDS[:6] == ("lat", "lon", "alt", "roll", "pitch", "yaw")
    # our names follow dataformat.txt line by line (its 14th line has a typo 'ay' for 'az')
    names = [ln.split(":")[0].strip() for ln in fmt if ln.strip()]
    assert [n for k, n in enumerate(names) if k != 13] == [n for k, n in enumerate(OXTS_FIELDS) if k != 13]
    p = drive.oxts(0)
    assert 12.0 <= p.vf <= 14.0
    assert p["vf"] == p.vf and set(p.as_dict()) == set(OXTS_FIELDS)
    assert p.speed == pytest.approx(np.linalg.norm([p.vf, p.vl, p.vu]))
    assert abs(p.yaw_rate) < 0.1 and p.yaw_rate == p.wu
    assert 40 < p.lat < 60 and 5 < p.lon < 15  # Karlsruhe
    assert isinstance(p.numsats, int) and p.numsats > 3
    assert len(read_oxts_dir(kitti_drive_dir / "oxts")) == 8


@pytest.mark.parametrize("n_fields", [0, 1, 29, 31, 60])
def test_oxts_wrong_field_count(n_fields, tmp_path):
    p = tmp_path / "0000000000.txt"
    p.write_text(" ".join(["1.0"] * n_fields) + "\n")
    with pytest.raises(KittiFormatError, match=r"0000000000.txt"):
        read_oxts(p)


@pytest.mark.parametrize("seed", range(8))
def test_oxts_malformed_value_fuzz(seed, drive):
    rng = np.random.default_rng(100 + seed)
    toks = (drive.path / "oxts" / "data" / "0000000000.txt").read_text().split()
    assert parse_oxts_line(" ".join(toks)).vf == pytest.approx(13.172716663769)
    k = int(rng.integers(30))
    toks[k] = ["nan", "inf", "1,5", "abc", "--3"][seed % 5]
    with pytest.raises(KittiFormatError, match=f"field '{OXTS_FIELDS[k]}'"):
        parse_oxts_line(" ".join(toks), "frame.txt")


def test_oxts_two_lines_and_fractional_mode(drive, tmp_path):
    line = (drive.path / "oxts" / "data" / "0000000000.txt").read_text().strip()
    p = tmp_path / "x.txt"
    p.write_text(line + "\n" + line + "\n")
    with pytest.raises(KittiFormatError, match="exactly one OXTS line, found 2"):
        read_oxts(p)
    p.write_text(" ".join(line.split()[:-1] + ["6.5"]))
    with pytest.raises(KittiFormatError, match="'orimode' must be an integer"):
        read_oxts(p)
    with pytest.raises(FileNotFoundError, match="missing OXTS file"):
        read_oxts(tmp_path / "missing.txt")


def _packet_from(drive, **over):
    d = drive.oxts(0).as_dict()
    d.update(over)
    return type(drive.oxts(0))(**d)


def test_oxts_poses_mercator_against_metric_displacements(drive):
    p0 = _packet_from(drive, roll=0.0, pitch=0.0, yaw=0.3)
    lat0 = p0.lat
    # 10 m north and 20 m east on the sphere, 1 m up
    dlat = np.rad2deg(10.0 / EARTH_RADIUS)
    dlon = np.rad2deg(20.0 / (EARTH_RADIUS * np.cos(np.deg2rad(lat0))))
    p1 = _packet_from(drive, lat=lat0 + dlat, lon=p0.lon + dlon, alt=p0.alt + 1.0, roll=0.01, pitch=-0.02, yaw=0.5)
    T = oxts_poses([p0, p1])
    np.testing.assert_allclose(T[0, :3, 3], 0.0, atol=1e-9)  # origin at the first packet
    np.testing.assert_allclose(T[1, :3, 3], [20.0, 10.0, 1.0], atol=2e-3)  # x east, y north, z up
    np.testing.assert_allclose(T[1, :3, :3], euler_to_matrix_np(0.01, -0.02, 0.5), atol=1e-12)
    np.testing.assert_allclose(T[0, :3, :3], euler_to_matrix_np(0.0, 0.0, 0.3), atol=1e-12)  # absolute
    np.testing.assert_allclose(T[:, 3], [[0, 0, 0, 1]] * 2)


def test_camera_pose_motion_matches_speed(drive):
    T_w_cam = drive.camera_poses([0, 1])
    T_w_imu = oxts_poses([drive.oxts(0), drive.oxts(1)])
    np.testing.assert_allclose(T_w_cam @ drive.calib.T_cam_imu(2), T_w_imu, atol=1e-6)
    np.testing.assert_allclose(camera_poses([drive.oxts(0), drive.oxts(1)], drive.calib, 2), T_w_cam)
    T_1_0 = np.linalg.inv(T_w_cam[1]) @ T_w_cam[0]
    dt = drive.timestamp(1, "oxts") - drive.timestamp(0, "oxts")
    expected = 0.5 * (drive.oxts(0).speed + drive.oxts(1).speed) * dt
    t = T_1_0[:3, 3]
    assert np.linalg.norm(t) == pytest.approx(expected, rel=0.10)
    # driving forward along the camera's z: frame 0 is behind frame 1
    assert t[2] < -0.95 * np.linalg.norm(t)


# ---------------------------------------------------------------------------- Velodyne

def test_velodyne_groundtruth_frame0(drive, calib, kitti_drive_dir):
    path = drive.velodyne_path(0)
    pts = load_velodyne(path)
    assert pts.dtype == np.float32 and pts.shape[1] == 4 and pts.shape[0] * 16 == path.stat().st_size
    depth = velodyne_depth(pts, calib, cam=2)
    assert depth.shape == (375, 1242) and depth.dtype == np.float32
    valid = depth[depth > 0]
    assert 17_000 <= valid.size <= 21_000
    assert abs(np.median(valid) - 14.6) <= 0.5
    assert valid.min() > 3.0 and valid.max() < 85.0
    # lower rows (road near the car) are closer than the upper rows on average
    rows = np.nonzero(depth)[0]
    assert np.mean(depth[depth > 0][rows > 300]) < np.mean(depth[depth > 0][rows < 200])
    # at half size: fewer pixels, same depth distribution
    half = velodyne_depth(pts, calib, cam=2, size=(621, 188))
    assert half.shape == (188, 621)
    assert 0.5 * valid.size < np.count_nonzero(half) < valid.size
    assert abs(np.median(half[half > 0]) - np.median(valid)) < 0.5


def test_project_points_placements_and_nearest_wins():
    """Hand-made points: the published protocol (monodepth2's generate_depth_map, the KITTI devkit's
    1-based indexing) rounds and then subtracts one pixel; "nearest" only rounds. Nearest depth wins."""
    K = np.array([[100.0, 0, 10], [0, 100.0, 5], [0, 0, 1]])
    pts = np.array([
        [0.044, 0.0, 10.0],   # u = 10.44 -> 10, v = 5
        [0.046, 0.0, 10.0],   # u = 10.46 -> 10 (same pixel, same depth)
        [0.0, 0.0, 4.0],      # u = 10 -> same pixel, nearer: wins
        [0.0, 0.0, 8.0],      # same pixel, farther
        [0.06, 0.0, 10.0],    # u = 10.6 -> 11
        [0.0, 0.0, -5.0],     # behind the camera
        [5.0, 0.0, 1.0],      # u = 510: outside
        [-0.1, -0.05, 1.0],   # u = 0, v = 0: inside for "nearest", at -1 (outside) for "kitti"
        [0.1, 0.05, 1.0],     # u = 20 (outside for "nearest"), v = 10: at (19, 9) for "kitti"
    ])
    d = project_points_to_depth(pts, K, (20, 10), placement="nearest")
    assert d[5, 10] == pytest.approx(4.0)
    assert d[5, 11] == pytest.approx(10.0)
    assert d[0, 0] == pytest.approx(1.0)
    assert np.count_nonzero(d) == 3
    k = project_points_to_depth(pts, K, (20, 10))  # the default is the published placement
    assert np.array_equal(k, project_points_to_depth(pts, K, (20, 10), placement="kitti"))
    assert k[4, 9] == pytest.approx(4.0) and k[4, 10] == pytest.approx(10.0)
    assert k[9, 19] == pytest.approx(1.0) and k[0, 0] == 0.0
    assert np.count_nonzero(k) == 3
    with pytest.raises(ValueError, match="placement must be one of"):
        project_points_to_depth(pts, K, (20, 10), placement="floor")


def test_velodyne_placement_matches_the_packaged_projection(kitti_root):
    """The default placement is the nearest-pixel one moved by one pixel up and left, on a real scan; and
    drive 0023's packaged projection (packnet-sfm's npz, made the published way) reads as a depth map."""
    from semdepth_core.data.kitti import KittiDrive, read_projected_depth

    d0001 = KittiDrive(kitti_root / "2011_09_26" / "2011_09_26_drive_0001_sync")
    pts = d0001.load_velodyne(0)
    kitti = d0001.velodyne_depth(0)
    nearest = d0001.velodyne_depth(0, placement="nearest")
    # the two placements are the same points one pixel apart (up to occlusion ties)
    both = (kitti[:-1, :-1] > 0) & (nearest[1:, 1:] > 0)
    assert both.sum() > 15_000
    assert np.mean(kitti[:-1, :-1][both] == nearest[1:, 1:][both]) > 0.99
    assert kitti.shape == (375, 1242) and len(pts) > 100_000
    npz = read_projected_depth(kitti_root / "2011_09_26" / "2011_09_26_drive_0023_sync" / "proj_depth" / "velodyne"
                               / "image_02" / "0000000000.npz")
    assert npz.shape == (375, 1242) and 17_000 <= np.count_nonzero(npz) <= 21_000


def test_velodyne_bad_size(tmp_path):
    p = tmp_path / "0000000000.bin"
    p.write_bytes(np.zeros(10, np.float32).tobytes())  # 40 bytes
    with pytest.raises(KittiFormatError, match="0000000000.bin: size 40 bytes is not a multiple of 16"):
        load_velodyne(p)


# ---------------------------------------------------------------------------- depth PNG

def test_depth_png_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 120.0, (37, 53)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = 0.0
    depth[0, 0], depth[0, 1] = np.nan, -2.0
    p = tmp_path / "d.png"
    write_depth_png(p, depth)
    back = read_depth_png(p)
    assert back.dtype == np.float32 and back.shape == depth.shape
    ok = np.isfinite(depth) & (depth > 0)
    np.testing.assert_allclose(back[ok], depth[ok], atol=0.5 / 256 + 1e-6)
    assert np.all(back[~ok] == 0)
    with pytest.raises(ValueError, match="exceeds"):
        write_depth_png(p, np.full((2, 2), 300.0))
    import cv2
    cv2.imwrite(str(tmp_path / "u8.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(KittiFormatError, match="u8.png: depth PNG must be single-channel uint16"):
        read_depth_png(tmp_path / "u8.png")
