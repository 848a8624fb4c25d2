"""depth_node parameters: names, defaults, descriptions and validation (no ROS import).

`semdepth_ros.node` declares every `PARAMS` entry as a ROS parameter and checks start-up values and
runtime updates with `check_parameter`; config/depth.yaml lists them with their defaults.
"""
from __future__ import annotations

import array
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from semdepth_core.validation import scale_problem

NODE_NAME = "depth_node"
SCALE_MODES = ("none", "model", "fixed", "odometry", "camera_height")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
OUTPUT_TOPICS = ("depth", "depth/camera_info", "semantic", "semantic/color", "points")
ESTIMATED_SCALE_MODES = ("odometry", "camera_height")  # model units until the first estimate
IMAGE_TRANSPORTS = ("raw", "compressed")
IMAGE_QOS = ("auto", "sensor_data", "reliable")
DEFAULT_CHECKPOINT = "default"  # the `checkpoint` value that names the shipped weights
PACKAGE = "semdepth_ros"


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
    ParamSpec("checkpoint", DEFAULT_CHECKPOINT, "semdepth checkpoint (.ckpt) to load at configure time; 'default' = "
              "the shipped weights (share/semdepth_ros/weights/default.ckpt)", read_only=True),
    ParamSpec("image_transport", "raw", "input transport: raw (sensor_msgs/Image on `image`) or compressed "
              "(sensor_msgs/CompressedImage, jpeg/png, on `image` + '/compressed', as image_transport names it)",
              _in(IMAGE_TRANSPORTS), read_only=True),
    ParamSpec("image_qos", "auto", "QoS of the image subscription (keep last 5): auto (reliable with reliable "
              "publishers, best effort as soon as a best-effort publisher shows up), sensor_data (best effort), "
              "reliable (no data from best-effort publishers)", _in(IMAGE_QOS), read_only=True),
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
    ParamSpec("semantics.rate", 1.0, "semantic labels: 0 = computed with every frame's depth (labels always of "
              "the same frame); > 0 = the semantic net runs on a thread of its own on the latest frame, at most this "
              "often (Hz), while depth and points keep the camera rate and carry the latest labels (their age is on "
              "/diagnostics; `semantic` is published with the stamp of the frame it was computed from). Only for "
              "models whose semantic net guides nothing; guided models compute labels with every frame",
              _non_negative, read_only=True),
    ParamSpec("points.stride", 2, "keep every n-th pixel row/column in the point cloud",
              lambda v: None if 1 <= v <= 64 else f"must be in 1..64, got {v}"),
    ParamSpec("points.organized", True, "organised cloud (image grid, NaN = no point) instead of valid points only"),
    ParamSpec("points.min_range", 0.0, "drop points with depth <= this (m)", _non_negative),
    ParamSpec("points.max_range", 80.0, "drop points with depth > this (m)", _positive),
    ParamSpec("points.exclude_labels", [10], "semantic trainIds left out of the cloud (10 = sky)", _labels),
    ParamSpec("scale.mode", "none", f"metric scale: {list(SCALE_MODES)}", _in(SCALE_MODES)),
    ParamSpec("scale.value", 1.0, "scale factor for scale.mode fixed (1e-4..1e4)",
              lambda v: scale_problem(float(v)) if isinstance(v, (int, float)) else f"must be a number, got {v!r}"),
    ParamSpec("scale.window", 30, "odometry / camera_height scale: rolling-median window (frame pairs / frames)",
              lambda v: None if 1 <= v <= 10000 else f"must be in 1..10000, got {v}"),
    ParamSpec("scale.min_speed", 1.0, "odometry scale: hold the estimate below this speed (m/s)", _non_negative),
    ParamSpec("scale.max_speed", 100.0, "odometry: speeds above this (m/s) are implausible and rejected", _positive),
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
    ParamSpec("input_timeout", 2.0, "/diagnostics WARN 'no input' when an output has a subscriber and no image "
              "arrived for this long (s)", _positive),
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




def shipped_checkpoint() -> Path:
    """The shipped default weights: installed under share/semdepth_ros/weights (colcon), else in the package."""
    looked = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory(PACKAGE)) / "weights" / "default.ckpt"
            if share.is_file():
                return share
            looked.append(str(share))
        except (PackageNotFoundError, OSError, ValueError):  # not installed with colcon / no AMENT_PREFIX_PATH
            looked.append(f"share/{PACKAGE} (package not in the ament index)")
    except ImportError:
        looked.append("the ament index (ament_index_python not installed)")
    here = Path(__file__).resolve().parent / "weights" / "default.ckpt"
    if here.is_file():
        return here
    looked.append(str(here))
    raise FileNotFoundError("the shipped default weights are not installed; looked in: " + ", ".join(looked))


def resolve_checkpoint(value: str) -> Path:
    """The checkpoint file a `checkpoint` parameter names ('default' = the shipped weights)."""
    if not value:
        raise ValueError(f"parameter 'checkpoint' is empty (set -p checkpoint:=/path/model.ckpt, or "
                         f"'{DEFAULT_CHECKPOINT}' for the shipped weights)")
    if value == DEFAULT_CHECKPOINT:
        return shipped_checkpoint()
    return Path(value).expanduser()
