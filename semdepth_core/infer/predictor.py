"""One inference interface over every backend: `load_predictor(...) -> Predictor`.

A backend ("runner") only executes the networks on preprocessed float32 arrays; the `Predictor`
owns the shared pre/post-processing (`processing.py`), the timings and the pose convention, so
the torch, ONNX Runtime and TensorRT paths produce the same outputs from the same code.

Pose convention (docs/architecture.md): the pose network predicts `T_ctx_tgt`, mapping points of
the *target* frame into the *context* frame. `relative_pose(prev_rgb, rgb)` runs it with target =
current frame and context = previous frame, so it returns `T_prev_cur`:
`X_prev = T_prev_cur @ X_cur`, i.e. the pose of the current camera expressed in the previous
camera's frame (driving forward => positive z translation).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from semdepth_core.config import Config
from semdepth_core.infer import processing

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


@dataclass
class Prediction:
    inv_depth: np.ndarray  # [h,w] float32 at the network resolution
    depth: np.ndarray  # [H,W] float32 at the input resolution (model units, metres if is_metric)
    labels: np.ndarray | None  # [H,W] uint8 Cityscapes trainIds (255 = ignore) or None
    timings: dict[str, float] = field(default_factory=dict)  # preprocess/network/postprocess ms


class Runner(Protocol):
    """What a backend provides. Inputs are float32 [1,3,h,w] RGB in [0,1] (numpy)."""

    name: str
    has_semantics: bool
    has_pose: bool
    num_context: int  # context frames the pose network takes (0 without one)

    def run_depth(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """-> (inverse depth [h,w] float32, argmax class indices [h,w] (any int dtype) | None)."""

    def run_pose(self, tgt: np.ndarray, ctxs: list[np.ndarray]) -> np.ndarray:
        """-> pose vectors (tx,ty,tz,rx,ry,rz) of T_ctx_tgt, one per context frame, shape [N,6]."""


class Predictor:
    """Depth (+ semantics, + relative pose) for uint8 RGB frames through one backend runner.

    Network input size: fixed (`net_size`), or with a `runner_factory` chosen per image size by
    `processing.network_size_for` at the pixel budget of `net_size` (the camera's own aspect ratio;
    `runner_factory(size)` builds the runner of a size not seen yet, e.g. an ONNX export for it).
    """

    def __init__(self, runner: Runner, config: Config, net_size: tuple[int, int], checkpoint: Path | None = None,
                 runner_factory=None):
        self._runner = runner
        self.config = config
        self._w, self._h = net_size
        self._default_size = (int(net_size[0]), int(net_size[1]))
        self.checkpoint = checkpoint
        self._factory = runner_factory
        self._runners: dict[tuple[int, int], Runner] = {self._default_size: runner}
        self._lock = threading.Lock()

    @property
    def size_policy(self) -> str:
        """"aspect" (per-image size at the checkpoint's pixel budget) or "fixed"."""
        return "aspect" if self._factory is not None else "fixed"

    def net_size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Network input (w, h) used for an image of image_size=(W, H)."""
        if self._factory is None:
            return self._default_size
        return processing.network_size_for(image_size, self._default_size[0] * self._default_size[1])

    def _runner_for(self, image_size: tuple[int, int]) -> tuple[Runner, tuple[int, int]]:
        """(runner, network size (w, h)) for an image size; safe to call from two threads (the node's
        depth and semantic threads), each using the size it got back."""
        size = self.net_size_for(image_size)
        with self._lock:
            runner = self._runners.get(size)
            if runner is None:
                runner = self._runners[size] = self._factory(size)
            self._runner = runner
            self._w, self._h = size
        return runner, size

    # ------------------------------------------------------------- properties
    @property
    def backend_name(self) -> str:
        return self._runner.name

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input size as (width, height) (the cv2 / resize_intrinsics order) of the latest image
        (before any: the checkpoint's, or the fixed size)."""
        return self._w, self._h

    @property
    def is_metric(self) -> bool:
        """True when the model was trained with velocity supervision (depth in metres)."""
        return self.config.loss.velocity_weight > 0

    @property
    def has_semantics(self) -> bool:
        return bool(self._runner.has_semantics)

    @property
    def has_pose(self) -> bool:
        return bool(self._runner.has_pose)

    @property
    def min_depth(self) -> float:
        return float(self.config.model.min_depth)

    @property
    def max_depth(self) -> float:
        return float(self.config.model.max_depth)

    def network_intrinsics(self, K: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """Intrinsics for the network input, given K of an image of image_size=(W, H)."""
        return processing.network_intrinsics(K, image_size, self.net_size_for(image_size))

    def _network_input(self, rgb: np.ndarray) -> tuple[Runner, np.ndarray]:
        """(runner for this image size, float32 [1,3,h,w] network input) of an HxWx3 uint8 RGB frame."""
        processing.check_rgb(rgb)
        runner, size = self._runner_for((rgb.shape[1], rgb.shape[0]))
        return runner, processing.preprocess(rgb, size)

    @property
    def semantics_separable(self) -> bool:
        """True when the semantic net can run apart from the depth net (`predict(semantics=False)` +
        `predict_labels`): the model has one, it guides nothing, and the backend runs it separately."""
        return (self.has_semantics and not bool(self.config.model.guidance)
                and callable(getattr(self._runner, "run_semantics", None))
                and callable(getattr(self._runner, "run_depth_only", None))
                and getattr(self._runner, "sem_session", True) is not None)

    # ---------------------------------------------------------------- predict
    def predict(self, rgb: np.ndarray, semantics: bool = True) -> Prediction:
        """HxWx3 uint8 RGB -> Prediction (depth and labels at the input resolution).

        semantics=False skips the semantic net where it guides nothing (`semantics_separable`; labels
        are then None; the caller gets them from `predict_labels`, e.g. on another thread)."""
        t0 = time.perf_counter()
        runner, x = self._network_input(rgb)
        t1 = time.perf_counter()
        if semantics or not self.has_semantics:
            inv, labels = runner.run_depth(x)
        else:
            if not self.semantics_separable:
                raise RuntimeError(f"{self!r}: the semantic net cannot run apart from the depth net here")
            inv, labels = runner.run_depth_only(x), None
        t2 = time.perf_counter()
        H, W = rgb.shape[:2]
        inv, depth, lab = processing.postprocess(inv, labels, (W, H), self.min_depth, self.max_depth)
        t3 = time.perf_counter()
        return Prediction(inv, depth, lab, {
            "preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3})

    def predict_labels(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """HxWx3 uint8 RGB -> (labels [H,W] uint8 trainIds at the input resolution, timings in ms), from
        the semantic net alone (`semantics_separable`)."""
        if not self.semantics_separable:
            raise RuntimeError(f"{self!r}: the semantic net cannot run apart from the depth net here")
        t0 = time.perf_counter()
        runner, x = self._network_input(rgb)
        t1 = time.perf_counter()
        labels = runner.run_semantics(x)
        t2 = time.perf_counter()
        lab = processing.resize_labels(labels, (rgb.shape[1], rgb.shape[0]))
        t3 = time.perf_counter()
        return lab, {"sem_preprocess": (t1 - t0) * 1e3, "semantics": (t2 - t1) * 1e3,
                     "sem_postprocess": (t3 - t2) * 1e3}

    def pose_slots(self) -> tuple[int, bool]:
        """(context slot used for the frame pair, whether the pair is fed reversed).

        The pose net was trained with context offsets `data.context` (e.g. [-1, 1]); slot i
        holds the frame at offset context[i]. With offset -1 available the current frame is the
        target and the previous one goes into that slot (output = T_prev_cur directly); with
        only positive offsets the previous frame is the target and the current one goes into the
        +1 slot (output = T_cur_prev, inverted). Otherwise the negative offset nearest 0 is used.
        """
        offsets = list(self.config.data.context)
        n = self._runner.num_context
        if len(offsets) != n:
            offsets = [-1] + [1] * (n - 1)
        if -1 in offsets:
            return offsets.index(-1), False
        if 1 in offsets:
            return offsets.index(1), True
        neg = [o for o in offsets if o < 0]
        if neg:
            return offsets.index(max(neg)), False
        return offsets.index(min(offsets)), True

    def relative_pose(self, prev_rgb: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """4x4 float64 `T_prev_cur` (maps current-frame points into the previous frame).

        The pose network predicts T_ctx_tgt; it runs with target = `rgb` (current frame) and the
        previous frame in the context slot of offset -1, so its output is T_prev_cur. A pose
        net trained with more context frames (e.g. [-1, +1]) gets the target frame itself
        (zero motion) in its other slots. See `pose_slots` for configs without offset -1.
        Translation is in model units (metres only when `is_metric`).
        """
        if not self.has_pose:
            raise RuntimeError(f"{self.checkpoint}: the checkpoint has no pose network; relative_pose is unavailable")
        if prev_rgb.shape != rgb.shape:
            raise ValueError(f"prev_rgb {prev_rgb.shape} and rgb {rgb.shape} must have the same shape")
        processing.check_rgb(rgb)
        runner, size = self._runner_for((rgb.shape[1], rgb.shape[0]))
        cur = processing.preprocess(rgb, size)
        prev = processing.preprocess(prev_rgb, size)
        slot, reverse = self.pose_slots()
        tgt, other = (prev, cur) if reverse else (cur, prev)
        ctxs = [tgt] * runner.num_context
        ctxs[slot] = other
        vecs = np.asarray(runner.run_pose(tgt, ctxs), np.float64).reshape(-1, 6)
        if vecs.shape[0] != len(ctxs):
            raise RuntimeError(f"pose backend returned {vecs.shape[0]} poses for {len(ctxs)} context frames")
        T = pose_vec_to_mat_np(vecs[slot])
        from semdepth_core.geometry.se3 import invert_se3_np

        return invert_se3_np(T) if reverse else T

    def close(self) -> None:
        for runner in self._runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                close()

    def __repr__(self) -> str:
        return (f"Predictor(backend={self.backend_name!r}, input_size={self.input_size} ({self.size_policy}), "
                f"metric={self.is_metric}, semantics={self.has_semantics}, pose={self.has_pose})")


def pose_vec_to_mat_np(vec: np.ndarray) -> np.ndarray:
    """(tx,ty,tz,rx,ry,rz) axis-angle -> 4x4 float64 via the shared geometry code."""
    import torch

    from semdepth_core.geometry.se3 import pose_vec_to_mat

    T = pose_vec_to_mat(torch.as_tensor(vec, dtype=torch.float64).reshape(1, 6))[0]
    return T.numpy().astype(np.float64)


# ------------------------------------------------------------------------------- backends

def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT and pycuda importable and a CUDA device visible (the runtime is pycuda's)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising OSError
        return False, f"TensorRT is not importable ({type(exc).__name__}: {exc})"
    from semdepth_core.infer.backends.tensorrt_backend import import_pycuda

    try:
        n = import_pycuda().Device.count()
    except Exception as exc:  # ImportError, or pycuda's driver errors (no driver)
        return False, str(exc) if isinstance(exc, ImportError) else f"CUDA driver: {type(exc).__name__}: {exc}"
    if n < 1:
        return False, "no CUDA device visible to pycuda"
    return True, "ok"


# Default CPU backend for `auto`, per model kind, as measured by benchmarks/backends.py (real KITTI frame,
# median end-to-end predict, 2 threads, torch 2.13 with channels-last CPU inference and the fused PAC
# kernel vs onnxruntime; benchmarks/results/backends.json, quiet 2-core machine, 2026-12-07), torch / ORT ms:
#   guided (ESPNet + PAC) at 640x192:  resnet18 183 / 207,  mobilenetv2 143 / 233   => torch
#   unguided:  resnet18 118 / 101 (640x192);  shipped default 170 / 151 (416x128)    => ONNX Runtime
# ORT's one-off cost is the export on first use (~3 s here), cached on disk by checkpoint sha256 and size.
CPU_DEFAULT_BACKEND = "onnxruntime"  # unguided models (the shipped default)
CPU_GUIDED_BACKEND = "torch"  # models whose depth decoder is PAC-guided


def resolve_backend(backend: str, device: str, guided: bool = False) -> str:
    """Which concrete backend `backend` means on `device` (for a PAC-guided model when `guided`).

    * explicit names are returned as is;
    * "auto" on a CUDA device: "tensorrt" when TensorRT is importable, else "torch" on CUDA;
    * "auto" on the CPU: the faster CPU backend for the model kind as measured by benchmarks/backends.py
      (CPU_GUIDED_BACKEND for guided models, else CPU_DEFAULT_BACKEND; numbers in backends.json).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if str(device).startswith("cuda"):
        ok, _ = tensorrt_available()
        return "tensorrt" if ok else "torch"
    return CPU_GUIDED_BACKEND if guided else CPU_DEFAULT_BACKEND


def load_predictor(checkpoint: str | Path, backend: str = "auto", device: str = "cpu",
                   height: int | None = None, width: int | None = None,
                   onnx_path: str | Path | None = None, engine_cache_dir: str | Path | None = None,
                   precision: str = "fp32", split_semantics: bool = False) -> Predictor:
    """Build a Predictor for `checkpoint` on `backend`.

    height/width: a fixed network input size (multiples of 32). Without them the size follows each
    image's aspect ratio at the checkpoint's pixel budget (data.height * data.width; see
    `processing.network_size_for`): a KITTI-shaped camera runs at the training shape, any other camera
    at its own shape instead of being squashed (ONNX Runtime / TensorRT build one graph per size, cached).
    onnx_path: for onnxruntime/tensorrt, an exported depth graph to use (its pose graph is expected
    beside it as `<stem>.pose.onnx`; its size is then fixed); when None the graphs are exported into a
    cache (engine_cache_dir, or $SEMDEPTH_CACHE, or ~/.cache/semdepth) keyed by the checkpoint hash.
    engine_cache_dir: also where TensorRT engines are cached (engines prebuilt with
    `python -m semdepth_core.export tensorrt --build-only --onnx G --cache-dir D` are reused when
    called with onnx_path=G, engine_cache_dir=D and the same precision).
    precision: TensorRT engine precision, "fp32" | "fp16" | "int8" (int8 needs a calibrated,
    prebuilt engine in the cache); ignored by the other backends.

    "tensorrt" falls back to "onnxruntime" with a WARNING when TensorRT is unusable or the
    engine build fails. Raises CheckpointError for a bad checkpoint.
    split_semantics: with onnxruntime, export the depth and semantic nets of an unguided model as two
    graphs, so `predict(semantics=False)` and `predict_labels` each run one (the semantic session with
    one thread: it is meant to run beside the depth net); ignored where the semantic net guides the
    depth net or is absent (torch runs them apart anyway; TensorRT keeps one engine).
    """
    from semdepth_core.infer.loading import load_models

    name = resolve_backend(backend, device)
    models = load_models(checkpoint, "cpu" if name != "torch" else device)
    if backend == "auto" and not str(device).startswith("cuda") and models.config.model.guidance:
        name = resolve_backend(backend, device, guided=True)  # the models are already on the CPU
    cfg = models.config
    fixed = height is not None or width is not None or onnx_path is not None
    h = height if height is not None else cfg.data.height
    w = width if width is not None else cfg.data.width
    h, w = processing.check_network_size(h, w)

    if name == "tensorrt":
        from semdepth_core.infer.backends.tensorrt_backend import TensorRTRunner

        ok, reason = tensorrt_available()
        if ok:
            trt_device = device if str(device).startswith("cuda") else "cuda"

            def make_trt(size):
                return TensorRTRunner.create(models, size, device=trt_device, onnx_path=onnx_path,
                                             cache_dir=engine_cache_dir, precision=precision)

            try:
                return Predictor(make_trt((w, h)), cfg, (w, h), models.checkpoint_path,
                                 runner_factory=None if fixed else make_trt)
            except Exception as exc:  # build/plugin/runtime failure: degrade, loudly
                reason = f"TensorRT engine build/load failed ({type(exc).__name__}: {exc})"
        log.warning("WARNING: backend 'tensorrt' unavailable: %s; falling back to 'onnxruntime'", reason)
        name = "onnxruntime"

    if name == "onnxruntime":
        from semdepth_core.infer.backends.onnxruntime_backend import OnnxRuntimeRunner

        from semdepth_core.export.onnx_export import can_split_semantics

        split = bool(split_semantics) and can_split_semantics(cfg)

        def make_runner(size):
            return OnnxRuntimeRunner.create(models, size, device=device, onnx_path=onnx_path, cache_dir=engine_cache_dir,
                                            split_semantics=split, semantic_threads=1 if split else None)
    else:
        from semdepth_core.infer.backends.torch_backend import TorchRunner

        torch_runner = TorchRunner(models.depth_model, models.pose_net, device=device,
                                   has_semantics=cfg.model.semantic.enabled)

        def make_runner(size):  # fully convolutional: one runner serves every size
            return torch_runner
    return Predictor(make_runner((w, h)), cfg, (w, h), models.checkpoint_path,
                     runner_factory=None if fixed else make_runner)
