"""`depth_node`: monocular depth + semantics + labelled point cloud from a camera stream.

    python -m semdepth_ros.node --ros-args --params-file config/depth.yaml [-p checkpoint:=model.ckpt] \\
        -r image:=/camera/image_raw -r camera_info:=/camera/camera_info -r odom:=/odom

`checkpoint: default` (the params file's) loads the shipped weights, from share/semdepth_ros/weights
after a colcon install or from the package.

A thin rclpy layer over pure pieces (conversions.py, semdepth_core.infer): decode the image, run
`Predictor.predict`, scale, encode and publish.

Lifecycle: a `rclpy.lifecycle.LifecycleNode` (the lifecycle wheels work with the installed rclpy,
checked with a configure/activate round trip), so a system manager can configure (load the model
once), activate (start serving), deactivate and clean up through the standard lifecycle
services. With `autostart: true` (default) the node configures and activates itself at start-up.
A model that fails to load leaves the node *unconfigured* but alive: it keeps publishing
/diagnostics with level ERROR and the reason, and publishes no outputs.

Topics (relative, remap them):
    in : image (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8, mono16; or with
         `image_transport: compressed` sensor_msgs/CompressedImage jpeg/png on <image>/compressed),
         camera_info, odom
    out: depth (32FC1 metres / NaN = no estimate, or 16UC1 mm / 0 = invalid; REP 117/118),
         depth/camera_info (camera_info rescaled to the image size), semantic (mono8 trainIds,
         255 = ignore), semantic/color (rgb8, Cityscapes palette), points (PointCloud2 x, y, z,
         rgb, label in the image's optical frame), /diagnostics.
Every output carries the input image's header (stamp and frame_id). QoS: sensor data (best
effort, keep last 5) for outputs, CameraInfo and odometry; the image follows `image_qos` (auto:
reliable while every publisher is, best effort once a best-effort one appears). All are
overridable per topic with the standard `qos_overrides.<topic>.<publisher|subscription>.<policy>`
parameters. SIGINT / SIGTERM, once or repeated, run the lifecycle shutdown and exit 0.

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

import math
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2


from semdepth_core.validation import depth_problem, intrinsics_problem, scale_problem, speed_problem
from semdepth_ros import conversions as C
from semdepth_ros.conversions import stamp_ns
from semdepth_ros.params import (  # noqa: F401 - re-exported for users of the node module
    BACKENDS,
    DEPTH_ENCODINGS,
    ESTIMATED_SCALE_MODES,
    NODE_NAME,
    OUTPUT_TOPICS,
    PARAM_BY_NAME,
    PARAMS,
    SCALE_MODES,
    ParamSpec,
    check_parameter,
    resolve_checkpoint,
)
from semdepth_ros.runtime import (  # noqa: F401 - re-exported
    InputRate,
    Mailbox,
    RateLimitedLog,
    StageTimes,
    nearest_speed,
    release_memory,
    twist_speed,
)

LOSS_WARN_FRACTION = 0.8  # /diagnostics WARN when fewer of the publisher's frames arrive
_PARAM_TYPE = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
               float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
               list: ParameterType.PARAMETER_INTEGER_ARRAY}


# ------------------------------------------------------------------------------------------ node
class DepthNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMS:
            desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                       type=_PARAM_TYPE[type(spec.default)])
            self.declare_parameter(spec.name, spec.default, desc)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.err_log = RateLimitedLog(lambda m: self.get_logger().error(m), self.p("error_log_period"))
        self.warn_log = RateLimitedLog(lambda m: self.get_logger().warning(m), self.p("error_log_period"))
        self.mailbox = Mailbox()
        self.sem_mailbox = Mailbox()  # latest frame for the semantic thread (semantics.rate > 0)
        self.times = StageTimes()
        self.predictor = None
        self.load_error: str | None = None
        self.param_error: str | None = None
        self.stats = {"received": 0, "processed": 0, "skipped_no_subscribers": 0, "bad_images": 0,
                      "failed": 0, "lost_in_transport": 0, "bad_camera_info": 0, "bad_odometry": 0,
                      "implausible_output": 0, "semantic_frames": 0}
        self._last_image = None  # monotonic time of the last image (or of activation)
        self._qos_timer = None
        self._image_fallback = self._image_fallback_done = False
        self._worker: threading.Thread | None = None
        self._sem_worker: threading.Thread | None = None
        self._sem_async = False  # labels computed on their own thread (semantics.rate > 0, unguided model)
        self._sem_next = 0.0  # monotonic time the semantic thread may take its next frame
        self._labels = None  # (stamp_ns, labels [H,W] uint8) of the latest semantic result (async mode)
        self._no_labels = None  # all-255 labels of the current image size (no result yet)
        self._sem_period = 0.0  # s between two frames offered to the semantic thread
        self._label_ages: deque = deque(maxlen=50)  # ms between a depth frame and the labels it carried
        self._sem_done: deque = deque(maxlen=30)  # monotonic times of finished semantic frames
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
        self._ground_stats = None  # HoleCheckStats, from configure (semdepth_core imports torch: kept out of start-up)
        self._scale_value = 1.0
        self._scale_known = True
        self._sizes_logged: set = set()
        self._processed_times: deque = deque(maxlen=30)
        self.input_rate = InputRate()
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
            path = resolve_checkpoint(ckpt)
            if self.p("num_threads") > 0:
                import torch

                torch.set_num_threads(int(self.p("num_threads")))
            from semdepth_core.infer import load_predictor

            h, w = self.p("input_height"), self.p("input_width")
            t0 = time.perf_counter()
            rate = float(self.p("semantics.rate"))
            self.predictor = load_predictor(path, backend=self.p("backend"), device=self.p("device"),
                                            height=h or None, width=w or None, split_semantics=rate > 0)
            self.get_logger().info(f"loaded {self.predictor} from {path} in {time.perf_counter() - t0:.1f}s")
            self._sem_async = rate > 0 and self.predictor.semantics_separable
            self._sem_period = 1.0 / rate if rate > 0 else 0.0
            if rate > 0 and self.predictor.has_semantics and not self._sem_async:
                self.get_logger().info("semantics.rate > 0 ignored: this model's semantic net guides its depth net "
                                       "(or the backend runs them as one), so labels come with every frame")
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
        sensor = self._sensor_qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in
                                                  ("history", "depth", "reliability", "durability")})
        self._image_fallback = self._image_fallback_done = False
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
            self._image_subscription(sensor, over),  # first: _apply_image_fallback replaces it
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, sensor,
                                     qos_overriding_options=over),
            self.create_subscription(Odometry, "odom", self._on_odom, sensor, qos_overriding_options=over),
        ]
        self._qos_timer = self.create_timer(0.2, self._apply_image_fallback)
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _image_subscription(self, sensor: QoSProfile, over: QoSOverridingOptions, fallback: bool = False):
        """The image input: raw Image on `image`, or CompressedImage on `<image>/compressed` (image_transport).

        image_qos auto: BEST_AVAILABLE (reliable when every publisher found now is reliable; camera-sized frames
        then arrive whole between processes), re-created best effort when a best-effort publisher shows up later
        (`fallback`), instead of receiving nothing from it. Frames the transport loses are counted.
        """
        mode = self.p("image_qos")
        reliability = {"sensor_data": sensor.reliability, "reliable": ReliabilityPolicy.RELIABLE,
                       "auto": ReliabilityPolicy.BEST_AVAILABLE}[mode]
        if fallback:
            reliability = ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=sensor.history, depth=sensor.depth, durability=sensor.durability,
                         reliability=reliability)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_image_incompatible_qos,
                                            message_lost=self._on_image_lost)
        if self.p("image_transport") == "compressed":
            # image_transport's convention: the compressed stream of `/cam/image_raw` is `/cam/image_raw/compressed`
            # (the `image` remap applies to the base name, so resolve it before adding the suffix)
            msg_type, topic = CompressedImage, self.image_topic()
        else:
            msg_type, topic = Image, "image"
        return self.create_subscription(msg_type, topic, self._on_image, qos, qos_overriding_options=over,
                                        event_callbacks=events)

    def _on_image_incompatible_qos(self, info) -> None:
        if self.p("image_qos") == "auto" and not self._image_fallback:
            self._image_fallback = True  # re-subscribed from the timer, outside this subscription's callback
            self.get_logger().warning(f"a best-effort publisher on {self.image_topic()}: switching the image "
                                      "subscription to best effort (camera-sized frames need the shipped Fast DDS "
                                      "profile in the publisher then; see the README)")
        else:
            self.err_log("image_qos", f"a publisher on {self.image_topic()} offers a QoS incompatible with "
                                      f"image_qos {self.p('image_qos')!r} ({info.last_policy_kind}); no images from it")

    def _on_image_lost(self, info) -> None:
        self.stats["lost_in_transport"] += int(info.total_count_change)

    def _apply_image_fallback(self) -> None:
        if self._image_fallback and not self._image_fallback_done and self._subs:
            self._image_fallback_done = True
            old = self._subs[0]
            self._subs[0] = self._image_subscription(self._sensor_qos, QoSOverridingOptions.with_default_policies(),
                                                     fallback=True)
            self.destroy_subscription(old)

    def image_topic(self) -> str:
        """The resolved topic the images arrive on."""
        base = self.resolve_topic_name("image")
        return base.rstrip("/") + "/compressed" if self.p("image_transport") == "compressed" else base

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.mailbox.clear()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="depth_worker", daemon=True)
        self._worker.start()
        if self._sem_async:
            self.sem_mailbox.clear()
            self._sem_worker = threading.Thread(target=self._sem_work, name="semantic_worker", daemon=True)
            self._sem_worker.start()
        self._last_image = time.monotonic()  # the input timeout counts from activation
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
            self.destroy_lifecycle_publisher(pub)  # also unregisters it from the lifecycle's managed entities
        self._subs, self._pubs = [], {}
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        if self.predictor is not None:
            self.predictor.close()
        self.predictor = None
        self._points_msg = None
        self._prev = None
        self._labels = None
        self._sem_async = False
        release_memory()  # configure/cleanup cycles stay flat instead of growing by the model's working set

    def shutdown_cleanly(self) -> None:
        """Stop serving and release everything (process exit): the lifecycle `shutdown` transition."""
        if self._state == "finalized":
            return
        try:
            self.trigger_shutdown()
        except Exception as exc:  # noqa: BLE001 - never leave the worker running
            self.get_logger().warning(f"shutdown transition failed ({type(exc).__name__}: {exc}); stopping directly")
            self._active = False
            self.stop_worker()
            self._release()
            self._state = "finalized"

    def stop_worker(self) -> None:
        self._stop.set()
        for attr in ("_worker", "_sem_worker"):
            w = getattr(self, attr)
            setattr(self, attr, None)
            if w is not None and w is not threading.current_thread():
                w.join(timeout=10.0)
        self.mailbox.clear()
        self.sem_mailbox.clear()

    # -------------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        if not self._active:
            return
        self.stats["received"] += 1
        self._last_image = time.monotonic()
        self.input_rate.add(stamp_ns(msg.header), self._last_image)
        self.mailbox.put((msg, self._last_image))

    def _on_camera_info(self, msg) -> None:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not (K == 0).all():  # all zero = an uncalibrated camera: kept, and reported where K is needed
            reason = intrinsics_problem(K, int(msg.width), int(msg.height))
            if reason:
                self.stats["bad_camera_info"] += 1
                self.err_log("camera_info", f"CameraInfo on {self.resolve_topic_name('camera_info')} rejected: "
                                            f"{reason}; keeping the previous one")
                return
        with self._lock:
            self._camera_info = msg

    def _on_odom(self, msg) -> None:
        speed = twist_speed(msg)
        reason = speed_problem(speed, self.p("scale.max_speed"))
        if reason:
            self.stats["bad_odometry"] += 1
            self.err_log("odom", f"odometry on {self.resolve_topic_name('odom')} rejected: {reason} (twist "
                                f"{msg.twist.twist.linear.x}, {msg.twist.twist.linear.y}, "
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

    def _sem_work(self) -> None:
        """Semantic thread (semantics.rate > 0): labels of the latest offered frame, published with its header."""
        while not self._stop.is_set():
            item = self.sem_mailbox.get(timeout=0.1)
            if item is None:
                continue
            rgb, header = item
            try:
                labels, timings = self.predictor.predict_labels(rgb)
            except Exception as exc:  # noqa: BLE001 - one bad frame never stops the worker
                self.stats["failed"] += 1
                self.err_log("semantics", f"semantic labels failed: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self._labels = (stamp_ns(header), labels)
            self.stats["semantic_frames"] += 1
            self._sem_done.append(time.monotonic())
            self.times.add("semantics", timings["semantics"])
            self._publish_labels(labels, header)

    def _offer_semantics(self, rgb, header) -> None:
        """Hand the frame to the semantic thread when semantics.rate allows (the mailbox keeps the latest)."""
        now = time.monotonic()
        if now >= self._sem_next:
            self._sem_next = now + self._sem_period
            self.sem_mailbox.put((rgb, header))

    def _current_labels(self, stamp: int, shape) -> np.ndarray | None:
        """The latest labels for a depth frame (async mode): all 255 (unknown) before the first result or
        after a size change, so the cloud keeps its fields; their age is recorded for /diagnostics."""
        with self._lock:
            latest = self._labels
        if latest is None or latest[1].shape != tuple(shape):
            if self._no_labels is None or self._no_labels.shape != tuple(shape):
                self._no_labels = np.full(shape, 255, np.uint8)  # made once per image size, never written to
            return self._no_labels
        self._label_ages.append(abs(stamp - latest[0]) / 1e6)
        return latest[1]

    def _publish_labels(self, labels, header) -> None:
        subs = self._subscribed()
        if subs.get("semantic"):
            self._pubs["semantic"].publish(C.labels_to_image_msg(labels, header))
        if subs.get("semantic/color"):
            from semdepth_core.data.labels import colorize

            self._pubs["semantic/color"].publish(C.rgb_to_image_msg(colorize(labels), header))

    def _subscribed(self) -> dict[str, bool]:
        return {k: pub.get_subscription_count() > 0 for k, pub in self._pubs.items()}

    def _process(self, msg, t_recv: float) -> None:
        subs = self._subscribed()
        if not any(subs.values()):
            self.stats["skipped_no_subscribers"] += 1
            return
        t0 = time.perf_counter()
        try:
            rgb = C.compressed_image_msg_to_rgb(msg) if isinstance(msg, CompressedImage) else C.image_msg_to_rgb(msg)
        except C.ImageConversionError as exc:
            self.stats["bad_images"] += 1
            self.err_log(f"image.{exc.kind}", f"image on {self.image_topic()} dropped: {exc}")
            return
        t1 = time.perf_counter()
        pred = self.predictor.predict(rgb, semantics=not self._sem_async)
        t2 = time.perf_counter()
        labels = pred.labels
        if self._sem_async:
            self._offer_semantics(rgb, msg.header)
            labels = self._current_labels(stamp_ns(msg.header), pred.depth.shape)
        ground_check = self.p("ground_check.enabled")
        depth_net = K_net = None
        mode = self.p("scale.mode")
        if self._scale_reset_pending:  # a scale parameter changed: new estimators before this frame
            self._reset_scale()
        model_check = mode == "model" and self._model_check is not None and self._model_check.due(time.monotonic())
        if ground_check or mode == "camera_height" or model_check:
            from semdepth_core.infer.processing import inv_depth_to_depth

            # the ground plane is fitted at the network resolution, clamped like the published depth
            depth_net = inv_depth_to_depth(pred.inv_depth, self.predictor.min_depth, self.predictor.max_depth)
            K_net = self._network_K(depth_net.shape[1], depth_net.shape[0])
        scale = self._update_scale(rgb, stamp_ns(msg.header), depth_net, K_net)
        if model_check and K_net is not None:
            self._check_model_scale(depth_net, K_net)
        problem = depth_problem(pred.depth, self.predictor.min_depth, self.predictor.max_depth) or (
            None if scale == 1.0 else scale_problem(scale))
        if problem:  # never published as if it were good
            self.stats["implausible_output"] += 1
            self.err_log("output", f"frame {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} not published: "
                                   f"{problem}")
            return
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
        if pred.labels is not None:  # labels of this very frame (else the semantic thread publishes them)
            self._publish_labels(pred.labels, header)
        if subs["depth/camera_info"] or subs["points"]:
            info = self._camera_info_for(W, H)
            if info is not None:
                info.header = header
                if subs["depth/camera_info"]:
                    self._pubs["depth/camera_info"].publish(info)
                if subs["points"]:
                    self._publish_points(header, depth, info, rgb, labels)
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
        t0 = time.perf_counter()
        msg = C.depth_to_pointcloud2(header, depth, K, rgb, labels, stride=self.p("points.stride"),
                                     max_range=self.p("points.max_range"), min_range=self.p("points.min_range"),
                                     exclude_labels=excl, organized=self.p("points.organized"),
                                     reuse=self._points_msg)
        self.times.add("cloud", (time.perf_counter() - t0) * 1e3)  # building the cloud (inside `publish`)
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
        from semdepth_core.geometry.ground_check import HoleCheck, infinite_depth_check

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
        from semdepth_core.geometry.ground_check import HoleCheckStats
        from semdepth_core.infer.scale import CameraHeightScaleEstimator, ModelScaleCheck

        if self._ground_stats is None:
            self._ground_stats = HoleCheckStats()

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
        if value is not None and scale_problem(float(value)):
            self.err_log("scale_estimate", f"scale estimate rejected: {scale_problem(float(value))}; model units")
            value = None
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
    def _waiting_for_input(self) -> float | None:
        """Seconds without an image while active with a subscriber waiting, when over input_timeout (else None)."""
        if self._state != "active" or self._last_image is None or not any(self._subscribed().values()):
            return None
        idle = time.monotonic() - self._last_image
        return idle if idle > self.p("input_timeout") else None

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
        inrate = self.input_rate.estimate() if self._state == "active" else None
        lossy = inrate is not None and inrate["received_fraction"] < LOSS_WARN_FRACTION
        if self.load_error or self.param_error:
            st.level, st.message = DiagnosticStatus.ERROR, self.load_error or f"invalid parameters: {self.param_error}"
        elif self._state != "active":
            st.level, st.message = DiagnosticStatus.WARN, f"{self._state}: not serving"
        elif self._waiting_for_input() is not None:
            st.level = DiagnosticStatus.WARN
            msgs = [f"no input: no image on {self.image_topic()} for {self._waiting_for_input():.1f} s while "
                    "outputs have subscribers", *recent_err.values(), *recent_warn.values()]
            if not self._scale_known:
                msgs.append("metric scale not known yet: depth in model units")
            st.message = " | ".join(msgs)
        elif recent_err or lossy or recent_warn or not self._scale_known:
            st.level = DiagnosticStatus.WARN
            msgs = ["recent errors: " + " | ".join(recent_err.values())] if recent_err else []
            if lossy:
                msgs.append(f"receiving {inrate['received_hz']:.1f} Hz of a {inrate['publisher_hz']:.1f} Hz stream "
                            f"({100 * inrate['received_fraction']:.0f} % of the frames): frames are lost in transport "
                            "(image_qos, or the shipped Fast DDS profile in the publisher; see the README)")
            msgs += list(recent_warn.values())
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
            "semantic_frames": self.stats["semantic_frames"],
            "frames_dropped": self.mailbox.dropped,
            "frames_lost_in_transport": self.stats["lost_in_transport"],
            "input.received_hz": "none" if inrate is None else f"{inrate['received_hz']:.2f}",
            "input.publisher_hz": "none" if inrate is None else f"{inrate['publisher_hz']:.2f}",
            "input.received_fraction": "none" if inrate is None else f"{inrate['received_fraction']:.3f}",
            "image_topic": self.image_topic(),
            "image_qos": ("best_effort (fallback)" if self._image_fallback_done else self.p("image_qos")),
            "frames_skipped_no_subscribers": self.stats["skipped_no_subscribers"],
            "bad_images": self.stats["bad_images"],
            "bad_camera_info": self.stats["bad_camera_info"],
            "bad_odometry": self.stats["bad_odometry"],
            "implausible_output": self.stats["implausible_output"],
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
        if self.p("ground_check.enabled") and self._ground_stats is not None:
            gs = self._ground_stats
            vals["ground_check.frames_checked"] = gs.checked
            vals["ground_check.frames_flagged"] = gs.flagged
            vals["ground_check.frames_unchecked"] = gs.unchecked
            vals["ground_check.last_count"] = "none" if gs.last_count is None else gs.last_count
            if gs.last_reason:
                vals["ground_check.last_unchecked_reason"] = gs.last_reason
        for kind, n in sorted(self.err_log.counts.items()):
            vals[f"errors.{kind}"] = n
        if self.predictor is not None and self.predictor.has_semantics:
            vals["semantics.mode"] = "async" if self._sem_async else "every_frame"
            if self._sem_async:
                done = list(self._sem_done)
                rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
                vals["semantics.rate_hz"] = f"{rate:.2f}"
                ages = list(self._label_ages)
                vals["semantics.label_age_ms"] = f"{float(np.mean(ages)):.1f}" if ages else "none"
        for stage, ms in sorted(self.times.means().items()):
            vals[f"time_ms.{stage}"] = f"{ms:.2f}"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._diag_pub.publish(arr)



class _ShutdownRequest:
    """SIGINT/SIGTERM handler for the node process: the first signal asks for a clean shutdown, repeats are
    counted and logged, never raised (a KeyboardInterrupt inside the clean-up, or rclpy tearing the context
    down under a running worker, is what aborts a process with `terminate called without an active exception`)."""

    def __init__(self):
        self.event = threading.Event()
        self.signals: list[int] = []
        self.node = None

    def __call__(self, signum, _frame) -> None:
        self.signals.append(signum)
        if self.event.is_set():
            if self.node is not None:
                self.node.get_logger().info(f"{signal.Signals(signum).name} again: already shutting down")
            return
        self.event.set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def main(argv: list[str] | None = None) -> int:
    """Entry point `depth_node`; SIGINT/SIGTERM, once or repeated, shut it down cleanly (exit status 0)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    request = _ShutdownRequest()
    request.install()  # before anything slow: a signal during the model load is honoured after it
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        node = request.node = DepthNode()
        if node.p("autostart") and not request.event.is_set():
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                if not request.event.is_set():
                    node.trigger_activate()
            else:
                node.get_logger().error(f"not serving: {node.load_error}; /diagnostics reports ERROR")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not request.event.is_set() and rclpy.ok():
            # short waits: Python runs the signal handler between two of them
            executor.spin_once(timeout_sec=0.1)
        if request.signals:
            node.get_logger().info(f"{signal.Signals(request.signals[0]).name}: shutting down")
    finally:
        if node is not None:
            node.shutdown_cleanly()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        # the interpreter's own teardown (DDS participants, threads) follows: Python puts its handlers back to the
        # default there, so one more SIGINT/SIGTERM from `ros2 launch` would kill the process mid-teardown.
        # Ignored signals stay ignored through it.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
