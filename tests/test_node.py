"""depth_node end to end: real processes, real DDS on localhost, a random ROS domain per test module.

The node runs exactly as the launch file would start it (`python -m semdepth_ros.node --ros-args
--params-file config/depth.yaml -p ... -r ...`); this process publishes real KITTI frames and
checks every output, the bad-input classes, parameter validation, overload behaviour and
shutdown. The model is a small randomly initialised checkpoint (ResNet-18 + ESPNet semantics at
192x64) built with the project's own model code.
"""
from __future__ import annotations

import ast
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from semdepth_ros import conversions as C  # noqa: E402
from semdepth_ros import node as N  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOMAIN = random.randint(1, 200)
NS = "/semdepth_test"
IMG, INFO, ODOM = "/cam/image_raw", "/cam/camera_info", "/cam/odom"
FRAME = "camera_color_left_optical"


# ------------------------------------------------------------------------------- pure parts
def test_parameter_validation_rules():
    assert N.check_parameter("scale.mode", "odometry") is None
    assert "must be one of" in N.check_parameter("scale.mode", "bogus")
    assert "expected float" in N.check_parameter("scale.value", "2")
    assert "outside 0.0001..10000" in N.check_parameter("scale.value", -1.0)
    assert N.check_parameter("scale.value", 2) is None  # ints are fine for doubles
    assert "1..64" in N.check_parameter("points.stride", 0)
    assert "multiple of 32" in N.check_parameter("input_height", 100)
    assert N.check_parameter("input_height", 0) is None
    assert "0..255" in N.check_parameter("points.exclude_labels", [10, 300])
    assert "expected bool" in N.check_parameter("autostart", 1)
    assert N.check_parameter("qos_overrides./x.publisher.depth", 3) is None  # not ours


def test_camera_height_and_ground_check_parameter_validation():
    assert N.check_parameter("scale.mode", "camera_height") is None
    assert N.check_parameter("scale.camera_height", 1.2) is None and N.check_parameter("scale.camera_height", 2) is None
    for name in ("scale.camera_height", "ground_check.camera_height"):
        for bad in (0.0, -1.65, math.nan, math.inf):
            assert N.check_parameter(name, bad) == f"{name}: must be > 0, got {bad!r}"
        assert N.check_parameter(name, "1.65") == f"{name}: expected float, got '1.65'"
    assert N.check_parameter("ground_check.enabled", True) is None
    assert N.check_parameter("ground_check.enabled", 1) == "ground_check.enabled: expected bool, got 1"
    assert N.check_parameter("ground_check.margin", 0.0) is None
    assert N.check_parameter("ground_check.margin", -0.1) == "ground_check.margin: must be >= 0, got -0.1"
    assert N.check_parameter("ground_check.max_below_pixels", 0) is None
    assert (N.check_parameter("ground_check.max_below_pixels", -1)
            == "ground_check.max_below_pixels: must be >= 0, got -1")
    assert "expected int" in N.check_parameter("ground_check.max_below_pixels", 10.5)
    defaults = {p.name: p.default for p in N.PARAMS}
    new = ("scale.camera_height", "ground_check.enabled", "ground_check.margin", "ground_check.max_below_pixels",
           "ground_check.camera_height")
    assert [defaults[k] for k in new] == [1.65, False, 0.5, 10, 1.65]


def test_config_yaml_lists_every_parameter_with_its_default():
    doc = yaml.safe_load((REPO / "config" / "depth.yaml").read_text())
    (key,) = doc
    assert key.endswith("depth_node")

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, prefix + k + ".")
            else:
                yield prefix + k, v

    assert dict(flat(doc[key]["ros__parameters"])) == {p.name: p.default for p in N.PARAMS}


def consts_all(tree) -> dict:
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}


def test_launch_file_runs_the_same_executable_params_and_remaps():
    tree = ast.parse((REPO / "launch" / "depth.launch.py").read_text())
    consts = {k: v for k, v in consts_all(tree).items() if k in ("PACKAGE", "EXECUTABLE", "NODE_NAME")}
    assert consts == {"PACKAGE": "semdepth_ros", "EXECUTABLE": "depth_node", "NODE_NAME": "depth_node"}
    setup = (REPO / "setup.py").read_text()
    assert '"depth_node = semdepth_ros.node:main"' in setup
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    node_call = next(c for c in calls if c.func.id in ("Node", "LifecycleNode"))
    kw = {k.arg: k.value for k in node_call.keywords}
    assert ast.unparse(kw["package"]) == "PACKAGE" and ast.unparse(kw["executable"]) == "EXECUTABLE"
    remaps = [(ast.literal_eval(e.elts[0]), ast.unparse(e.elts[1])) for e in kw["remappings"].elts]
    assert remaps == [("image", "LaunchConfiguration('image')"), ("camera_info", "LaunchConfiguration('camera_info')"),
                      ("odom", "LaunchConfiguration('odom')")]
    assert ast.unparse(kw["parameters"]) == "[LaunchConfiguration('params_file'), overrides]"
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_depth_node")
    body = ast.unparse(fn)
    assert "('checkpoint', 'backend', 'image_transport', 'image_qos')" in body and "'use_sim_time'" in body
    assert "if value:" in body
    # the node process gets the shipped Fast DDS profile unless the user set one or passed fastdds_profile:=""
    assert "PROFILE_ENV not in os.environ" in body and ast.unparse(kw["additional_env"]) == "env"
    assert consts_all(tree)["PROFILE_ENV"] == "FASTDDS_DEFAULT_PROFILES_FILE"
    assert (REPO / "config" / consts_all(tree)["PROFILE"]).is_file() and "config/*.xml" in setup
    args = {ast.literal_eval(c.args[0]): c for c in calls if c.func.id == "DeclareLaunchArgument"}
    assert set(args) == {"namespace", "image", "camera_info", "odom", "checkpoint", "backend", "params_file",
                         "use_sim_time", "image_transport", "image_qos", "fastdds_profile"}
    # no checkpoint argument: the params file's `default`, the shipped weights
    assert ast.literal_eval(next(k.value for k in args["checkpoint"].keywords if k.arg == "default_value")) == ""
    assert ".ckpt" in ast.unparse(args["checkpoint"]) and ".pt)" not in ast.unparse(args["checkpoint"])
    src = ast.unparse(tree)
    assert "get_package_share_directory(PACKAGE), 'config', 'depth.yaml'" in src
    assert "config/*.yaml" in setup and "launch/*.launch.py" in setup  # installed where the launch file looks


def test_mailbox_latest_wins_and_counts_drops():
    mb = N.Mailbox()
    assert mb.get(timeout=0.01) is None
    assert mb.put(1) is False and mb.put(2) is True and mb.put(3) is True
    assert mb.get(timeout=0.01) == 3 and mb.dropped == 2 and mb.get(timeout=0.01) is None


def test_rate_limited_log_reports_suppressed_repeats():
    now = [0.0]
    out = []
    log = N.RateLimitedLog(out.append, period=5.0, clock=lambda: now[0])
    assert log("image", "bad encoding") is True
    now[0] = 1.0
    assert log("image", "bad encoding") is False
    assert log("odom", "nan twist") is True  # another kind is independent
    now[0] = 6.0
    assert log("image", "bad encoding") is True
    assert out == ["bad encoding", "nan twist", "bad encoding [1 more like this in the last 5s]"]
    assert log.counts == {"image": 3, "odom": 1}


def test_nearest_speed():
    s = [(1_000_000_000, 5.0), (1_100_000_000, 6.0)]
    assert N.nearest_speed(s, 1_090_000_000, 0.05) == 6.0
    assert N.nearest_speed(s, 2_000_000_000, 0.05) is None


# ------------------------------------------------------------------------------- processes
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """ResNet-18 + ESPNet at 192x64, random weights."""
    from conftest import TINY_NODE_MODEL, write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", TINY_NODE_MODEL)


@pytest.fixture(scope="module")
def kitti_frames(kitti_drive_dir):
    from semdepth_core.data import kitti

    drive = kitti.KittiDrive(kitti_drive_dir)
    K = drive.calib.K(2)
    return [drive.load_image(f) for f in drive.frames], K


def _env(tmp_path) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_DOMAIN_ID=str(DOMAIN), ROS_LOG_DIR=str(tmp_path / "roslog"), PYTHONUNBUFFERED="1",
                RCUTILS_LOGGING_BUFFERED_STREAM="0", OMP_NUM_THREADS="1")


def _reliable_overrides(*topics_pub) -> list[str]:
    """QoS overrides (the standard qos_overrides parameters) making the image input and the named outputs reliable."""
    args = ["-p", f"qos_overrides.{IMG}.subscription.reliability:=reliable",
            "-p", f"qos_overrides.{INFO}.subscription.reliability:=reliable",
            "-p", f"qos_overrides.{ODOM}.subscription.reliability:=reliable"]
    for t in topics_pub:
        args += ["-p", f"qos_overrides.{NS}/{t}.publisher.reliability:=reliable"]
    return args


class NodeProcess:
    def __init__(self, tmp_path, checkpoint, extra=(), env=None):
        self.log_path = tmp_path / f"node_{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "semdepth_ros.node", "--ros-args", "--params-file", str(REPO / "config/depth.yaml"),
               "-r", f"__ns:={NS}", *(["-p", f"checkpoint:={checkpoint}"] if checkpoint else []), "-p", "backend:=torch",
               "-p", "num_threads:=1", "-p", "diagnostics_period:=0.5",
               "-r", f"image:={IMG}", "-r", f"camera_info:={INFO}", "-r", f"odom:={ODOM}", *extra]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**_env(tmp_path), **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT, timeout=15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"node did not exit within {timeout}s of {sig!r}:\n{self.log()[-3000:]}")
        self._log.close()
        return self.proc.returncode


class Probe:
    """The other side of the node: publishes camera frames, records every output and /diagnostics."""

    def __init__(self, reliable_outputs: bool = True):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN)
        self.node = Node("probe", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_img = self.node.create_publisher(Image, IMG, rel)
        self.pub_info = self.node.create_publisher(CameraInfo, INFO, rel)
        self.pub_odom = self.node.create_publisher(Odometry, ODOM, rel)
        self.got: dict[str, list] = {k: [] for k in N.OUTPUT_TOPICS + ("diag",)}
        out_qos = rel if reliable_outputs else qos_profile_sensor_data
        types = {"depth": Image, "depth/camera_info": CameraInfo, "semantic": Image, "semantic/color": Image,
                 "points": PointCloud2}
        for name, typ in types.items():
            self.node.create_subscription(typ, f"{NS}/{name}", lambda m, k=name: self.got[k].append(m), out_qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.got["diag"].append(m), 10)

    def spin_for(self, cond, timeout: float) -> bool:
        """Spin until cond() holds (True) or timeout seconds pass (cond()'s last value)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.ex.spin_once(timeout_sec=0.05)
        return bool(cond())

    def spin_until(self, cond, timeout: float, what: str = "condition"):
        if not self.spin_for(cond, timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def header(self, sec: int):
        from std_msgs.msg import Header

        h = Header(frame_id=FRAME)
        h.stamp.sec = sec
        return h

    def send(self, rgb, sec: int, K=None, size=None):
        if K is not None:
            w, h = size or (rgb.shape[1], rgb.shape[0])
            self.pub_info.publish(C.make_camera_info(self.header(sec), K, w, h))
            end = time.monotonic() + 0.3  # let the node take the CameraInfo before the image
            while time.monotonic() < end:
                self.ex.spin_once(timeout_sec=0.05)
        self.pub_img.publish(C.rgb_to_image_msg(rgb, self.header(sec)))

    def warm_up(self, rgb, K, topics, sec: int = 1, timeout: float = 60.0):
        """Send frame `sec` until every topic in `topics` has delivered something: the node publishes
        only to matched subscribers, and under load it may see the probe's subscriptions late."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send(rgb, sec, K)
            if self.spin_for(lambda: all(self.outputs_for(t, sec) for t in topics), 2.0):
                return
        missing = [t for t in topics if not self.outputs_for(t, sec)]
        raise AssertionError(f"timed out after {timeout}s of warm-up frames: nothing on {missing}")

    def outputs_for(self, topic: str, sec: int) -> list:
        return [m for m in self.got[topic] if m.header.stamp.sec == sec]

    def wait_output(self, sec: int, topic: str = "depth", timeout: float = 40.0):
        self.spin_until(lambda: self.outputs_for(topic, sec), timeout, f"{topic} for stamp {sec}")
        return self.outputs_for(topic, sec)[-1]

    def diag(self) -> dict:
        st = self.got["diag"][-1].status[0]
        d = {kv.key: kv.value for kv in st.values}
        d["_level"], d["_message"] = st.level, st.message
        return d

    def set_params(self, **values):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        cli = self.node.create_client(SetParameters, f"{NS}/depth_node/set_parameters")
        self.spin_until(cli.service_is_ready, 20, "set_parameters service")
        req = SetParameters.Request()
        req.parameters = [Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()]
        fut = cli.call_async(req)
        self.spin_until(fut.done, 20, "set_parameters response")
        self.node.destroy_client(cli)
        return fut.result().results

    def change_state(self, transition_id: int) -> bool:
        from lifecycle_msgs.srv import ChangeState

        cli = self.node.create_client(ChangeState, f"{NS}/depth_node/change_state")
        self.spin_until(cli.service_is_ready, 20, "change_state service")
        req = ChangeState.Request()
        req.transition.id = transition_id
        fut = cli.call_async(req)
        self.spin_until(fut.done, 20, "change_state response")
        self.node.destroy_client(cli)
        return fut.result().success

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def probe():
    p = Probe()
    yield p
    p.close()


def _wait_serving(probe: Probe, node: NodeProcess, timeout=60.0):
    def ready():
        assert node.proc.poll() is None, f"node exited early:\n{node.log()[-3000:]}"
        return probe.pub_img.get_subscription_count() > 0 and probe.node.count_publishers(f"{NS}/depth") > 0
    probe.spin_until(ready, timeout, "the node to subscribe to the image topic")


@pytest.mark.ros
def test_node_outputs_bad_inputs_parameters_and_sigterm(tmp_path, checkpoint, kitti_frames, probe):
    frames, K = kitti_frames
    # semantics.rate 0: labels computed with every frame, so every output of a frame carries its stamp
    node = NodeProcess(tmp_path, checkpoint, ["-p", "error_log_period:=60.0", "-p", "semantics.rate:=0.0"]
                       + _reliable_overrides("depth", "semantic", "semantic/color", "depth/camera_info", "points"))
    try:
        _wait_serving(probe, node)
        rgb = frames[0]
        H, W = rgb.shape[:2]
        probe.warm_up(rgb, K, N.OUTPUT_TOPICS)
        # ---- a good frame: every output, stamped and framed like the input, at the input size
        probe.send(rgb, 100, K)
        depth_msg = probe.wait_output(100)
        for topic in N.OUTPUT_TOPICS:
            probe.wait_output(100, topic, timeout=10)
        assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("32FC1", W, H)
        assert depth_msg.header.frame_id == FRAME and depth_msg.header.stamp.nanosec == 0
        depth = C.image_msg_to_array(depth_msg)
        assert np.isfinite(depth).all() and depth.min() >= 0.1 - 1e-4 and depth.max() <= 100.0 + 1e-3
        sem = probe.outputs_for("semantic", 100)[-1]
        labels = C.image_msg_to_array(sem)
        assert sem.encoding == "mono8" and labels.shape == (H, W)
        assert set(np.unique(labels)) <= set(range(19)) | {255}
        col = probe.outputs_for("semantic/color", 100)[-1]
        from semdepth_core.data.labels import colorize

        assert col.encoding == "rgb8"
        np.testing.assert_array_equal(C.image_msg_to_rgb(col), colorize(labels))
        info = probe.outputs_for("depth/camera_info", 100)[-1]
        np.testing.assert_allclose(np.array(info.k).reshape(3, 3), K)
        assert (info.width, info.height, info.header.frame_id) == (W, H, FRAME)
        pts = probe.outputs_for("points", 100)[-1]
        assert [f.name for f in pts.fields] == ["x", "y", "z", "rgb", "label"]
        assert (pts.height, pts.width, pts.point_step) == ((H + 1) // 2, (W + 1) // 2, 20)  # stride 2, organised
        arr = C.pointcloud2_to_array(pts)
        z_expect = np.where(labels[::2, ::2] == 10, np.nan, depth[::2, ::2])  # sky (10) excluded by default
        np.testing.assert_allclose(arr["z"], z_expect, rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(arr["label"], labels[::2, ::2])
        np.testing.assert_array_equal(C.unpack_rgb(arr["rgb"].reshape(-1)).reshape(arr.shape + (3,)), rgb[::2, ::2])

        # ---- bad inputs: each kind twice, then a good frame that must still be served
        from sensor_msgs.msg import Image

        def bad_image(kind):
            m = C.rgb_to_image_msg(rgb, probe.header(0))
            if kind == "encoding":
                m.encoding = "yuv422"
            elif kind == "zero":
                m.width, m.height, m.step = 0, 0, 0
                m.data = []
            elif kind == "truncated":
                m.data = m.data[: len(m.data) // 2]
            assert isinstance(m, Image)
            return m

        def diag_count(key):
            return int(probe.diag().get(key, 0)) if probe.got["diag"] else 0

        sec = 200
        for kind, key in (("encoding", "errors.image.encoding"), ("zero", "errors.image.size"),
                          ("truncated", "errors.image.truncated")):
            for i in range(2):  # one at a time: the one-slot mailbox would otherwise keep only the newest
                probe.pub_img.publish(bad_image(kind))
                probe.spin_until(lambda: diag_count(key) == i + 1, 20, f"{key} == {i + 1}")
            sec += 1
            probe.send(rgb, sec, K)
            probe.wait_output(sec)
        # CameraInfo at half resolution: rescaled to the image size (half-pixel rule)
        sec += 1
        half_K = C.scale_K(K, (W, H), (W // 2, H // 2))
        probe.send(rgb, sec, half_K, size=(W // 2, H // 2))
        probe.wait_output(sec)
        info = probe.wait_output(sec, "depth/camera_info", timeout=10)
        np.testing.assert_allclose(np.array(info.k).reshape(3, 3), C.scale_K(half_K, (W // 2, H // 2), (W, H)))
        assert (info.width, info.height) == (W, H)
        # CameraInfo without intrinsics: depth still served, no cloud for that frame
        sec += 1
        probe.send(rgb, sec, np.zeros((3, 3)))
        probe.wait_output(sec)
        assert not np.any(probe.wait_output(sec, "depth/camera_info", timeout=10).k)
        # odometry with NaN twist (twice)
        from nav_msgs.msg import Odometry

        for _ in range(2):
            od = Odometry()
            od.header = probe.header(sec)
            od.twist.twist.linear.x = math.nan
            probe.pub_odom.publish(od)
        sec += 1
        probe.send(rgb, sec, K)
        probe.wait_output(sec)
        probe.wait_output(sec, "points", timeout=10)
        log = node.log()
        for needle in ("unsupported image encoding 'yuv422'", "image has zero size (0x0)",
                       "truncated image data", "rescaling the intrinsics", "no valid intrinsics",
                       "speed nan is not a finite number"):
            assert log.count(needle) == 1, (needle, log[-4000:])
        # wait for a /diagnostics message published after the odometry was rejected (an earlier one may
        # already show the bad images and frames)
        probe.spin_until(lambda: probe.got["diag"] and probe.diag()["bad_images"] == "6"
                         and int(probe.diag()["frames_processed"]) >= 7 and probe.diag().get("errors.odom") == "2",
                         10, "diagnostics")
        d = probe.diag()
        assert (d["errors.image.encoding"], d["errors.image.size"], d["errors.image.truncated"]) == ("2", "2", "2")
        assert d["errors.odom"] == "2" and d["errors.camera_info"] == "1" and d["scale.mode"] == "none"
        assert int(d["frames_processed"]) >= 7 and float(d["time_ms.network"]) > 0 and "time_ms.publish" in d
        assert d["state"] == "active" and d["backend"] == "torch" and d["network_input"] == "192x64"

        # ---- parameters: rejected with a reason, accepted ones take effect
        res = probe.set_params(**{"scale__mode": "bogus"})
        assert not res[0].successful and "must be one of" in res[0].reason
        res = probe.set_params(**{"points__stride": 0})
        assert not res[0].successful and "1..64" in res[0].reason
        res = probe.set_params(checkpoint="/other.pt")
        assert not res[0].successful and "read-only" in res[0].reason
        res = probe.set_params(**{"scale__mode": "fixed", "scale__value": 2.5})
        assert all(r.successful for r in res)
        sec += 1
        probe.send(rgb, sec, K)
        scaled = C.image_msg_to_array(probe.wait_output(sec))
        np.testing.assert_allclose(scaled, 2.5 * depth, rtol=1e-5)
        probe.spin_until(lambda: probe.diag().get("scale.value") == "2.5", 10, "scale in diagnostics")
        assert probe.diag()["scale.confidence"] == "1.000"

        # ---- lifecycle: deactivate -> nothing is served; activate -> served again
        from lifecycle_msgs.msg import Transition

        assert probe.change_state(Transition.TRANSITION_DEACTIVATE)
        probe.spin_until(lambda: probe.diag()["state"] == "inactive", 10, "inactive")
        sec += 1
        probe.send(rgb, sec, K)
        with pytest.raises(AssertionError, match="timed out"):
            probe.wait_output(sec, timeout=2.0)
        assert probe.change_state(Transition.TRANSITION_ACTIVATE)
        sec += 1
        probe.send(rgb, sec, K)
        probe.wait_output(sec)

        # ---- nobody listening -> no inference
        for sub in list(probe.node.subscriptions):
            if sub.topic_name.startswith(NS):
                probe.node.destroy_subscription(sub)
        probe.spin_until(lambda: probe.node.count_subscribers(f"{NS}/depth") == 0, 10, "unsubscribed")
        before = int(probe.diag()["frames_skipped_no_subscribers"])
        probe.send(rgb, sec + 1, K)
        probe.spin_until(lambda: int(probe.diag()["frames_skipped_no_subscribers"]) == before + 1, 10,
                         "a frame skipped for lack of subscribers")
        assert node.proc.poll() is None
    finally:
        rc = node.stop(signal.SIGTERM)
    assert rc == 0, node.log()[-3000:]
    assert "Traceback" not in node.log()


@pytest.mark.ros
def test_async_semantics_keep_depth_at_frame_rate_with_the_latest_labels(tmp_path, checkpoint, kitti_frames, probe):
    """semantics.rate > 0 (the default): depth and points for every frame, the semantic net on its own thread
    at most `rate` times a second; each mask carries the stamp of the frame it was computed from and equals that
    frame's labels; the cloud carries the latest mask (all 255 before the first one) with the same fields."""
    from semdepth_core.infer import load_predictor

    frames, K = kitti_frames
    ref = load_predictor(checkpoint, backend="torch")
    node = NodeProcess(tmp_path, checkpoint, ["-p", "semantics.rate:=2.0"]
                       + _reliable_overrides("depth", "semantic", "points"))
    try:
        _wait_serving(probe, node)
        probe.warm_up(frames[0], K, ("depth", "points"))
        sent = {}
        t0 = time.monotonic()
        for i in range(12):  # faster than 2 Hz: not every frame can get labels
            sec = 500 + i
            sent[sec] = frames[i % 2]
            probe.send(sent[sec], sec, K)
            probe.wait_output(sec, "points")
        elapsed = time.monotonic() - t0
        probe.spin_until(lambda: probe.got["semantic"], 20, "a semantic mask")
        probe.spin_for(lambda: False, 1.5)  # the mask of a late frame may still be on its way
        masks = [m for m in probe.got["semantic"] if m.header.stamp.sec in sent]
        assert masks and len(masks) <= 2.0 * elapsed + 2 and len(masks) < len(sent), (len(masks), elapsed)
        for m in masks:  # the mask of the frame it names, published with that frame's stamp
            expect = ref.predict(sent[m.header.stamp.sec]).labels
            np.testing.assert_array_equal(C.image_msg_to_array(m), expect)
        known = {m.header.stamp.sec: C.image_msg_to_array(m)[::2, ::2] for m in probe.got["semantic"]}
        blank = np.full_like(next(iter(known.values())), 255)
        for sec in sent:
            pts = probe.outputs_for("points", sec)[-1]
            assert [f.name for f in pts.fields] == ["x", "y", "z", "rgb", "label"]
            lab = C.pointcloud2_to_array(pts)["label"]
            assert np.array_equal(lab, blank) or any(np.array_equal(lab, v) for s, v in known.items() if s <= sec), sec
        probe.spin_until(lambda: probe.diag().get("semantics.mode") == "async"
                         and int(probe.diag().get("semantic_frames", 0)) >= len(masks), 10, "async diagnostics")
        d = probe.diag()
        assert float(d["semantics.label_age_ms"]) >= 0 and "time_ms.semantics" in d
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0 and "Traceback" not in node.log()


@pytest.mark.ros
def test_model_load_failure_keeps_node_up_with_error_diagnostics(tmp_path, probe, kitti_frames):
    frames, K = kitti_frames
    node = NodeProcess(tmp_path, tmp_path / "missing.pt")
    try:
        probe.spin_until(lambda: probe.got["diag"] and probe.diag()["_level"] == b"\x02", 60, "ERROR diagnostics")
        d = probe.diag()
        assert "model failed to load" in d["_message"] and "checkpoint not found" in d["_message"]
        assert d["state"] == "unconfigured"
        probe.send(frames[0][:96, :320].copy(), 5, K)
        n_diag = len(probe.got["diag"])
        probe.spin_until(lambda: len(probe.got["diag"]) >= n_diag + 3, 20, "diagnostics to keep coming")
        assert not probe.got["depth"] and node.proc.poll() is None
        assert node.log().count("checkpoint not found") == 2  # the load error, and the 'not serving' line
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0 and "Traceback" not in node.log()


@pytest.mark.ros
def test_overload_drops_old_frames_and_serves_the_latest(tmp_path, checkpoint, kitti_frames, probe):
    """30 Hz input, inference at 640x192 (slower than 33 ms): frames are dropped, the last one is served."""
    frames, K = kitti_frames
    node = NodeProcess(tmp_path, checkpoint, ["-p", "input_height:=192", "-p", "input_width:=640"]
                       + _reliable_overrides("depth"))
    try:
        _wait_serving(probe, node)
        small = [np.ascontiguousarray(f[100:292, 300:940]) for f in frames]  # 640x192 crops
        probe.send(small[0], 1000)
        probe.wait_output(1000)  # warm-up
        n = 45
        t0 = time.monotonic()
        for i in range(n):
            probe.send(small[i % len(small)], 2000 + i)
            probe.spin_until(lambda: time.monotonic() - t0 >= (i + 1) / 30.0, 1.0)
        probe.wait_output(2000 + n - 1, timeout=60)
        def settled():
            d = probe.diag()
            done = sum(int(d[k]) for k in ("frames_processed", "frames_dropped", "frames_skipped_no_subscribers",
                                           "failed_frames", "bad_images"))
            return int(d["frames_received"]) == n + 1 and done == n + 1

        probe.spin_until(settled, 10, "diagnostics to account for every frame")
        stamps = [m.header.stamp.sec for m in probe.got["depth"] if m.header.stamp.sec >= 2000]
        d = probe.diag()
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0
    received, processed, dropped = int(d["frames_received"]), int(d["frames_processed"]), int(d["frames_dropped"])
    assert received == n + 1, d
    other = int(d["frames_skipped_no_subscribers"]) + int(d["failed_frames"]) + int(d["bad_images"])
    assert dropped > 0 and processed + dropped + other == received, d
    assert len(stamps) == processed - 1 < n, (stamps, d)
    assert stamps == sorted(stamps) and stamps[-1] == 2000 + n - 1  # latest frame wins, never a stale one
    assert max(np.diff(stamps)) > 1  # frames in between were skipped


@pytest.mark.ros
@pytest.mark.slow
def test_odometry_scale_matches_pose_network_and_holds_at_standstill(tmp_path, checkpoint, kitti_frames, probe):
    """scale = |v| dt / |t_hat| with t_hat from the same pose network, rolling median; held when still."""
    from nav_msgs.msg import Odometry

    from semdepth_core.infer import ScaleEstimator, load_predictor

    frames, K = kitti_frames
    node = NodeProcess(tmp_path, checkpoint, ["-p", "scale.mode:=odometry", "-p", "scale.outlier_ratio:=100.0"]
                       + _reliable_overrides("depth"))
    pred = load_predictor(checkpoint, backend="torch")
    est = ScaleEstimator(window=30, min_speed=1.0, outlier_ratio=100.0)
    try:
        _wait_serving(probe, node)
        speed, dt_ns = 12.0, 100_000_000
        expected = None
        for k in range(len(frames)):
            t = 50 * 1_000_000_000 + k * dt_ns
            od = Odometry()
            od.header = probe.header(0)
            od.header.stamp.sec, od.header.stamp.nanosec = divmod(t, 1_000_000_000)
            od.twist.twist.linear.x = speed
            probe.pub_odom.publish(od)
            probe.ex.spin_once(timeout_sec=0.2)
            hdr = probe.header(0)
            hdr.stamp.sec, hdr.stamp.nanosec = divmod(t, 1_000_000_000)
            probe.pub_info.publish(C.make_camera_info(hdr, K, frames[k].shape[1], frames[k].shape[0]))
            probe.pub_img.publish(C.rgb_to_image_msg(frames[k], hdr))
            probe.spin_until(lambda: any(rp_stamp(m) == t for m in probe.got["depth"]), 40, f"depth {k}")
            if k > 0:
                T = pred.relative_pose(frames[k - 1], frames[k])
                expected = est.update(T[:3, 3], speed, dt_ns * 1e-9)
        last = [m for m in probe.got["depth"] if rp_stamp(m) == t][-1]
        probe.spin_until(lambda: probe.diag().get("scale.samples") == str(len(frames) - 1), 10, "scale samples")
        d = probe.diag()
        assert float(d["scale.value"]) == pytest.approx(expected, rel=1e-3)
        assert d["scale.known"] == "True" and d["scale.holding"] == "False"
        raw = pred.predict(frames[-1]).depth
        np.testing.assert_allclose(C.image_msg_to_array(last), raw * expected, rtol=2e-3)
        # slowing down, then standstill (speed 0 at both ends of a frame pair) -> the estimate is held
        T = pred.relative_pose(frames[-1], frames[0])
        expected = est.update(T[:3, 3], 0.5 * (speed + 0.0), dt_ns * 1e-9)  # first pair: 12 m/s -> 0 m/s
        for _ in range(2):
            t += dt_ns
            od.header.stamp.sec, od.header.stamp.nanosec = divmod(t, 1_000_000_000)
            od.twist.twist.linear.x = 0.0
            probe.pub_odom.publish(od)
            probe.ex.spin_once(timeout_sec=0.2)
            hdr.stamp.sec, hdr.stamp.nanosec = divmod(t, 1_000_000_000)
            probe.pub_img.publish(C.rgb_to_image_msg(frames[0], hdr))
            probe.spin_until(lambda: any(rp_stamp(m) == t for m in probe.got["depth"]), 40, "standstill depth")
        probe.spin_until(lambda: probe.diag().get("scale.holding") == "True", 10, "holding")
        assert float(probe.diag()["scale.value"]) == pytest.approx(expected, rel=1e-3)
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0


@pytest.mark.ros
def test_camera_height_scale_and_ground_check(tmp_path, checkpoint, kitti_frames, probe):
    """scale.mode camera_height: model units until CameraInfo gives a ground fit, then depth x the frame's
    camera-height scale; ground_check: counts on /diagnostics, WARN for a flagged frame, params validated."""
    from semdepth_core.infer import load_predictor
    from semdepth_core.geometry.ground_check import frame_camera_height_scale, infinite_depth_check
    from semdepth_core.infer.processing import inv_depth_to_depth

    frames, K = kitti_frames
    rgb = frames[0]
    H, W = rgb.shape[:2]
    # what the node must compute: network-resolution depth, K rescaled to it (half-pixel rule)
    pred = load_predictor(checkpoint, backend="torch")
    raw = pred.predict(rgb)
    d_net = inv_depth_to_depth(raw.inv_depth, pred.min_depth, pred.max_depth)
    K_net = C.scale_K(K, (W, H), (d_net.shape[1], d_net.shape[0]))
    s = frame_camera_height_scale(d_net, K_net, 1.2)
    # margin 2 cm: the random network's depth is ~constant, so the fitted "ground" has pixels below it
    hole = infinite_depth_check(d_net, K_net, margin=0.02, margin_slope=0.0, max_below_pixels=10, metric_scale=s)
    assert s is not None and hole.checked and hole.count > 20, (s, hole.count)  # premise of the checks below
    node = NodeProcess(tmp_path, checkpoint, ["-p", "scale.mode:=camera_height", "-p", "scale.camera_height:=1.2",
                                              "-p", "ground_check.enabled:=true", "-p", "ground_check.margin:=0.02",
                                              "-p", "ground_check.margin_slope:=0.0",
                                              "-p", "error_log_period:=60.0", "-p", "input_timeout:=60.0"]
                       + _reliable_overrides("depth"))
    try:
        _wait_serving(probe, node)
        # no CameraInfo yet: no intrinsics, no estimate -> model units, said so; the frame is unchecked
        probe.send(rgb, 10)
        np.testing.assert_allclose(C.image_msg_to_array(probe.wait_output(10)), raw.depth, rtol=2e-3)
        probe.spin_until(lambda: probe.got["diag"] and probe.diag().get("ground_check.frames_unchecked") == "1",
                         10, "an unchecked frame")
        d = probe.diag()
        assert d["scale.mode"] == "camera_height" and d["scale.known"] == "False" and d["scale.holding"] == "True"
        assert "metric scale not known yet" in d["_message"] and d["ground_check.last_count"] == "none"
        # with CameraInfo: depth x the frame's camera-height scale; the check counts the pixels below the ground
        probe.send(rgb, 11, K)
        np.testing.assert_allclose(C.image_msg_to_array(probe.wait_output(11)), raw.depth * s, rtol=2e-3)
        probe.spin_until(lambda: probe.diag().get("ground_check.frames_checked") == "1", 10, "a checked frame")
        d = probe.diag()
        assert d["scale.known"] == "True" and float(d["scale.value"]) == pytest.approx(s, rel=2e-3)
        assert d["scale.samples"] == "1" and d["scale.holding"] == "False" and d["scale.no_ground_fit"] == "1"
        assert int(d["ground_check.last_count"]) == pytest.approx(hole.count, rel=0.05)
        assert d["ground_check.frames_flagged"] == "1" and float(d["time_ms.ground"]) > 0
        assert d["_level"] == b"\x01" and "infinite-depth hole: " in d["_message"]
        assert "pixels below the ground plane" in d["_message"]
        # the new parameters are validated at run time, with the parameter named in the reason
        res = probe.set_params(**{"ground_check__margin": -1.0})
        assert not res[0].successful and res[0].reason == "ground_check.margin: must be >= 0, got -1.0"
        res = probe.set_params(**{"scale__camera_height": 0.0})
        assert not res[0].successful and "scale.camera_height: must be > 0" in res[0].reason
        res = probe.set_params(**{"ground_check__max_below_pixels": -3})
        assert not res[0].successful and "ground_check.max_below_pixels: must be >= 0" in res[0].reason
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0 and "Traceback" not in node.log()


def rp_stamp(m) -> int:
    return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec


@pytest.mark.ros
def test_replay_evaluate_scores_node_output_on_real_kitti(tmp_path, checkpoint, kitti_drive_dir):
    """kitti_to_bag -> semdepth_replay --evaluate <-> depth_node: every frame scored against the Velodyne."""
    import json

    from semdepth_ros import kitti_to_bag as k2b

    bag = tmp_path / "bag"
    k2b.convert(kitti_drive_dir, bag, storage="mcap", log=lambda m: None)
    node_args = [sys.executable, "-m", "semdepth_ros.node", "--ros-args", "--params-file", str(REPO / "config/depth.yaml"),
                 "-r", "__ns:=/front",  # as `ros2 launch ... namespace:=front`: --evaluate must follow it
                 "-p", f"checkpoint:={checkpoint}", "-p", "backend:=torch", "-p", "num_threads:=1",
                 "-r", f"image:={k2b.TOPIC_IMAGE}", "-r", f"camera_info:={k2b.TOPIC_CAMERA_INFO}",
                 "-r", f"odom:={k2b.TOPIC_ODOM}",
                 "-p", f"qos_overrides.{k2b.TOPIC_IMAGE}.subscription.reliability:=reliable",
                 "-p", "qos_overrides./front/depth.publisher.reliability:=reliable"]
    env = _env(tmp_path)
    env["ROS_DOMAIN_ID"] = str((DOMAIN % 200) + 1)
    log = open(tmp_path / "node.log", "w")
    nodep = subprocess.Popen(node_args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        out = tmp_path / "eval.json"
        r = subprocess.run([sys.executable, "-m", "semdepth_ros.replay", str(bag), "--rate", "0.5", "--evaluate",
                            "--namespace", "front",
                            "--depth-reliable", "--wait-for", k2b.TOPIC_IMAGE, "--eval-wait", "20",
                            "--eval-out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        s = json.loads(out.read_text())
        assert s["frames"] >= 7 and s["unmatched"] == 0, s  # the one-slot mailbox may drop one
        assert 0 < s["median_scaled"]["abs_rel"] < 1.0 and 0 <= s["median_scaled"]["a1"] <= 1
        assert "eval: scoring /front/depth" in r.stdout
        assert "eval summary:" in r.stdout and all(f["gt_pixels"] > 10_000 for f in s["per_frame"])
    finally:
        nodep.send_signal(signal.SIGINT)
        nodep.wait(timeout=20)
        log.close()


@pytest.mark.ros
def test_model_scale_is_checked_against_the_camera_height(tmp_path, kitti_frames, probe):
    """scale.mode model: /diagnostics carries the camera height the published depth implies, a confidence
    from that evidence (0 before any), and goes WARN when it is off from scale.camera_height by more than
    scale.check_factor."""
    from conftest import TINY_NODE_MODEL, write_test_checkpoint
    from semdepth_core.infer import load_predictor
    from semdepth_core.geometry.ground_check import frame_camera_height_scale
    from semdepth_core.infer.processing import inv_depth_to_depth

    metric = {**TINY_NODE_MODEL, "loss": {"velocity_weight": 0.1}}  # a checkpoint that claims metric depth
    ckpt = write_test_checkpoint(tmp_path / "metric.ckpt", metric)
    frames, K = kitti_frames
    rgb = frames[0]
    H, W = rgb.shape[:2]
    pred = load_predictor(ckpt, backend="torch")
    assert pred.is_metric
    raw = pred.predict(rgb)
    d_net = inv_depth_to_depth(raw.inv_depth, pred.min_depth, pred.max_depth)
    s = frame_camera_height_scale(d_net, C.scale_K(K, (W, H), (d_net.shape[1], d_net.shape[0])), 1.0)
    assert s is not None  # premise: the random network's depth has a ground fit
    implied = 1.0 / s  # the camera height this depth implies
    node = NodeProcess(tmp_path, ckpt, ["-p", "scale.mode:=model", "-p", f"scale.camera_height:={implied}",
                                        "-p", "scale.window:=1", "-p", "scale.check_period:=0.0",
                                        "-p", "error_log_period:=60.0", "-p", "input_timeout:=60.0"]
                       + _reliable_overrides("depth"))
    try:
        _wait_serving(probe, node)
        probe.send(rgb, 20)  # no CameraInfo: no evidence yet, so no confidence
        np.testing.assert_allclose(C.image_msg_to_array(probe.wait_output(20)), raw.depth, rtol=2e-3)
        probe.spin_until(lambda: probe.got["diag"] and probe.diag().get("scale.check.frames") == "0", 10, "diagnostics")
        d = probe.diag()
        assert d["scale.known"] == "True" and d["scale.confidence"] == "0.000"
        assert d["scale.check.implied_camera_height"] == "none" and d["scale.check.agrees"] == "unknown"
        probe.send(rgb, 21, K)  # agrees: the configured height is the implied one
        probe.wait_output(21)
        probe.spin_until(lambda: probe.diag().get("scale.check.ground_fits") == "1", 10, "a checked frame")
        d = probe.diag()
        assert float(d["scale.check.implied_camera_height"]) == pytest.approx(implied, rel=2e-3)
        assert d["scale.check.agrees"] == "True" and float(d["scale.confidence"]) > 0.99
        # OK once the first frame's "no CameraInfo" warning has aged out
        probe.spin_until(lambda: probe.diag()["_level"] == b"\x00", 10, "OK diagnostics")
        # the same depth against a camera 3x higher: the model's scale is refuted
        assert probe.set_params(**{"scale__camera_height": 3.0 * implied})[0].successful
        probe.send(rgb, 22, K)
        probe.wait_output(22)
        probe.spin_until(lambda: probe.diag().get("scale.check.agrees") == "False", 10, "the disagreement")
        d = probe.diag()
        assert d["scale.confidence"] == "0.000" and d["_level"] == b"\x01"
        assert "model scale disagrees with the camera height" in d["_message"]
        res = probe.set_params(**{"scale__check_factor": 1.0})
        assert not res[0].successful and "scale.check_factor: must be in (1, 100]" in res[0].reason
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0 and "Traceback" not in node.log()
