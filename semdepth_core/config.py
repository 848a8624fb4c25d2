"""One config system for training, evaluation, export and the node: dataclasses <-> YAML.

`load_config(path, overrides)` reads a YAML file into `Config`, applies `key.sub=value`
overrides (values parsed as YAML), and validates every field; any error names the key.

Configs by difference: a file may name another with `base: other.yaml` (relative to the file); the
file's keys are merged over its base's, section by section (mappings merge, lists and values replace),
and bases may have bases. `load_config_data` returns that merged mapping; `from_dict(cls, data)` turns a
mapping into any config dataclass with the same type checks, so another tool (`training.train_semantic`)
uses the same loader, overrides and errors with its own schema.

OmegaConf's structured configs were weighed for this (dataclass schemas, YAML merging, dotlist
overrides; packnet-sfm does the same with yacs). The hand-written loader stays because what it needs
beyond today is the ~30-line merge below, because its errors name the key and the rule broken
(`data.sources[1].cams: expected a list, got 2`, choices, ranges; tests pin them), which OmegaConf words
differently and without our range checks, and because interpolation and a new dependency in the node's
install buy nothing here.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the offending key."""


@dataclass
class AugmentConfig:
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    jitter_prob: float = 1.0
    grayscale_prob: float = 0.0  # network input turned grey (3 equal channels): covers greyscale cameras


@dataclass
class SyntheticConfig:
    """Synthetic KITTI-format drives generated on demand into `cache_dir`."""
    cache_dir: str = "data/synthetic"
    train_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    val_seeds: list[int] = field(default_factory=lambda: [101])
    frames: int = 60
    render_width: int = 640
    render_height: int = 192
    speed: float = 10.0
    lead_car: bool = False
    # seeds (of train_seeds / val_seeds) whose drive has a lead car at ego speed
    lead_car_seeds: list[int] = field(default_factory=list)


@dataclass
class SourceConfig:
    """One data source of `data.kind: mixed` (data.sources / data.val_sources)."""
    kind: str = "kitti"  # kitti (KITTI raw layout) | odometry (KITTI odometry layout) | synthetic | rosbag (data.bag)
    root: str = ""  # kitti / odometry root ("" for synthetic: data.synthetic.cache_dir)
    split: str = ""  # kitti: split file (either format); empty = every frame with its context frames
    drives: list[str] = field(default_factory=list)  # kitti: only these drive folders (empty = all)
    exclude_drives: list[str] = field(default_factory=list)  # kitti: drive folders left out
    sequences: list[str] = field(default_factory=list)  # odometry: sequence names (empty = all)
    cams: list[int] = field(default_factory=list)  # target cameras (empty: kitti/synthetic [2], odometry [0])
    frame_rate: float = 10.0  # odometry without times.txt: frames per second (velocity from pose differences)
    seeds: list[int] = field(default_factory=list)  # synthetic: drive seeds (rendered with data.synthetic)
    repeat: int = 1  # each sample appears this many times per epoch (balances small sources)
    gt_source: str = "auto"  # validation ground truth: auto | velodyne | dense


@dataclass
class HintConfig:
    """Stereo depth hints (Watson et al. 2019): OpenCV SGBM on each rectified pair, cached on disk."""
    num_disparities: int = 128
    block_size: int = 5
    lr_check: bool = True  # keep disparities the other view confirms within 1 px
    min_texture: float = 16.0  # drop pixels with a 9x9 mean |gradient| below this (grey levels): sky, blank walls
    cache_dir: str = ""  # "" = $SEMDEPTH_CACHE/hints (or ~/.cache/semdepth/hints)


@dataclass
class BagConfig:
    """data.kind rosbag: rosbag2 recordings (sqlite3 or mcap) under data.root (one bag or a folder of bags),
    read with `rosbags` by semdepth_ros/bag_dataset.py (topics follow image_transport naming)."""
    image_topic: str = "/camera/image_raw"  # sensor_msgs/Image; if absent, image_topic + "/compressed" (jpeg/png)
    camera_info_topic: str = ""  # "" = the image topic's sibling: <namespace>/camera_info
    odom_topic: str = ""  # nav_msgs/Odometry or geometry_msgs/TwistStamped: speed for velocity supervision ("" = none)
    stereo_image_topic: str = ""  # data.stereo: the other camera of a rectified pair (its camera_info is its sibling)
    # m, data.stereo: the other camera sits this far to the right (T_other_target x = -b); 0 = from the bag's /tf_static
    stereo_baseline: float = 0.0
    frame_period: float = 0.0  # s between a target and its context offset 1; 0 = each bag's median image interval
    context_tolerance: float = 0.3  # a context image may be this fraction of frame_period away from its ideal time
    odom_tolerance: float = 0.05  # s: max gap between an image and the odometry giving its speed
    stereo_tolerance: float = 0.01  # s: max gap between the two images of a stereo pair
    static_filter: str = "auto"  # auto (odometry if present, else image) | odometry | image | none
    min_speed: float = 0.3  # m/s: slower targets are static (odometry filter)
    min_image_change: float = 1.0  # mean |grey difference| (0-255, 64-px-wide thumbnails) to the previous frame
    val_fraction: float = 0.0  # the last fraction of each bag (by time) is held out of training
    index_cache: bool = True  # keep each bag's index in $SEMDEPTH_CACHE/bag_index (a restart skips the pass over it)


@dataclass
class DataConfig:
    kind: str = "kitti"  # kitti | synthetic | mixed (data.sources) | rosbag (data.root: bag or folder, data.bag)
    root: str = ""  # KITTI raw root (holds YYYY_MM_DD folders); kind rosbag: a rosbag2 folder or a folder of them
    train_split: str = ""  # split file; empty = every frame with context under root
    # training refuses samples from the 28 Eigen test drives (semdepth_core/data/eigen_test_drives.txt) unless true
    allow_test_drives: bool = False
    val_root: str = ""  # empty = root
    val_split: str = ""
    height: int = 192
    width: int = 640
    context: list[int] = field(default_factory=lambda: [-1, 1])
    cam: int = 2
    batch_size: int = 4
    val_batch_size: int = 1
    num_workers: int = 0
    gt_source: str = "auto"  # auto | velodyne | dense
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sources: list[SourceConfig] = field(default_factory=list)  # kind mixed: the training sources
    val_sources: list[SourceConfig] = field(default_factory=list)  # kind mixed: validation (empty = none)
    stereo: bool = False  # the other camera of each target's rectified pair is one more context (MS)
    depth_hints: bool = False  # SGBM depth of the stereo pair as `depth_hint` (loss.depth_hint_weight)
    cache_images: bool = False  # keep the resized training images in memory (small real sets: no PNG decoding per step)
    hints: HintConfig = field(default_factory=HintConfig)
    bag: BagConfig = field(default_factory=BagConfig)


@dataclass
class SemanticConfig:
    enabled: bool = False
    arch: str = "espnet"  # espnet | fpn_resnet18 | fpn_resnet50
    weights: str = ""  # path to a state_dict / semdepth semantic checkpoint
    num_classes: int = 20
    finetune: bool = False  # Table 3 "D+S": also fine-tune the semantic net on the depth task
    pretrained_backbone: str = ""  # ImageNet encoder weights for the FPN backbone
    input_scale: float = 1.0  # the semantic net sees the depth input resized by this (ESPNet CS on KITTI 640x192: 2)


@dataclass
class ModelConfig:
    depth_net: str = "resnet18"  # resnet18 | resnet50 | mobilenetv2 | packnet01
    pose_net: str = "posenet"
    pose_encoder: str = "basic"  # basic (PackNet's PoseNet) | resnet18 | mobilenetv2
    pretrained: str = ""  # ImageNet weights for the depth encoder ("" = random init)
    pose_pretrained: str = ""
    min_depth: float = 0.1
    max_depth: float = 100.0
    # initial depth (m) of the inverse-depth heads, set through their bias (0 = bias 0, i.e. sigmoid(0):
    # ~0.2 m for 0.1-100 m, Monodepth2's start). Training only; a loaded checkpoint overrides it.
    init_depth: float = 0.0
    guidance: bool = False  # pixel-adaptive convolutions guided by the semantic net
    pac_sigma_mode: str = "layer"  # layer | filter
    packnet_version: str = "1A"
    decoder_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # Monodepth2 widths
    mobilenet_last_block: int = 18  # MobileNetV2 stride-32 output: 18 = 1280-ch head (full), 17 = 320-ch, 16 = 160-ch
    pose_width: float = 1.0  # width multiplier of the basic PoseNet, and of the pretrained encoders' pose head
    pose_last_block: int = 18  # MobileNetV2 pose encoder: its last block (as mobilenet_last_block)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)


@dataclass
class LossConfig:
    ssim_alpha: float = 0.85  # Eq. 2
    smoothness_weight: float = 1e-3  # lambda_1, Eq. 1
    automask: bool = True
    min_reprojection: bool = True
    upsample_scales: bool = True
    num_scales: int = 4
    velocity_weight: float = 0.0  # 0.1 with velocity supervision
    # warp with each image's inverse depth divided by its mean (Wang et al., CVPR 2018): removes the
    # scale drift of scale-free training. The (then unobservable) depth scale is held by
    # `scale_anchor_weight`, and with velocity_weight > 0 it is set by the velocity instead
    # (losses/scale.py: depth_scale_loss)
    depth_normalization: bool = False
    # depth_normalization only: weight of |log mean(1/D) - log(1/scale_anchor_depth)| per image and scale.
    # It fixes the gauge the normalised photometric loss leaves free, so the raw output cannot drift
    # into a saturated sigmoid (the collapse of docs/experiments.md); the warped images do not depend on it
    scale_anchor_weight: float = 0.0
    scale_anchor_depth: float = 10.0  # metres
    # with velocity supervision: train scale-free (depth_normalization, no velocity term) for this many
    # steps first, so the pose net learns the direction of motion before the velocity term fixes its length
    velocity_warmup_steps: int = 0
    depth_hint_weight: float = 0.0  # Depth Hints (needs data.depth_hints): 1.0 as Watson et al.
    # better: the hint pulls only where it reprojects the stereo image better than the prediction (Watson
    # et al.); always: wherever there is a hint (distillation of the stereo matcher, for short schedules)
    depth_hint_mode: str = "better"
    # SegDepth auxiliary segmentation loss (0 = off)
    segdepth_weight: float = 0.0
    segdepth_w0: float = 10.0
    segdepth_sigma: float = 5.0


@dataclass
class OptimConfig:
    depth_lr: float = 2e-4
    pose_lr: float = 5e-4
    weight_decay: float = 0.0
    step_epochs: int = 20  # halve learning rates every step_epochs (paper §5.2)
    gamma: float = 0.5
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"
    epochs: int = 20
    seed: int = 42
    device: str = "auto"  # cpu | cuda | auto
    max_minutes: float = 0.0  # wall-clock budget (0 = none)
    max_steps: int = 0  # 0 = none
    steps_per_epoch: int = 0  # 0 = full pass over the data
    log_every: int = 10
    image_every: int = 200
    val_every_epochs: int = 1
    checkpoint_every_steps: int = 0  # 0 = only at epoch end
    tensorboard: bool = True
    num_threads: int = 0  # torch CPU threads per process (0 = library default / cores per process)
    # keep the frozen semantic net's guidance features of every training image in memory (computed once on the
    # un-jittered image; a flipped sample gets them mirrored): the semantic net then costs nothing per step
    cache_semantics: bool = False
    # fine-tuning (e.g. the paper's Cityscapes -> KITTI schedule): a checkpoint whose network weights start this
    # run; tensors with the same name and shape are copied, new layers (e.g. PAC guidance) keep their
    # initialisation, and the optimiser, schedule and counters start fresh (--resume continues a run instead)
    init_from: str = ""


@dataclass
class TwoStageConfig:
    """Two-stage training against infinite depth (paper §4.3): the stage-1 filter's settings."""
    margin: float = 0.5  # metres a point must lie below the fitted ground plane to count
    # ... plus this many metres per metre of its depth: tolerates a plane fit tilted by up to ~2.9 degrees
    # (on held-out synthetic drives a stage-1 model's correct far road fell below an untolerant plane)
    margin_slope: float = 0.05
    max_below_pixels: int = 10  # drop a training image when more pixels than this fall below (§4.3)
    camera_height: float = 1.65  # known mounting height (m) making stage-1 depth metric; 0 = depth as is
    row_fraction: float = 0.6  # the ground is fitted on rows below this fraction of the image height
    max_range: float = 20.0  # ... and on points nearer than this (metres)
    examples: int = 4  # overlay PNGs of dropped images written with the report


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    two_stage: TwoStageConfig = field(default_factory=TwoStageConfig)


_CHOICES = {
    "data.kind": {"kitti", "synthetic", "mixed", "rosbag"},
    "data.bag.static_filter": {"auto", "odometry", "image", "none"},
    "data.gt_source": {"auto", "velodyne", "dense"},
    "model.depth_net": {"resnet18", "resnet50", "mobilenetv2", "packnet01"},
    "model.pose_net": {"posenet"},
    "model.pose_encoder": {"basic", "resnet18", "mobilenetv2"},
    "model.pac_sigma_mode": {"layer", "filter"},
    "model.semantic.arch": {"espnet", "fpn_resnet18", "fpn_resnet50"},
    "train.device": {"cpu", "cuda", "auto"},
    "loss.depth_hint_mode": {"better", "always"},
}


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Coerce/validate `value` against the annotation `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_value(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                parsed = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
            if parsed != parsed or parsed in (float("inf"), float("-inf")):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            value = parsed
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        choices = _CHOICES.get(key)
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {sorted(choices)}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(f"{prefix + '.' if prefix else ''}{k}: unknown key (known: {sorted(names)})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(key, hints[name], value)
    obj = cls(**kwargs)
    # validate defaults too (choices) for a clear message if a default is ever wrong
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if key in _CHOICES and getattr(obj, f.name) not in _CHOICES[key]:
            raise ConfigError(f"{key}: {getattr(obj, f.name)!r} is not one of {sorted(_CHOICES[key])}")
    return obj


def config_from_dict(data: dict | None) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    cfg = _from_dict(Config, data or {})
    _validate_ranges(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _validate_ranges(cfg: Config) -> None:
    checks = [
        ("data.height", cfg.data.height > 0 and cfg.data.height % 32 == 0, "must be a positive multiple of 32"),
        ("data.width", cfg.data.width > 0 and cfg.data.width % 32 == 0, "must be a positive multiple of 32"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("data.context", len(cfg.data.context) >= 1 and 0 not in cfg.data.context, "must list non-zero frame offsets"),
        ("model.min_depth", 0 < cfg.model.min_depth < cfg.model.max_depth, "must satisfy 0 < min_depth < max_depth"),
        ("model.decoder_channels", len(cfg.model.decoder_channels) == 5 and min(cfg.model.decoder_channels) > 0,
         "must list 5 positive widths (strides 1, 2, 4, 8, 16)"),
        ("model.pose_width", 0 < cfg.model.pose_width <= 4, "must be in (0, 4]"),
        ("model.semantic.input_scale", 0.25 <= cfg.model.semantic.input_scale <= 4,
         "must be in [0.25, 4]"),
        ("model.mobilenet_last_block", cfg.model.mobilenet_last_block in (16, 17, 18), "must be 16, 17 or 18"),
        ("model.pose_last_block", cfg.model.pose_last_block in (16, 17, 18), "must be 16, 17 or 18"),
        ("loss.ssim_alpha", 0.0 <= cfg.loss.ssim_alpha <= 1.0, "must be in [0, 1]"),
        ("loss.num_scales", 1 <= cfg.loss.num_scales <= 4, "must be in [1, 4]"),
        ("loss.smoothness_weight", cfg.loss.smoothness_weight >= 0, "must be >= 0"),
        ("loss.velocity_weight", cfg.loss.velocity_weight >= 0, "must be >= 0"),
        ("loss.depth_hint_weight", cfg.loss.depth_hint_weight >= 0, "must be >= 0"),
        ("data.augment.grayscale_prob", 0 <= cfg.data.augment.grayscale_prob <= 1, "must be in [0, 1]"),
        ("data.hints.num_disparities", cfg.data.hints.num_disparities > 0 and cfg.data.hints.num_disparities % 16 == 0,
         "must be a positive multiple of 16 (OpenCV SGBM)"),
        ("data.hints.block_size", cfg.data.hints.block_size >= 1 and cfg.data.hints.block_size % 2 == 1,
         "must be odd and >= 1"),
        ("data.bag.frame_period", cfg.data.bag.frame_period >= 0, "must be >= 0 (0 = the median image interval)"),
        ("data.bag.context_tolerance", 0 < cfg.data.bag.context_tolerance < 0.5, "must be in (0, 0.5)"),
        ("data.bag.odom_tolerance", cfg.data.bag.odom_tolerance > 0, "must be > 0"),
        ("data.bag.stereo_tolerance", cfg.data.bag.stereo_tolerance > 0, "must be > 0"),
        ("data.bag.min_speed", cfg.data.bag.min_speed >= 0, "must be >= 0"),
        ("data.bag.min_image_change", cfg.data.bag.min_image_change >= 0, "must be >= 0"),
        ("data.bag.val_fraction", 0 <= cfg.data.bag.val_fraction < 1, "must be in [0, 1)"),
        ("data.bag.stereo_baseline", cfg.data.bag.stereo_baseline >= 0, "must be >= 0"),
        ("loss.scale_anchor_weight", cfg.loss.scale_anchor_weight >= 0, "must be >= 0"),
        ("loss.scale_anchor_depth", cfg.model.min_depth < cfg.loss.scale_anchor_depth < cfg.model.max_depth,
         "must lie strictly between model.min_depth and model.max_depth"),
        ("optim.depth_lr", cfg.optim.depth_lr > 0, "must be > 0"),
        ("optim.pose_lr", cfg.optim.pose_lr > 0, "must be > 0"),
        ("optim.step_epochs", cfg.optim.step_epochs >= 1, "must be >= 1"),
        ("train.epochs", cfg.train.epochs >= 1, "must be >= 1"),
        ("two_stage.margin", cfg.two_stage.margin >= 0, "must be >= 0"),
        ("two_stage.margin_slope", cfg.two_stage.margin_slope >= 0, "must be >= 0"),
        ("two_stage.max_below_pixels", cfg.two_stage.max_below_pixels >= 0, "must be >= 0"),
        ("two_stage.camera_height", cfg.two_stage.camera_height >= 0, "must be >= 0"),
        ("two_stage.row_fraction", 0 <= cfg.two_stage.row_fraction < 1, "must be in [0, 1)"),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(f"{key}: {msg}")
    for group in ("sources", "val_sources"):
        for i, src in enumerate(getattr(cfg.data, group)):
            key = f"data.{group}[{i}]"
            if src.kind not in ("kitti", "odometry", "synthetic", "rosbag"):
                raise ConfigError(f"{key}.kind: {src.kind!r} is not one of ['kitti', 'odometry', 'rosbag', 'synthetic']")
            if src.kind != "synthetic" and not src.root:
                raise ConfigError(f"{key}.root: required for kind {src.kind}")
            if src.kind == "synthetic" and not src.seeds:
                raise ConfigError(f"{key}.seeds: a synthetic source needs drive seeds")
            if src.repeat < 1:
                raise ConfigError(f"{key}.repeat: must be >= 1")
            if src.frame_rate <= 0:
                raise ConfigError(f"{key}.frame_rate: must be > 0")
            if src.gt_source not in ("auto", "velodyne", "dense"):
                raise ConfigError(f"{key}.gt_source: {src.gt_source!r} is not one of ['auto', 'dense', 'velodyne']")
            valid_cams = {"odometry": (0, 1, 2, 3), "rosbag": (2,)}.get(src.kind, (2, 3))
            if any(c not in valid_cams for c in src.cams):
                raise ConfigError(f"{key}.cams: {src.cams} (a {src.kind} source has cameras {list(valid_cams)})")
    if cfg.data.kind == "mixed" and not cfg.data.sources:
        raise ConfigError("data.sources: data.kind mixed needs at least one source")
    if cfg.data.kind != "mixed" and (cfg.data.sources or cfg.data.val_sources):
        raise ConfigError("data.sources: only used with data.kind: mixed")
    if cfg.data.kind == "rosbag":  # data.root is checked when the datasets are built (configs ship it empty)
        if cfg.data.bag.static_filter == "odometry" and not cfg.data.bag.odom_topic:
            raise ConfigError("data.bag.static_filter: odometry needs data.bag.odom_topic (or use image / auto)")
        if cfg.data.stereo and not cfg.data.bag.stereo_image_topic:
            raise ConfigError("data.bag.stereo_image_topic: data.stereo with rosbags needs the other camera's image topic")
        if cfg.data.depth_hints:
            raise ConfigError("data.depth_hints: not supported for data.kind rosbag")
    if cfg.data.stereo and cfg.loss.depth_normalization:
        raise ConfigError("data.stereo: the stereo context warps with metric depth; set loss.depth_normalization: false")
    if cfg.data.depth_hints and not cfg.data.stereo:
        raise ConfigError("data.depth_hints: hints come from the stereo pair; set data.stereo: true")
    if cfg.loss.depth_hint_weight > 0 and not cfg.data.depth_hints:
        raise ConfigError("loss.depth_hint_weight: needs data.depth_hints: true")
    if cfg.data.depth_hints and not cfg.loss.upsample_scales:
        raise ConfigError("data.depth_hints: hints are compared at the input resolution; set loss.upsample_scales: true")
    if cfg.train.cache_semantics and (not cfg.model.guidance or cfg.model.semantic.finetune
                                      or cfg.loss.segdepth_weight > 0):
        raise ConfigError("train.cache_semantics: needs model.guidance with a frozen semantic net "
                          "(not model.semantic.finetune) and no SegDepth loss (it needs the logits)")
    if cfg.model.guidance and not cfg.model.semantic.enabled:
        raise ConfigError("model.guidance: requires model.semantic.enabled: true")
    if cfg.loss.segdepth_weight > 0 and not cfg.model.semantic.enabled:
        raise ConfigError("loss.segdepth_weight: SegDepth takes its fg/bg targets from the frozen semantic net; "
                          "set model.semantic.enabled: true")


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `key.sub=value` override; the value is YAML (so 1e-3, true, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from exc
    if value is None:
        value = ""
    return key, value


BASE_KEY = "base"


def merge_config_data(base: dict, over: dict) -> dict:
    """`over` merged onto `base`: mappings merge key by key, anything else in `over` replaces (new dict)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_config_data(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The mapping of one YAML config file with its `base:` chain merged under it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" + (f" (base of {_chain[-1]})" if _chain else ""))
    if p.resolve() in _chain:
        raise ConfigError(f"{p}: base chain loops: {' -> '.join(str(c) for c in (*_chain, p.resolve()))}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: {BASE_KEY}: expected a file name, got {base!r}")
    return merge_config_data(read_config_file(p.parent / base, (*_chain, p.resolve())), data)


def load_config_data(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """YAML at `path` (with its bases; or nothing) + `key=value` overrides -> a nested mapping (unvalidated)."""
    data = read_config_file(path) if path else {}
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_path(data, key, value)
    return data


def config_with_overrides(data: dict, overrides: list[str]) -> Config:
    """A checkpoint's embedded config (a mapping) with `key.sub=value` overrides applied, validated."""
    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: unknown key")
        node[parts[-1]] = value
    return config_from_dict(data)


def from_dict(cls: type, data: dict) -> Any:
    """A nested mapping -> config dataclass `cls`, every value type-checked (errors name the key)."""
    return _from_dict(cls, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML at `path` (or defaults; `base:` chains merged), apply `key=value` overrides, validate."""
    return config_from_dict(load_config_data(path, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
