"""`depth_node`: monocular depth + semantics + labelled point cloud from a camera stream.

    python -m semdepth_ros.node --ros-args --params-file config/depth.yaml -p checkpoint:=model.pt \\
        -r image:=/camera/image_raw -r camera_info:=/camera/camera_info -r odom:=/odom

A thin rclpy layer over pure pieces (conversions.py, semdepth_core.infer): decode the image, run
`Predictor.predict`, scale, encode and publish.

Lifecycle: a `rclpy.lifecycle.LifecycleNode` (the lifecycle wheels work with the installed rclpy,
checked with a configure/activate round trip), so a system manager can configure (load the model
once), activate (start serving), deactivate and clean up through the standard lifecycle
services. With `autostart: true` (default) the node configures and activates itself at start-up.
A model that fails to load leaves the node *unconfigured* but alive: it keeps publishing
/diagnostics with level ERROR and the reason, and publishes no outputs.

Topics (relative, remap them):
    in : image (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8, mono16), camera_info, odom
    out: depth (32FC1 metres / NaN = no estimate, or 16UC1 mm / 0 = invalid; REP 117/118),
         depth/camera_info (camera_info rescaled to the image size), semantic (mono8 trainIds,
         255 = ignore), semantic/color (rgb8, Cityscapes palette), points (PointCloud2 x, y, z,
         rgb, label in the image's optical frame), /diagnostics.
Every output carries the input image's header (stamp and frame_id). QoS: sensor data (best
effort, keep last 5) for inputs and outputs, overridable per topic with the standard
`qos_overrides.<topic>.<publisher|subscription>.<policy>` parameters.

Scheduling: the image callback only drops the message into a one-slot mailbox (a newer image
replaces an unprocessed one and counts as dropped), and a worker thread runs inference on the
latest image, so a slow model never builds a queue and latency stays one frame. Inference is
skipped while nothing subscribes to any output.

Metric scale (`scale.mode`): `none` (model units), `model` (a metric checkpoint's own depth, with a
live check: every `scale.check_period` s the ground plane fitted to the published depth implies a
camera height, compared with `scale.camera_height` over a rolling window; /diagnostics reports the
implied height and a confidence from that evidence, and goes WARN when the two differ by more than
the factor `scale.check_factor`), `fixed` (multiply by `scale.value`), `odometry` (pose network between
consecutive processed frames: scale = |v| dt / |t_hat| with |v| from nav_msgs/Odometry twist
(mean of the samples nearest to both frame stamps),
robust rolling median with outlier rejection, held while |v| < `scale.min_speed`; until the
first estimate depth is published in model units and diagnostics say so), `camera_height`
(a GT- and odometry-free fallback: per processed frame, the scale that puts the RANSAC ground
plane of the predicted depth (network resolution, CameraInfo intrinsics rescaled to it, rows
below 60% of the height) `scale.camera_height` metres below the camera, smoothed by a rolling
median over the last `scale.window` frames with a ground fit; a frame without a ground fit, or
without usable CameraInfo, holds the last value; until the first estimate depth is published in
model units and diagnostics say so, as in `odometry`).

Infinite-depth hole check (`ground_check.enabled`, paper §4.3, off by default): per processed
frame the ground plane is fitted to the network-resolution depth (made metric by the known
scale when there is one: `fixed`, a `camera_height`/`odometry` estimate, or a metric
checkpoint; else by the frame's own camera-height scale with `ground_check.camera_height`, as
training.filter_dataset does) and the pixels more than `ground_check.margin` metres (+
`ground_check.margin_slope` x their depth) below it are counted; a frame with more than
`ground_check.max_below_pixels` is flagged, and /diagnostics goes WARN ("infinite-depth hole:
N pixels below the ground plane") while recent frames are flagged. Frames without a ground fit
or CameraInfo count as unchecked. Keys `ground_check.frames_checked|frames_flagged|
frames_unchecked|last_count`, stage `time_ms.ground`.

Bad input never stops the node: an image it cannot decode, a CameraInfo of another size
(intrinsics rescaled with the half-pixel rule), a CameraInfo without intrinsics, odometry with
NaN, a checkpoint that does not load. Each class is logged once per `error_log_period` with a
count of the suppressed repeats and counted in /diagnostics.
"""
from __future__ import annotations

import array
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from semdepth_ros import conversions as C

NODE_NAME = "depth_node"
SCALE_MODES = ("none", "model", "fixed", "odometry", "camera_height")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
OUTPUT_TOPICS = ("depth", "depth/camera_info", "semantic", "semantic/color", "points")
ESTIMATED_SCALE_MODES = ("odometry", "camera_height")  # model units until the first estimate


# ----------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None
    read_only: bool = False  # fixed after start-up (the model is loaded once at configure time)


def _in(choices):
    return lambda v: None if v in choices else f"must be one of {list(choices)}, got {v!r}"


def _positive(v):
    return None if (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) else f"must be > 0, got {v!r}"


def _non_negative(v):
    return None if (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) else f"must be >= 0, got {v!r}"


def _non_negative_int(v):
    return None if v >= 0 else f"must be >= 0, got {v}"


def _net_size(v):
    return None if v == 0 or (v > 0 and v % 32 == 0) else f"must be 0 (checkpoint default) or a positive multiple of 32, got {v}"


def _labels(v):
    bad = [x for x in v if not 0 <= x <= 255]
    return None if not bad else f"label ids must be in 0..255, got {bad}"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "configure and activate at start-up (else wait for lifecycle transitions)",
              read_only=True),
    ParamSpec("checkpoint", "", "semdepth checkpoint (.ckpt) to load at configure time", read_only=True),
    ParamSpec("backend", "auto", f"inference backend {list(BACKENDS)}", _in(BACKENDS), read_only=True),
    ParamSpec("device", "cpu", "torch device: cpu, cuda, cuda:N",
              lambda v: None if v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())
              else f"must be cpu, cuda or cuda:N, got {v!r}", read_only=True),
    ParamSpec("num_threads", 0, "torch CPU threads (0 = library default)", _non_negative, read_only=True),
    ParamSpec("input_height", 0, "network input height (0 with input_width 0: the camera's aspect ratio at "
              "the checkpoint's pixel budget)", _net_size, read_only=True),
    ParamSpec("input_width", 0, "network input width (set both for a fixed size, multiples of 32)", _net_size,
              read_only=True),
    ParamSpec("depth_encoding", "32FC1", "depth image encoding: 32FC1 (m, NaN invalid) or 16UC1 (mm, 0 invalid)",
              _in(DEPTH_ENCODINGS)),
    ParamSpec("points.stride", 2, "keep every n-th pixel row/column in the point cloud",
              lambda v: None if 1 <= v <= 64 else f"must be in 1..64, got {v}"),
    ParamSpec("points.organized", True, "organised cloud (image grid, NaN = no point) instead of valid points only"),
    ParamSpec("points.min_range", 0.0, "drop points with depth <= this (m)", _non_negative),
    ParamSpec("points.max_range", 80.0, "drop points with depth > this (m)", _positive),
    ParamSpec("points.exclude_labels", [10], "semantic trainIds left out of the cloud (10 = sky)", _labels),
    ParamSpec("scale.mode", "none", f"metric scale: {list(SCALE_MODES)}", _in(SCALE_MODES)),
    ParamSpec("scale.value", 1.0, "scale factor for scale.mode fixed", _positive),
    ParamSpec("scale.window", 30, "odometry / camera_height scale: rolling-median window (frame pairs / frames)",
              lambda v: None if 1 <= v <= 10000 else f"must be in 1..10000, got {v}"),
    ParamSpec("scale.min_speed", 1.0, "odometry scale: hold the estimate below this speed (m/s)", _non_negative),
    ParamSpec("scale.outlier_ratio", 0.3, "odometry scale: reject ratios off the median by more than this "
              "(relative, in log space)", _positive),
    ParamSpec("scale.odom_timeout", 0.5, "odometry scale: max |odom stamp - image stamp| (s)", _positive),
    ParamSpec("scale.max_frame_gap", 1.0, "odometry scale: ignore frame pairs further apart than this (s)",
              _positive),
    ParamSpec("scale.camera_height", 1.65, "camera_height scale and the model-scale check: camera height above "
              "the ground (m)", _positive),
    ParamSpec("scale.check_factor", 1.5, "model scale: WARN when the camera height implied by the ground plane "
              "of the published depth differs from scale.camera_height by more than this factor",
              lambda v: None if isinstance(v, (int, float)) and math.isfinite(v) and 1.0 < v <= 100.0
              else f"must be in (1, 100], got {v!r}"),
    ParamSpec("scale.check_period", 1.0, "model scale: seconds between two ground-plane checks (0 = every "
              "frame); each costs one RANSAC fit", _non_negative),
    ParamSpec("ground_check.enabled", False, "count pixels predicted below the ground plane (infinite-depth "
              "holes, paper §4.3) on every processed frame and report them on /diagnostics"),
    ParamSpec("ground_check.margin", 0.5, "ground check: a pixel counts when more than this below the ground (m)",
              _non_negative),
    ParamSpec("ground_check.margin_slope", 0.05, "ground check: plus this many metres per metre of the pixel's "
              "depth (tolerates a slightly tilted plane fit at range; two_stage.margin_slope)", _non_negative),
    ParamSpec("ground_check.max_below_pixels", 10, "ground check: flag a frame with more pixels than this below "
              "the ground (network-resolution pixels)", _non_negative_int),
    ParamSpec("ground_check.camera_height", 1.65, "ground check: camera height (m) used to make scale-free depth "
              "metric before the margin test (unused when the metric scale is known)", _positive),
    ParamSpec("diagnostics_period", 1.0, "period of /diagnostics (s)", _positive, read_only=True),
    ParamSpec("error_log_period", 5.0, "repeated errors of one kind are logged at most once per period (s)",
              _positive),
)
PARAM_BY_NAME = {p.name: p for p in PARAMS}


def check_parameter(name: str, value: Any) -> str | None:
    """Reason why `value` is not acceptable for parameter `name` (None when fine or not ours)."""
    spec = PARAM_BY_NAME.get(name)
    if spec is None:
        return None
    d = spec.default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(d, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(d, str):
        ok = isinstance(value, str)
    else:  # integer array (rclpy hands runtime updates over as array.array('q'))
        ok = isinstance(value, (list, tuple, array.array)) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                   for x in value)
    if not ok:
        return f"{name}: expected {type(d).__name__}, got {value!r}"
    reason = spec.check(value) if spec.check else None
    return f"{name}: {reason}" if reason else None


# ---------------------------------------------------------------------------------- plumbing
class Mailbox:
    """One-slot hand-over between the subscription callback and the worker (latest wins)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._item = None
        self.dropped = 0
        self.put_count = 0

    def put(self, item) -> bool:
        """Store `item`; True when it replaced an unprocessed one (that one is dropped)."""
        with self._cv:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self.put_count += 1
            self._cv.notify()
            return replaced

    def get(self, timeout: float):
        """The latest item (and empty the slot), or None after `timeout` seconds."""
        with self._cv:
            if self._item is None:
                self._cv.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._cv:
            self._item = None


class RateLimitedLog:
    """Log each kind of problem at most once per `period`; repeats are counted and reported."""

    def __init__(self, emit: Callable[[str], None], period: float, clock=time.monotonic):
        self.emit, self.period, self.clock = emit, float(period), clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.last_message: dict[str, str] = {}
        self.last_time: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, text: str) -> bool:
        now = self.clock()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.last_message[kind] = text
            self.last_time[kind] = now
            last = self._last.get(kind)
            if last is not None and now - last < self.period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            n = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        self.emit(text + (f" [{n} more like this in the last {self.period:g}s]" if n else ""))
        return True

    def recent(self, within: float) -> dict[str, str]:
        now = self.clock()
        with self._lock:
            return {k: self.last_message[k] for k, t in self.last_time.items() if now - t <= within}


class StageTimes:
    """Rolling per-stage timings (ms)."""

    def __init__(self, n: int = 50):
        self._d: dict[str, deque] = {}
        self.n = n
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._d.setdefault(stage, deque(maxlen=self.n)).append(float(ms))

    def means(self) -> dict[str, float]:
        with self._lock:
            return {k: float(np.mean(v)) for k, v in self._d.items() if v}


def twist_speed(msg) -> float:
    """|v| of nav_msgs/Odometry twist.twist.linear (NaN propagates)."""
    v = msg.twist.twist.linear
    return float(math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z))


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def nearest_speed(samples, t_ns: int, timeout_s: float) -> float | None:
    """Speed of the odometry sample nearest to t_ns within timeout_s; samples = [(stamp_ns, speed)]."""
    best = None
    for ts, sp in samples:
        dt = abs(ts - t_ns) * 1e-9
        if dt <= timeout_s and (best is None or dt < best[0]):
            best = (dt, sp)
    return None if best is None else best[1]


# ------------------------------------------------------------------------------------------ node
def _make_node_class():
    """Build the LifecycleNode subclass (rclpy imported lazily so the pure parts import without it)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from nav_msgs.msg import Odometry
    from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
    from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rclpy.qos_overriding_options import QoSOverridingOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from semdepth_core.data.labels import colorize
    from semdepth_core.infer.ground import (
        CameraHeightScaleEstimator,
        HoleCheck,
        HoleCheckStats,
        ModelScaleCheck,
        infinite_depth_check,
    )
    from semdepth_core.infer.processing import inv_depth_to_depth

    ptype = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
             list: ParameterType.PARAMETER_INTEGER_ARRAY}

    class DepthNode(LifecycleNode):
        def __init__(self, **kwargs):
            super().__init__(NODE_NAME, **kwargs)
            for spec in PARAMS:
                desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                           type=ptype[type(spec.default)])
                self.declare_parameter(spec.name, spec.default, desc)
            self.add_on_set_parameters_callback(self._on_set_parameters)
            self.err_log = RateLimitedLog(lambda m: self.get_logger().error(m), self.p("error_log_period"))
            self.warn_log = RateLimitedLog(lambda m: self.get_logger().warning(m), self.p("error_log_period"))
            self.mailbox = Mailbox()
            self.times = StageTimes()
            self.predictor = None
            self.load_error: str | None = None
            self.param_error: str | None = None
            self.stats = {"received": 0, "processed": 0, "skipped_no_subscribers": 0, "bad_images": 0,
                          "failed": 0}
            self._worker: threading.Thread | None = None
            self._stop = threading.Event()
            self._active = False
            self._state = "unconfigured"
            self._pubs: dict[str, Any] = {}
            self._subs: list = []
            self._camera_info = None
            self._odom = deque(maxlen=400)
            self._lock = threading.Lock()
            self._points_msg = None  # reused buffer (already published)
            self._prev = None  # (rgb, stamp_ns) for the odometry scale
            self._scale_est = None
            self._height_est = None  # CameraHeightScaleEstimator for scale.mode camera_height
            self._model_check = None  # ModelScaleCheck for scale.mode model
            self._ground_stats = HoleCheckStats()
            self._scale_value = 1.0
            self._scale_known = True
            self._sizes_logged: set = set()
            self._processed_times: deque = deque(maxlen=30)
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._diag_timer = self.create_timer(self.p("diagnostics_period"), self.publish_diagnostics)
            bad = [r for r in (check_parameter(s.name, self.p(s.name)) for s in PARAMS) if r]
            if bad:
                self.param_error = "; ".join(bad)
                self.get_logger().error(f"invalid parameters: {self.param_error}")

        # -------------------------------------------------------------------- parameters
        def p(self, name: str):
            return self.get_parameter(name).value

        def _on_set_parameters(self, params):
            for prm in params:
                reason = check_parameter(prm.name, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            changed = {prm.name for prm in params}
            if changed & {"scale.mode", "scale.window", "scale.min_speed", "scale.outlier_ratio",
                          "scale.camera_height", "scale.check_factor", "scale.check_period"}:
                self._scale_reset_pending = True
                new_mode = next((prm.value for prm in params if prm.name == "scale.mode"), self.p("scale.mode"))
                self._scale_known = new_mode not in ESTIMATED_SCALE_MODES  # the reset drops the estimate
            if "error_log_period" in changed:
                for prm in params:
                    if prm.name == "error_log_period":
                        self.err_log.period = self.warn_log.period = float(prm.value)
            return SetParametersResult(successful=True)

        # -------------------------------------------------------------------- lifecycle
        def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
            if self.param_error:
                self.load_error = f"invalid parameters: {self.param_error}"
                return TransitionCallbackReturn.FAILURE
            ckpt = self.p("checkpoint")
            try:
                if not ckpt:
                    raise ValueError("parameter 'checkpoint' is empty (set -p checkpoint:=/path/model.pt)")
                if self.p("num_threads") > 0:
                    import torch

                    torch.set_num_threads(int(self.p("num_threads")))
                from semdepth_core.infer import load_predictor

                h, w = self.p("input_height"), self.p("input_width")
                t0 = time.perf_counter()
                self.predictor = load_predictor(ckpt, backend=self.p("backend"), device=self.p("device"),
                                                height=h or None, width=w or None)
                self.get_logger().info(f"loaded {self.predictor} from {ckpt} in {time.perf_counter() - t0:.1f}s")
            except Exception as exc:  # noqa: BLE001 - any load failure keeps the node alive
                self.load_error = f"model failed to load from {ckpt!r}: {type(exc).__name__}: {exc}"
                self.err_log("load", self.load_error)
                self.predictor = None
                return TransitionCallbackReturn.FAILURE
            self.load_error = None
            if self.p("scale.mode") == "model" and not self.predictor.is_metric:
                self.warn_log("scale", "scale.mode 'model' but the checkpoint was trained without velocity "
                              "supervision: its depth is not metric")
            self._reset_scale()
            # no estimate before the first frame pair / the first frame with a ground fit
            self._scale_known = self.p("scale.mode") not in ESTIMATED_SCALE_MODES
            sensor = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in
                                   ("history", "depth", "reliability", "durability")})
            over = QoSOverridingOptions.with_default_policies()
            self._pubs = {
                "depth": self.create_lifecycle_publisher(Image, "depth", sensor, qos_overriding_options=over),
                "depth/camera_info": self.create_lifecycle_publisher(CameraInfo, "depth/camera_info", sensor,
                                                                     qos_overriding_options=over),
                "semantic": self.create_lifecycle_publisher(Image, "semantic", sensor, qos_overriding_options=over),
                "semantic/color": self.create_lifecycle_publisher(Image, "semantic/color", sensor,
                                                                  qos_overriding_options=over),
                "points": self.create_lifecycle_publisher(PointCloud2, "points", sensor, qos_overriding_options=over),
            }
            self._subs = [
                self.create_subscription(Image, "image", self._on_image, sensor, qos_overriding_options=over),
                self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, sensor,
                                         qos_overriding_options=over),
                self.create_subscription(Odometry, "odom", self._on_odom, sensor, qos_overriding_options=over),
            ]
            self._state = "inactive"
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
            self.mailbox.clear()
            self._stop.clear()
            self._worker = threading.Thread(target=self._work, name="depth_worker", daemon=True)
            self._worker.start()
            self._active = True
            self._state = "active"
            return super().on_activate(state)

        def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._active = False
            self.stop_worker()
            self._state = "inactive"
            return super().on_deactivate(state)

        def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._release()
            self._state = "unconfigured"
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._active = False
            self.stop_worker()
            self._release()
            self._state = "finalized"
            return TransitionCallbackReturn.SUCCESS

        def _release(self) -> None:
            for s in self._subs:
                self.destroy_subscription(s)
            for pub in self._pubs.values():
                self.destroy_publisher(pub)
            self._subs, self._pubs = [], {}
            if self.predictor is not None:
                self.predictor.close()
            self.predictor = None

        def stop_worker(self) -> None:
            self._stop.set()
            w, self._worker = self._worker, None
            if w is not None and w is not threading.current_thread():
                w.join(timeout=10.0)
            self.mailbox.clear()

        # -------------------------------------------------------------------- callbacks
        def _on_image(self, msg) -> None:
            if not self._active:
                return
            self.stats["received"] += 1
            self.mailbox.put((msg, time.monotonic()))

        def _on_camera_info(self, msg) -> None:
            with self._lock:
                self._camera_info = msg

        def _on_odom(self, msg) -> None:
            speed = twist_speed(msg)
            if not math.isfinite(speed):
                self.err_log("odom", f"odometry on {self.resolve_topic_name('odom')} has a non-finite twist "
                                    f"({msg.twist.twist.linear.x}, {msg.twist.twist.linear.y}, "
                                    f"{msg.twist.twist.linear.z}); ignored")
                return
            t = stamp_ns(msg.header) or self.get_clock().now().nanoseconds
            with self._lock:
                self._odom.append((t, speed))

        # -------------------------------------------------------------------- processing
        def _work(self) -> None:
            while not self._stop.is_set():
                item = self.mailbox.get(timeout=0.1)
                if item is None:
                    continue
                try:
                    self._process(*item)
                except Exception as exc:  # noqa: BLE001 - one bad frame never stops the worker
                    self.stats["failed"] += 1
                    self.err_log("processing", f"frame processing failed: {type(exc).__name__}: {exc}")

        def _subscribed(self) -> dict[str, bool]:
            return {k: pub.get_subscription_count() > 0 for k, pub in self._pubs.items()}

        def _process(self, msg, t_recv: float) -> None:
            subs = self._subscribed()
            if not any(subs.values()):
                self.stats["skipped_no_subscribers"] += 1
                return
            t0 = time.perf_counter()
            try:
                rgb = C.image_msg_to_rgb(msg)
            except C.ImageConversionError as exc:
                self.stats["bad_images"] += 1
                self.err_log(f"image.{exc.kind}", f"image on {self.resolve_topic_name('image')} dropped: {exc}")
                return
            t1 = time.perf_counter()
            pred = self.predictor.predict(rgb)
            t2 = time.perf_counter()
            ground_check = self.p("ground_check.enabled")
            depth_net = K_net = None
            mode = self.p("scale.mode")
            if self._scale_reset_pending:  # a scale parameter changed: new estimators before this frame
                self._reset_scale()
            model_check = mode == "model" and self._model_check is not None and self._model_check.due(time.monotonic())
            if ground_check or mode == "camera_height" or model_check:
                # the ground plane is fitted at the network resolution, clamped like the published depth
                depth_net = inv_depth_to_depth(pred.inv_depth, self.predictor.min_depth, self.predictor.max_depth)
                K_net = self._network_K(depth_net.shape[1], depth_net.shape[0])
            scale = self._update_scale(rgb, stamp_ns(msg.header), depth_net, K_net)
            if model_check and K_net is not None:
                self._check_model_scale(depth_net, K_net)
            depth = pred.depth if scale == 1.0 else pred.depth * np.float32(scale)
            t3 = time.perf_counter()
            if ground_check:
                self._check_ground(depth_net, K_net, scale)
                t3g = time.perf_counter()
                self.times.add("ground", (t3g - t3) * 1e3)
                t3 = t3g
            header = msg.header
            H, W = depth.shape
            if subs["depth"]:
                self._pubs["depth"].publish(C.depth_to_image_msg(depth, header, self.p("depth_encoding")))
            if pred.labels is not None:
                if subs["semantic"]:
                    self._pubs["semantic"].publish(C.labels_to_image_msg(pred.labels, header))
                if subs["semantic/color"]:
                    self._pubs["semantic/color"].publish(C.rgb_to_image_msg(colorize(pred.labels), header))
            if subs["depth/camera_info"] or subs["points"]:
                info = self._camera_info_for(W, H)
                if info is not None:
                    info.header = header
                    if subs["depth/camera_info"]:
                        self._pubs["depth/camera_info"].publish(info)
                    if subs["points"]:
                        self._publish_points(header, depth, info, rgb, pred.labels)
            t4 = time.perf_counter()
            self.stats["processed"] += 1
            self._processed_times.append(time.monotonic())
            for k, v in pred.timings.items():
                self.times.add(k, v)
            self.times.add("decode", (t1 - t0) * 1e3)
            self.times.add("predict", (t2 - t1) * 1e3)
            self.times.add("scale", (t3 - t2) * 1e3)
            self.times.add("publish", (t4 - t3) * 1e3)
            self.times.add("total", (t4 - t0) * 1e3)
            self.times.add("latency", (time.monotonic() - t_recv) * 1e3)

        def _publish_points(self, header, depth, info, rgb, labels) -> None:
            try:
                K = C.camera_info_to_K(info)
            except ValueError as exc:
                self.err_log("camera_info", f"camera_info on {self.resolve_topic_name('camera_info')}: {exc}; "
                                           "no point cloud")
                return
            excl = list(self.p("points.exclude_labels")) if labels is not None else []
            msg = C.depth_to_pointcloud2(header, depth, K, rgb, labels, stride=self.p("points.stride"),
                                         max_range=self.p("points.max_range"), min_range=self.p("points.min_range"),
                                         exclude_labels=excl, organized=self.p("points.organized"),
                                         reuse=self._points_msg)
            self._pubs["points"].publish(msg)  # serialised here, so the buffer may be refilled next frame
            self._points_msg = msg

        def _camera_info_for(self, W: int, H: int):
            with self._lock:
                ci = self._camera_info
            if ci is None:
                self.warn_log("no_camera_info", f"no CameraInfo received on {self.resolve_topic_name('camera_info')} "
                                                "yet: depth/camera_info and points are not published")
                return None
            if (ci.width, ci.height) != (W, H):
                if ci.width == 0 or ci.height == 0:
                    self.err_log("camera_info", f"CameraInfo on {self.resolve_topic_name('camera_info')} has zero "
                                               f"size ({ci.width}x{ci.height}); cannot match it to {W}x{H} images")
                    return None
                key = (ci.width, ci.height, W, H)
                if key not in self._sizes_logged:
                    self._sizes_logged.add(key)
                    self.get_logger().warning(
                        f"CameraInfo is {ci.width}x{ci.height} but images are {W}x{H}: rescaling the intrinsics "
                        "(half-pixel rule)")
            return C.scaled_camera_info(ci, W, H)

        def _network_K(self, w: int, h: int) -> np.ndarray | None:
            """Intrinsics of the network input (w x h) from the latest CameraInfo (None, warned, when unusable)."""
            with self._lock:
                ci = self._camera_info
            if ci is None:
                self.warn_log("ground_no_camera_info", f"no CameraInfo received on "
                              f"{self.resolve_topic_name('camera_info')} yet: the camera-height scale and the "
                              "ground check need the intrinsics")
                return None
            try:
                K = C.camera_info_to_K(ci)
                if ci.width <= 0 or ci.height <= 0:
                    raise ValueError(f"CameraInfo has zero size ({ci.width}x{ci.height})")
                return C.scale_K(K, (int(ci.width), int(ci.height)), (int(w), int(h)))  # half-pixel rule
            except ValueError as exc:
                self.warn_log("ground_camera_info", f"camera_info on {self.resolve_topic_name('camera_info')}: "
                              f"{exc}; no camera-height scale / ground check for this frame")
                return None

        def _check_ground(self, depth_net, K_net, scale: float) -> None:
            """Infinite-depth hole check of one frame (never raises: failures count as unchecked)."""
            if K_net is None:
                self._ground_stats.record(HoleCheck(False, 0, False, math.nan, "no usable CameraInfo"))
                return
            try:
                r = infinite_depth_check(depth_net, K_net, margin=self.p("ground_check.margin"),
                                         margin_slope=self.p("ground_check.margin_slope"),
                                         max_below_pixels=self.p("ground_check.max_below_pixels"),
                                         camera_height=self.p("ground_check.camera_height"),
                                         metric_scale=self._known_metric_scale(scale))
            except Exception as exc:  # noqa: BLE001 - the check must never cost a frame
                self.err_log("ground_check", f"ground check failed: {type(exc).__name__}: {exc}")
                r = HoleCheck(False, 0, False, math.nan, f"{type(exc).__name__}: {exc}")
            self._ground_stats.record(r)
            if r.flagged:
                self.warn_log("ground_check", f"infinite-depth hole: {r.count} pixels below the ground plane "
                              f"(more than {self.p('ground_check.max_below_pixels')} at "
                              f"{self.p('ground_check.margin'):g} m + "
                              f"{self.p('ground_check.margin_slope'):g} x depth margin)")

        def _check_model_scale(self, depth_net, K_net) -> None:
            """scale.mode model: feed the live camera-height check (never raises: a failure is logged)."""
            chk = self._model_check
            try:
                chk.add(depth_net, K_net, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the check must never cost a frame
                self.err_log("scale_check", f"model-scale check failed: {type(exc).__name__}: {exc}")
                return
            if chk.agrees is False:
                self.warn_log("scale_check", f"model scale disagrees with the camera height: the ground plane of the "
                              f"published depth puts the camera {chk.implied_camera_height:.2f} m above the road, "
                              f"scale.camera_height is {chk.camera_height:.2f} m (more than a factor "
                              f"{chk.factor:g} apart); the checkpoint's depth is not metric on this camera")

        def _known_metric_scale(self, scale: float) -> float | None:
            """Metres per published-depth unit when known (ground check margin), else None."""
            mode = self.p("scale.mode")
            if mode == "fixed":
                return float(scale)
            if mode in ESTIMATED_SCALE_MODES:
                return float(scale) if self._scale_known else None
            return 1.0 if self.predictor.is_metric else None  # none / model: metric checkpoints only

        # -------------------------------------------------------------------- scale
        _scale_reset_pending = False

        def _reset_scale(self) -> None:
            from semdepth_core.infer import ScaleEstimator

            self._scale_est = ScaleEstimator(window=self.p("scale.window"), min_speed=self.p("scale.min_speed"),
                                             outlier_ratio=self.p("scale.outlier_ratio"))
            self._height_est = CameraHeightScaleEstimator(camera_height=self.p("scale.camera_height"),
                                                          window=self.p("scale.window"))
            self._model_check = ModelScaleCheck(camera_height=self.p("scale.camera_height"),
                                                factor=self.p("scale.check_factor"), window=self.p("scale.window"),
                                                period_s=self.p("scale.check_period"))
            self._prev = None
            self._scale_reset_pending = False

        def _update_scale(self, rgb: np.ndarray, t_ns: int, depth_net=None, K_net=None) -> float:
            if self._scale_reset_pending:
                self._reset_scale()
            mode = self.p("scale.mode")
            self._scale_known = True
            if mode in ("none", "model"):
                self._scale_value = 1.0
                return 1.0
            if mode == "fixed":
                self._scale_value = float(self.p("scale.value"))
                return self._scale_value
            if mode == "camera_height":
                est = self._height_est
                # no intrinsics = no estimate for this frame: held like a frame without a ground fit
                try:
                    value = est.add_depth(depth_net, K_net) if depth_net is not None and K_net is not None \
                        else est.add_scale(None)
                except Exception as exc:  # noqa: BLE001 - a failed fit never costs the frame: hold
                    self.err_log("scale", f"camera-height scale failed: {type(exc).__name__}: {exc}; scale held")
                    value = est.add_scale(None)
                return self._use_estimate(value)
            # odometry
            est = self._scale_est
            if not self.predictor.has_pose:
                self.err_log("scale", "scale.mode 'odometry' needs a pose network but the checkpoint has none; "
                                     "depth stays in model units")
            else:
                prev, self._prev = self._prev, (rgb, t_ns)
                if prev is not None and prev[0].shape == rgb.shape:
                    dt = (t_ns - prev[1]) * 1e-9
                    if 0 < dt <= self.p("scale.max_frame_gap"):
                        with self._lock:
                            samples = list(self._odom)
                        tol = self.p("scale.odom_timeout")
                        v0, v1 = nearest_speed(samples, prev[1], tol), nearest_speed(samples, t_ns, tol)
                        # distance over the pair ~ mean of the speeds at both ends times dt
                        speed = None if v0 is None or v1 is None else 0.5 * (v0 + v1)
                        if speed is None:
                            est.holding = True
                            self.warn_log("odom_missing", f"no odometry on {self.resolve_topic_name('odom')} within "
                                                          f"{self.p('scale.odom_timeout')}s of the image stamps; "
                                                          "scale held")
                        else:
                            T = self.predictor.relative_pose(prev[0], rgb)
                            est.update(T[:3, 3], speed, dt)
            return self._use_estimate(est.value)

        def _use_estimate(self, value: float | None) -> float:
            """Scale to publish with from an estimator's value: model units (1.0) until there is one."""
            if value is None:
                self._scale_known = False
                self._scale_value = 1.0
            else:
                self._scale_value = float(value)
            return self._scale_value

        def scale_confidence(self) -> float:
            mode = self.p("scale.mode")
            if mode == "fixed":
                return 1.0
            if mode == "odometry":
                return float(self._scale_est.confidence) if self._scale_est is not None else 0.0
            if mode == "camera_height":
                return float(self._height_est.confidence) if self._height_est is not None else 0.0
            if mode == "model":  # evidence from the live camera-height check, 0 without any
                if self.predictor is None or not self.predictor.is_metric or self._model_check is None:
                    return 0.0
                return float(self._model_check.confidence)
            return 1.0 if (self.predictor is not None and self.predictor.is_metric) else 0.0

        # -------------------------------------------------------------------- diagnostics
        def publish_diagnostics(self) -> None:
            st = DiagnosticStatus()
            st.name = f"{self.get_name()}: inference"
            st.hardware_id = str(self.p("checkpoint"))
            recent_err = self.err_log.recent(max(2.0, 2 * self.p("diagnostics_period")))
            recent_warn = self.warn_log.recent(max(2.0, 2 * self.p("diagnostics_period")))
            mc = self._model_check
            if self.p("scale.mode") == "model" and mc is not None and mc.agrees is False:
                # a state, not an event: WARN for as long as the window disagrees, whatever the check period
                recent_warn.setdefault("scale_check", self.warn_log.last_message.get(
                    "scale_check", "model scale disagrees with the camera height"))
            if self.load_error or self.param_error:
                st.level, st.message = DiagnosticStatus.ERROR, self.load_error or f"invalid parameters: {self.param_error}"
            elif self._state != "active":
                st.level, st.message = DiagnosticStatus.WARN, f"{self._state}: not serving"
            elif recent_err:
                st.level = DiagnosticStatus.WARN
                st.message = "serving; recent errors: " + " | ".join(recent_err.values())
            elif recent_warn or not self._scale_known:
                st.level = DiagnosticStatus.WARN
                msgs = list(recent_warn.values())
                if not self._scale_known:
                    msgs.append("metric scale not known yet: depth in model units")
                st.message = "serving; " + " | ".join(msgs)
            else:
                st.level, st.message = DiagnosticStatus.OK, "serving"
            if isinstance(st.level, int):
                st.level = bytes([st.level])
            tp = list(self._processed_times)
            rate = (len(tp) - 1) / (tp[-1] - tp[0]) if len(tp) > 1 and tp[-1] > tp[0] else 0.0
            vals = {
                "state": self._state,
                "backend": self.predictor.backend_name if self.predictor else "",
                "network_input": "x".join(map(str, self.predictor.input_size)) if self.predictor else "",
                "semantics": str(bool(self.predictor and self.predictor.has_semantics)),
                "frames_received": self.stats["received"],
                "frames_processed": self.stats["processed"],
                "frames_dropped": self.mailbox.dropped,
                "frames_skipped_no_subscribers": self.stats["skipped_no_subscribers"],
                "bad_images": self.stats["bad_images"],
                "failed_frames": self.stats["failed"],
                "rate_hz": f"{rate:.2f}",
                "scale.mode": self.p("scale.mode"),
                "scale.value": f"{self._scale_value:.6g}",
                "scale.known": str(self._scale_known),
                "scale.confidence": f"{self.scale_confidence():.3f}",
            }
            if self._scale_est is not None and self.p("scale.mode") == "odometry":
                vals["scale.holding"] = str(self._scale_est.holding)
                vals["scale.samples"] = self._scale_est.num_samples
                vals["scale.last_ratio"] = f"{self._scale_est.last_ratio or 0.0:.6g}"
            if self._height_est is not None and self.p("scale.mode") == "camera_height":
                he = self._height_est
                vals["scale.holding"] = str(he.holding)
                vals["scale.samples"] = he.num_samples
                vals["scale.last_ratio"] = f"{he.last_ratio or 0.0:.6g}"  # the last frame's own scale (0: no fit)
                vals["scale.no_ground_fit"] = he.no_fit
            if self._model_check is not None and self.p("scale.mode") == "model":
                mc = self._model_check
                vals["scale.check.frames"] = mc.frames_checked
                vals["scale.check.ground_fits"] = mc.estimator.num_samples
                h = mc.implied_camera_height
                vals["scale.check.implied_camera_height"] = "none" if h is None else f"{h:.3f}"
                vals["scale.check.camera_height"] = f"{mc.camera_height:.3f}"
                vals["scale.check.agrees"] = "unknown" if mc.agrees is None else str(mc.agrees)
            if self.p("ground_check.enabled"):
                gs = self._ground_stats
                vals["ground_check.frames_checked"] = gs.checked
                vals["ground_check.frames_flagged"] = gs.flagged
                vals["ground_check.frames_unchecked"] = gs.unchecked
                vals["ground_check.last_count"] = "none" if gs.last_count is None else gs.last_count
                if gs.last_reason:
                    vals["ground_check.last_unchecked_reason"] = gs.last_reason
            for kind, n in sorted(self.err_log.counts.items()):
                vals[f"errors.{kind}"] = n
            for stage, ms in sorted(self.times.means().items()):
                vals[f"time_ms.{stage}"] = f"{ms:.2f}"
            st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [st]
            self._diag_pub.publish(arr)

    return DepthNode


_NODE_CLASS = None


def DepthNode(**kwargs):  # noqa: N802 - factory standing in for the lazily built class
    """Create the depth node (rclpy must be initialised)."""
    global _NODE_CLASS
    if _NODE_CLASS is None:
        _NODE_CLASS = _make_node_class()
    return _NODE_CLASS(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """Entry point `depth_node`; SIGINT/SIGTERM shut it down cleanly (exit status 0)."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    rclpy.init(args=sys.argv if argv is None else argv)  # installs SIGINT/SIGTERM handlers
    node = None
    try:
        node = DepthNode()
        if node.p("autostart"):
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error(f"not serving: {node.load_error}; /diagnostics reports ERROR")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop_worker()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
