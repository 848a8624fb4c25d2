"""What a robot user meets first with `ros2 launch semdepth_ros depth.launch.py`: the shipped weights without any
argument (also from an installed share/), compressed camera input, the image QoS against best-effort drivers, and
a clean exit on repeated SIGINT / SIGTERM. Real processes over real DDS on localhost, like tests/test_node.py."""
from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from semdepth_ros import conversions as C  # noqa: E402
from semdepth_ros import params as P  # noqa: E402
from test_node import (  # noqa: E402,F401 - fixtures used by name
    IMG,
    NS,
    NodeProcess,
    _wait_serving,
    checkpoint,
    kitti_frames,
    probe,
)

REPO = Path(__file__).resolve().parent.parent
OUT = [a for t in ("depth",) for a in ("-p", f"qos_overrides.{NS}/{t}.publisher.reliability:=reliable")]
PROFILE = {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_large_images.xml")}  # as the launch file


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------- the shipped weights
def test_default_checkpoint_resolves_after_an_install(tmp_path):
    """colcon's ament_python install puts data_files under <prefix>/share; the node's `default` finds them there
    through the ament index, and falls back to the package's own copy without one."""
    prefix = tmp_path / "install"
    r = subprocess.run([sys.executable, "setup.py", "-q", "install_data", "--install-dir", str(prefix)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    share = prefix / "share" / "semdepth_ros"
    for rel in ("weights/default.ckpt", "weights/LICENSE-weights.md", "config/depth.yaml",
                "config/fastdds_large_images.xml", "launch/depth.launch.py"):
        assert (share / rel).is_file(), rel
    assert (prefix / "share/ament_index/resource_index/packages/semdepth_ros").is_file()
    probe_code = "from semdepth_ros.params import resolve_checkpoint; print(resolve_checkpoint('default'))"

    def resolved(ament_prefix: str | None) -> Path:
        import os

        env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
        env["PYTHONPATH"] = str(REPO)
        if ament_prefix is not None:
            env["AMENT_PREFIX_PATH"] = ament_prefix
        out = subprocess.run([sys.executable, "-c", probe_code], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return Path(out.stdout.strip())

    installed = resolved(str(prefix))
    assert installed == share / "weights" / "default.ckpt"
    assert _sha(installed) == _sha(REPO / "semdepth_ros/weights/default.ckpt")
    assert resolved(None) == REPO / "semdepth_ros" / "weights" / "default.ckpt"
    (share / "weights" / "default.ckpt").unlink()  # a broken install: the package copy still serves
    assert resolved(str(prefix)) == REPO / "semdepth_ros" / "weights" / "default.ckpt"


def test_checkpoint_parameter_defaults_to_the_shipped_weights():
    assert P.PARAM_BY_NAME["checkpoint"].default == P.DEFAULT_CHECKPOINT == "default"
    with pytest.raises(ValueError, match="'checkpoint' is empty"):
        P.resolve_checkpoint("")
    assert P.resolve_checkpoint("~/m.ckpt") == Path("~/m.ckpt").expanduser()


@pytest.mark.ros
def test_node_without_a_checkpoint_argument_serves_the_shipped_weights(tmp_path, kitti_frames, probe):
    frames, K = kitti_frames
    node = NodeProcess(tmp_path, None, extra=OUT, env=PROFILE)
    try:
        _wait_serving(probe, node, timeout=120)
        probe.warm_up(frames[0], K, ["depth"], sec=1, timeout=120)
        depth = C.image_msg_to_array(probe.outputs_for("depth", 1)[-1])
        assert depth.shape == frames[0].shape[:2]
        assert np.isfinite(depth).mean() > 0.9 and 1.0 < np.nanmedian(depth) < 80.0  # metres, a street
        probe.spin_until(lambda: probe.diag().get("state") == "active", 10, "active diagnostics")
        d = probe.diag()
        assert d["semantics"] == "True" and d["network_input"] == "416x128"  # KITTI aspect at the trained size
        assert "semdepth_ros/weights/default.ckpt" in node.log()
    finally:
        assert node.stop() == 0


# ---------------------------------------------------------------------------------- compressed input
def test_compressed_image_round_trip_and_bad_formats():
    pytest.importorskip("sensor_msgs.msg")
    yy, xx = np.mgrid[0:96, 0:160]
    rgb = np.stack([xx * 255 // 159, yy * 255 // 95, 255 - xx * 255 // 159], -1).astype(np.uint8)  # distinct channels
    png = C.rgb_to_compressed_image_msg(rgb, fmt="png")
    assert png.format == "bgr8; png compressed bgr8"
    assert np.array_equal(C.compressed_image_msg_to_rgb(png), rgb)  # lossless, and RGB order survives
    jpg = C.rgb_to_compressed_image_msg(rgb, fmt="jpeg", quality=95)
    assert np.abs(C.compressed_image_msg_to_rgb(jpg).astype(int) - rgb).mean() < 3
    import cv2

    grey = rgb[..., 1].copy()
    ok, enc = cv2.imencode(".png", grey)
    png.format, png.data = "mono8; png compressed mono8", C.to_byte_array(enc.reshape(-1))
    assert np.array_equal(C.compressed_image_msg_to_rgb(png), np.repeat(grey[..., None], 3, 2))
    for fmt, kind in (("compressedDepth png", "encoding"), ("tiff", "encoding")):
        png.format = fmt
        with pytest.raises(C.ImageConversionError, match=fmt.split()[0]) as e:
            C.compressed_image_msg_to_rgb(png)
        assert e.value.kind == kind
    jpg.data = C.to_byte_array(np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8))
    with pytest.raises(C.ImageConversionError, match="does not decode"):
        C.compressed_image_msg_to_rgb(jpg)


@pytest.mark.ros
def test_compressed_input_over_dds_follows_the_image_transport_topic(tmp_path, checkpoint, kitti_frames, probe):
    """image_transport:=compressed with image:=/cam/image_raw listens on /cam/image_raw/compressed (jpeg and png);
    a frame that does not decode is counted and the node keeps serving."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    frames, K = kitti_frames
    pub = probe.node.create_publisher(CompressedImage, IMG + "/compressed",
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node = NodeProcess(tmp_path, checkpoint, extra=["-p", "image_transport:=compressed", *OUT],
                       env=PROFILE)
    try:
        probe.spin_until(lambda: pub.get_subscription_count() > 0, 60, "the node to subscribe to .../compressed")
        assert probe.pub_img.get_subscription_count() == 0  # the raw topic is not listened to
        rgb = frames[0]

        def send(sec, fmt):
            probe.pub_info.publish(C.make_camera_info(probe.header(sec), K, rgb.shape[1], rgb.shape[0]))
            probe.spin_for(lambda: False, 0.2)
            pub.publish(C.rgb_to_compressed_image_msg(rgb, probe.header(sec), fmt=fmt))

        end = time.monotonic() + 60
        while not probe.outputs_for("depth", 1) and time.monotonic() < end:  # discovery of the outputs
            send(1, "jpeg")
            probe.spin_for(lambda: bool(probe.outputs_for("depth", 1)), 2.0)
        d1 = C.image_msg_to_array(probe.wait_output(1))
        assert d1.shape == rgb.shape[:2] and probe.outputs_for("depth", 1)[-1].header.frame_id == "camera_color_left_optical"
        bad = CompressedImage(header=probe.header(2), format="jpeg")
        bad.data = C.to_byte_array(np.frombuffer(b"\xff\xd8garbage", np.uint8))
        pub.publish(bad)
        probe.spin_for(lambda: False, 1.0)
        send(3, "png")
        d3 = C.image_msg_to_array(probe.wait_output(3))
        assert not probe.outputs_for("depth", 2)
        # the same frame through png and jpeg: nearly the same depth
        ok = np.isfinite(d1) & np.isfinite(d3)
        assert ok.mean() > 0.9 and np.median(np.abs(d1[ok] - d3[ok]) / d3[ok]) < 0.05
        probe.spin_until(lambda: probe.diag().get("bad_images") == "1", 10, "the bad frame counted")
        d = probe.diag()
        assert d["image_topic"] == IMG + "/compressed" and "does not decode" in node.log()
    finally:
        assert node.stop() == 0


# ------------------------------------------------------------------------------------------ image QoS
@pytest.mark.ros
def test_auto_image_qos_follows_a_best_effort_publisher_that_comes_later(tmp_path, checkpoint, kitti_frames, probe):
    """image_qos auto subscribes reliable while the publishers are (the probe's), and switches to best effort when a
    best-effort camera driver shows up later, instead of receiving nothing from it."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    frames, K = kitti_frames
    rgb = frames[0][:128, :416].copy()
    node = NodeProcess(tmp_path, checkpoint, extra=OUT, env=PROFILE)
    try:
        _wait_serving(probe, node)
        probe.warm_up(rgb, K, ["depth"], sec=1)
        assert probe.diag()["image_qos"] == "auto"
        be = probe.node.create_publisher(Image, IMG, qos_profile_sensor_data)  # a sensor-data camera driver
        end = time.monotonic() + 60
        while not probe.outputs_for("depth", 2) and time.monotonic() < end:
            be.publish(C.rgb_to_image_msg(rgb, probe.header(2)))
            probe.spin_for(lambda: bool(probe.outputs_for("depth", 2)), 1.0)
        assert probe.outputs_for("depth", 2), f"nothing from the best-effort publisher:\n{node.log()[-2000:]}"
        probe.spin_until(lambda: probe.diag().get("image_qos") == "best_effort (fallback)", 10, "fallback in diag")
        assert "switching the image subscription to best effort" in node.log()
        probe.send(rgb, 3, K)  # the reliable publisher is still heard
        probe.wait_output(3)
    finally:
        assert node.stop() == 0


# ------------------------------------------------------------------------------------------- shutdown
@pytest.mark.ros
@pytest.mark.parametrize("signals", [("SIGINT",), ("SIGINT", "SIGINT"), ("SIGTERM", "SIGTERM"),
                                     ("SIGINT", "SIGTERM", "SIGINT")])
def test_repeated_signals_while_serving_exit_cleanly(signals, tmp_path, checkpoint, kitti_frames, probe):
    """Ctrl-C in a `ros2 launch` terminal reaches the node twice (the terminal's and launch's own SIGINT); launch
    escalates to SIGTERM. Every combination, while frames are in flight, exits 0 without an abort."""
    frames, K = kitti_frames
    rgb = frames[0][:128, :416].copy()
    node = NodeProcess(tmp_path, checkpoint, extra=OUT)
    try:
        _wait_serving(probe, node)
        probe.warm_up(rgb, K, ["depth"], sec=1)
        for sec in range(2, 6):  # keep the worker busy
            probe.send(rgb, sec)
        for name in signals:
            node.proc.send_signal(getattr(signal, name))
            time.sleep(0.05)
        rc = node.stop(timeout=20)
        log = node.log()
        assert rc == 0, log[-3000:]
        assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
        # the worker stops before the context goes: no frame dies publishing into a shut-down context
        assert "frame processing failed" not in log and "context is invalid" not in log, log[-3000:]
        assert f"{signals[0]}: shutting down" in log
    finally:
        if node.proc.poll() is None:
            node.proc.kill()


@pytest.mark.ros
def test_signals_during_start_up_exit_cleanly(tmp_path, checkpoint, probe):
    """Two SIGINTs while the node is loading its model: it stops after the load, status 0, no traceback."""
    node = NodeProcess(tmp_path, checkpoint)
    try:
        probe.spin_until(lambda: any(n == "depth_node" for n in probe.node.get_node_names()), 60, "the node to exist")
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        node.proc.send_signal(signal.SIGINT)
        rc = node.stop(timeout=30)
        log = node.log()
        assert rc == 0 and "Traceback" not in log and "terminate called" not in log, log[-3000:]
    finally:
        if node.proc.poll() is None:
            node.proc.kill()


# -------------------------------------------------------------------------------------------- replay
def test_replay_evaluates_the_depth_topic_of_the_node_namespace():
    from semdepth_ros.replay import ReplayError, build_parser, resolve_depth_topic

    assert resolve_depth_topic("depth") == "/depth"
    assert resolve_depth_topic("depth", "front") == "/front/depth" == resolve_depth_topic("depth", "/front/")
    assert resolve_depth_topic("/other/depth", "front") == "/other/depth"
    with pytest.raises(ReplayError):
        resolve_depth_topic(" ", "front")
    a = build_parser().parse_args(["bag", "--evaluate", "--namespace", "front"])
    assert resolve_depth_topic(a.depth_topic, a.namespace) == "/front/depth"


# ---------------------------------------------------------------------------------------- code shape
def test_node_is_a_plain_lifecycle_node_class_over_ros_free_modules():
    import ast
    import os

    tree = ast.parse((REPO / "semdepth_ros" / "node.py").read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert [ast.unparse(b) for b in classes["DepthNode"].bases] == ["LifecycleNode"]
    from semdepth_ros.node import DepthNode
    from rclpy.lifecycle import LifecycleNode

    assert issubclass(DepthNode, LifecycleNode)
    code = ("import sys; import semdepth_ros.params, semdepth_ros.runtime, semdepth_ros.conversions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch', 'sensor_msgs')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    # the node module itself starts fast: torch (semdepth_core) is imported when the model loads
    code = "import sys, semdepth_ros.node; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


@contextlib.contextmanager
def _in_process_node(checkpoint, backend: str, domain: int):
    """A DepthNode in this process (autostart off) on its own context; shut down and destroyed afterwards."""
    from semdepth_ros.node import DepthNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)  # outside the 1..200 the DDS tests draw from
    try:
        node = DepthNode(context=ctx, parameter_overrides=[
            rclpy.parameter.Parameter("checkpoint", value=str(checkpoint)),
            rclpy.parameter.Parameter("backend", value=backend),
            rclpy.parameter.Parameter("autostart", value=False)])
        yield node
        node.shutdown_cleanly()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


# ------------------------------------------------------------------------------------------ lifecycle
def test_configure_cleanup_cycles_leave_no_publishers_behind(checkpoint):
    """Each configure creates 5 lifecycle publishers, 3 subscriptions and a timer; cleanup must remove all of them
    from the node and from the lifecycle's managed entities (the publishers leaked there before)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    with _in_process_node(checkpoint, "torch", 221) as node:

        def counts():
            return (len(list(node.publishers)), len(list(node.subscriptions)), len(list(node.timers)),
                    len(node._managed_entities))

        before = counts()
        for _ in range(4):
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert counts()[0] == before[0] + 5 and counts()[3] == before[3] + 5
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            assert counts() == before


def test_replay_explains_a_missing_tf2_msgs_and_replays_the_rest():
    """tf2_msgs has no PyPI wheel, so a pip-only install cannot publish /tf: one clear warning, the rest plays."""
    import importlib.util
    from types import SimpleNamespace

    from semdepth_ros.replay import plan_topics

    def conn(topic, msgtype):
        return SimpleNamespace(topic=topic, msgtype=msgtype, ext=SimpleNamespace(offered_qos_profiles=[]))

    reader = SimpleNamespace(path="bag", connections=[conn("/tf_static", "tf2_msgs/msg/TFMessage"),
                                                      conn("/cam/image_raw", "sensor_msgs/msg/Image")])
    logged = []
    plans = plan_topics(reader, None, logged.append)
    assert "/cam/image_raw" in plans
    if importlib.util.find_spec("tf2_msgs") is None:
        assert "/tf_static" not in plans
        (line,) = logged
        assert "skipping /tf_static" in line and "no PyPI wheel" in line and "ros-$ROS_DISTRO-tf2-msgs" in line
    else:
        assert "/tf_static" in plans and not logged


def test_configure_cleanup_cycles_hold_memory_flat(checkpoint, tmp_path):
    """30 configure / activate / 3 frames / deactivate / cleanup cycles with ONNX Runtime: the resident size stays
    flat after a warm-up (it grew by ~12 MB per cycle when the freed model stayed in the allocator's arenas)."""
    import os

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    os.environ.setdefault("SEMDEPTH_CACHE", str(tmp_path / "cache"))
    with _in_process_node(checkpoint, "onnxruntime", 222) as node:
        rgb = (np.random.default_rng(0).random((375, 1242, 3)) * 255).astype(np.uint8)
        sizes = []
        for _ in range(30):
            node.trigger_configure()
            node.trigger_activate()
            for _ in range(3):
                node.predictor.predict(rgb)
            node.trigger_deactivate()
            node.trigger_cleanup()
            sizes.append(rss_mb())
        after = sizes[4:]
        # flat: without giving the freed model back, RSS wandered by tens of MB from cycle to cycle and grew
        assert max(after) - min(after) < 10.0 and after[-1] - after[0] < 5.0, [round(v, 1) for v in sizes]
