"""Adversarial inputs that are finite, well-formed messages and still absurd: each is rejected and counted, and
/diagnostics is never OK while the output is wrong. The shared plausibility checks (semdepth_core.validation),
then the real node over real DDS."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest

from semdepth_core.validation import depth_problem, intrinsics_problem, scale_problem, speed_problem

KITTI_K = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]])


def test_intrinsics_plausibility():
    assert intrinsics_problem(KITTI_K, 1242, 375) is None
    assert intrinsics_problem(KITTI_K * [[0.5], [0.5], [1]], 621, 188) is None
    for fx in (1e-300, 1e-3, 1e300, -721.5):
        K = KITTI_K.copy()
        K[0, 0] = K[1, 1] = fx
        assert "implausible" in intrinsics_problem(K, 1242, 375), fx
    K = KITTI_K.copy()
    K[1, 1] = 100.0
    assert "fy/fx" in intrinsics_problem(K, 1242, 375)
    K = KITTI_K.copy()
    K[0, 2] = 1e6
    assert "principal point" in intrinsics_problem(K, 1242, 375)
    K = KITTI_K.copy()
    K[2, 2] = math.nan
    assert "NaN" in intrinsics_problem(K, 1242, 375)
    assert "not positive" in intrinsics_problem(KITTI_K, 0, 375)


def test_speed_scale_and_depth_plausibility():
    assert speed_problem(0.0) is None and speed_problem(33.0) is None
    for v in (1e30, 101.0, -1.0, math.nan, math.inf):
        assert speed_problem(v) is not None, v
    assert speed_problem(150.0, max_speed=200.0) is None
    for s in (1e308, 1e39, 1e-300, 1e-46, 0.0, math.inf):
        assert scale_problem(s) is not None, s
    assert scale_problem(1.0) is None and scale_problem(37.5) is None
    d = np.full((10, 20), 12.0, np.float32)
    assert depth_problem(d, 0.1, 100.0) is None
    d[:6] = np.nan
    assert "40 %" in depth_problem(d, 0.1, 100.0)
    assert depth_problem(np.full((4, 4), 3.5e29, np.float32), 0.1, 100.0) is not None
    assert depth_problem(np.full((4, 4), 1e-9, np.float32), 0.1, 100.0) is not None


# ----------------------------------------------------------------------------------------- the node
rclpy = pytest.importorskip("rclpy")

from semdepth_ros import conversions as C  # noqa: E402
from semdepth_ros import node as N  # noqa: E402
from test_node import NodeProcess, _reliable_overrides, _wait_serving, checkpoint, kitti_frames, probe  # noqa: E402,F401


def test_scale_value_parameter_rejects_absurd_factors():
    for v in (1e308, 1e39, 1e-300, 1e-46):
        assert "scale.value: scale" in N.check_parameter("scale.value", v), v
    assert N.check_parameter("scale.value", 2.5) is None


@pytest.mark.ros
def test_absurd_camera_info_odometry_and_scale_are_rejected_and_reported(tmp_path, checkpoint, kitti_frames, probe):
    frames, K = kitti_frames
    rgb = frames[0][:128, :416].copy()
    Kc = K.copy()
    node = NodeProcess(tmp_path, checkpoint, ["-p", "diagnostics_period:=0.5", "-p", "error_log_period:=60.0",
                                              "-p", "scale.mode:=odometry"] + _reliable_overrides("depth", "points"))
    try:
        _wait_serving(probe, node)
        probe.warm_up(rgb, Kc, ["depth", "points"], sec=1)
        # fx = fy = 1e-300: finite, positive, and every point would be +-inf; the previous CameraInfo stays
        tiny = Kc.copy()
        tiny[0, 0] = tiny[1, 1] = 1e-300
        probe.send(rgb, 2, tiny)
        probe.wait_output(2)
        cloud = probe.wait_output(2, "points", timeout=10)
        xyz = C.pointcloud2_to_array(cloud)
        pts = np.stack([xyz["x"], xyz["y"], xyz["z"]], -1).reshape(-1, 3)
        assert np.isfinite(pts).any() and not np.isinf(pts).any()
        # 1e30 m/s odometry: rejected, so no scale from it
        from nav_msgs.msg import Odometry

        for sec in (3, 4):
            od = Odometry()
            od.header = probe.header(sec)
            od.twist.twist.linear.x = 1e30
            probe.pub_odom.publish(od)
            probe.send(rgb, sec, Kc)
            probe.wait_output(sec)
        probe.spin_until(lambda: probe.diag().get("bad_odometry") == "2" and probe.diag().get("bad_camera_info") == "1",
                         10, "the rejections counted")
        d = probe.diag()
        assert d["scale.known"] == "False" and d["_level"] != b"\x00"
        assert float(d["scale.value"]) == 1.0  # model units, said so
        log = node.log()
        assert "CameraInfo on /cam/camera_info rejected: fx=1e-300 is implausible" in log
        assert "speed 1e+30 m/s is outside 0..100 m/s" in log
        # absurd scale factors never reach the node's state
        for v in (1e308, 1e-46):
            res = probe.set_params(scale__value=v)
            assert not res[0].successful and "scale.value" in res[0].reason
    finally:
        assert node.stop(signal.SIGINT) == 0


@pytest.mark.ros
def test_no_input_is_a_warning_not_ok(tmp_path, checkpoint, kitti_frames, probe):
    """A subscriber waits and no image arrives (e.g. a best-effort stream whose frames are all lost): WARN."""
    frames, K = kitti_frames
    rgb = frames[0][:128, :416].copy()
    node = NodeProcess(tmp_path, checkpoint, ["-p", "diagnostics_period:=0.5", "-p", "input_timeout:=1.0"]
                       + _reliable_overrides("depth"))
    try:
        _wait_serving(probe, node)
        probe.spin_until(lambda: probe.got["diag"] and "no input" in probe.diag()["_message"], 20, "no-input WARN")
        assert probe.diag()["_level"] == b"\x01"
        probe.warm_up(rgb, K, ["depth"], sec=1)
        seen_ok = False
        for sec in range(2, 60):  # a live 5 Hz stream: no longer "no input"
            probe.send(rgb, sec)
            probe.spin_for(lambda: False, 0.2)
            if "no input" not in probe.diag()["_message"] and int(probe.diag()["frames_processed"]) > 1:
                seen_ok = True
                break
        assert seen_ok, probe.diag()
        probe.spin_until(lambda: "no input" in probe.diag()["_message"], 10, "no-input WARN after the stream stops")
    finally:
        assert node.stop(signal.SIGINT) == 0


def test_training_data_refuses_implausible_intrinsics(tmp_path):
    """The same intrinsics rule guards training: a KITTI calibration or a bag's CameraInfo with fx = 1e-300."""
    import shutil
    from types import SimpleNamespace

    from semdepth_core.data.kitti import KittiCalib, KittiFormatError
    from semdepth_core.paths import kitti_raw_dir

    src = kitti_raw_dir() / "2011_09_26"
    if not (src / "calib_cam_to_cam.txt").is_file():
        pytest.skip("shared KITTI data not available")
    bad = tmp_path / "2011_09_26"
    bad.mkdir()
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        shutil.copy(src / name, bad / name)
    lines = (bad / "calib_cam_to_cam.txt").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("P_rect_02:"):
            v = line.split()[1:]
            v[0] = v[5] = "1e-300"
            lines[i] = "P_rect_02: " + " ".join(v)
    (bad / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiFormatError, match=r"calib_cam_to_cam.txt: P_rect_02 is not a plausible camera .*fx=1e-300"):
        KittiCalib.from_date_dir(bad)
    bag_dataset = pytest.importorskip("semdepth_ros.bag_dataset")
    K = KITTI_K.copy()
    K[0, 0] = K[1, 1] = 1e-300
    info = SimpleNamespace(d=[], k=K.reshape(-1).tolist(), width=1242, height=375, distortion_model="plumb_bob")
    with pytest.raises(bag_dataset.BagDataError, match="not a plausible camera: fx=1e-300"):
        bag_dataset.camera_intrinsics(info, "bag.mcap /camera/camera_info")


@pytest.mark.parametrize("case", ["garbage", "truncated", "empty", "directory", "no_data", "no_split", "bad_size"])
def test_evaluate_gives_one_clear_line_for_bad_inputs(case, tmp_path):
    """training.evaluate on bad checkpoints and arguments: a non-zero exit and one `error:` line, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    good = repo / "semdepth_ros" / "weights" / "default.ckpt"
    ckpt = tmp_path / "bad.ckpt"
    data = str(tmp_path)  # any folder: the checkpoint is checked first
    extra = []
    if case == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    elif case == "truncated":
        ckpt.write_bytes(good.read_bytes()[:1000])
    elif case == "empty":
        ckpt.write_bytes(b"")
    elif case == "directory":
        ckpt = tmp_path
    else:
        ckpt = good
        data = str(tmp_path / "missing") if case == "no_data" else data
        extra = {"no_data": [], "no_split": ["--split", str(tmp_path / "none.txt")],
                 "bad_size": ["--height", "100"]}[case]
    r = subprocess.run([sys.executable, "-m", "training.evaluate", "--checkpoint", str(ckpt), "--data", data, *extra],
                       cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]


def test_input_rate_sees_frames_missing_from_the_stamps():
    from semdepth_ros.runtime import InputRate

    r = InputRate(min_frames=10)
    for i in range(30):  # every frame of a 10 Hz stream
        r.add(i * 100_000_000, i * 0.1)
    e = r.estimate()
    assert e["publisher_hz"] == pytest.approx(10.0) and e["received_fraction"] == pytest.approx(1.0)
    r = InputRate(min_frames=10)
    for k, i in enumerate(i for i in range(90) if i % 3 == 0):  # a third of them arrive
        r.add(i * 100_000_000, k * 0.3)
    e = r.estimate()
    # every third stamp only: the stamps alone cannot tell a 3.3 Hz stream from losses, so it reads 100 %
    assert e["publisher_hz"] == pytest.approx(10 / 3) and e["received_fraction"] == pytest.approx(1.0)
    r = InputRate(min_frames=10)
    kept = [i for i in range(60) if i % 4 in (0, 1)]  # pairs arrive, pairs are lost
    for k, i in enumerate(kept):
        r.add(i * 100_000_000, i * 0.1)
    e = r.estimate()
    assert e["publisher_hz"] == pytest.approx(10.0) and e["received_fraction"] == pytest.approx(0.5, abs=0.03)
    r.add(0, 100.0)  # a restarted stream starts the window over
    assert r.estimate() is None
    r = InputRate(min_frames=10)
    for i in list(range(20)) + list(range(5000, 5012)):  # a jump of the stamps: a new stream, nothing lost
        r.add(i * 100_000_000, i * 0.1)
    assert r.estimate()["received_fraction"] == pytest.approx(1.0)


@pytest.mark.ros
def test_frames_lost_in_transport_are_reported(tmp_path, checkpoint, kitti_frames, probe):
    """Half of a 10 Hz stream's frames never arrive (as with best-effort fragments): WARN with both rates."""
    frames, K = kitti_frames
    rgb = frames[0][:128, :416].copy()
    node = NodeProcess(tmp_path, checkpoint, ["-p", "diagnostics_period:=0.5"] + _reliable_overrides("depth"))
    try:
        _wait_serving(probe, node)
        probe.warm_up(rgb, K, ["depth"], sec=1)
        msg_base = 2_000_000_000
        for i in range(40):
            if i % 4 in (0, 1):  # frames 2 and 3 of every 4 are "lost"
                h = probe.header(0)
                t = msg_base + i * 100_000_000
                h.stamp.sec, h.stamp.nanosec = t // 1_000_000_000, t % 1_000_000_000
                probe.pub_img.publish(C.rgb_to_image_msg(rgb, h))
            probe.spin_for(lambda: False, 0.1)
        probe.spin_until(lambda: "frames are lost in transport" in probe.diag()["_message"], 10, "the loss WARN")
        d = probe.diag()
        assert d["_level"] == b"\x01" and float(d["input.publisher_hz"]) == pytest.approx(10.0, rel=0.05)
        assert float(d["input.received_fraction"]) < 0.6
    finally:
        assert node.stop(signal.SIGINT) == 0
