"""TensorRT engines from the exported ONNX graphs (optional extra `[trt]`: tensorrt, pycuda).

* `build_engine(onnx_path, precision="fp32"|"fp16"|"int8", cache_dir, calib_dir)` parses the ONNX
  graph (custom-op PAC nodes map to the `semdepth::PacConv2d` plugin, `pac_plugin.py`, whose
  kernel library nvcc builds and caches on first use, `cuda_build.py`), builds a
  serialised engine and caches it on disk. The cache key is
  sha256(onnx bytes) + TensorRT version + GPU compute capability + precision + input shape, so a
  changed model, TensorRT upgrade or different GPU never reuses a stale engine. Engines and the
  shared timing cache (which makes rebuilds much faster) are written atomically. Each engine gets a
  `<engine>.sha256` record (size + sha256) written after it; a cached engine that does not match
  it (or, without a record, does not deserialise) is deleted and rebuilt with a WARNING, an
  unreadable timing cache is dropped, and stale `*.tmp` leftovers are swept (cache_integrity.py).
* INT8: `ImageDirCalibrator` (an IInt8EntropyCalibrator2) feeds preprocessed images from a
  directory through a pycuda device buffer, with its calibration table cached beside the engines.
* The engines run in `infer/backends/tensorrt_backend.py` (pycuda buffers and stream).
* CLI: `python -m semdepth_core.export tensorrt --build-only --onnx model.onnx [--fp16]
  [--int8 --calib-dir DIR] [--cache-dir DIR]` prebuilds the engine (and the pose graph's, when
  `model.pose.onnx` sits beside it).

Nothing in this module imports tensorrt at import time; the functions raise ImportError with a
clear message when it is missing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from semdepth_core.checkpoint import atomic_write_bytes
from semdepth_core.export.cache_integrity import (GraphFileError, cached_file_problem, discard, record_integrity,
                                                  reuse_cached, sidecar_path, sweep_stale_tmp)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def _trt():
    try:
        import tensorrt as trt
    except Exception as exc:
        raise ImportError(f"TensorRT is not installed or not importable ({type(exc).__name__}: {exc}); "
                          "install the optional extra: pip install '.[trt]'") from exc
    return trt


def default_cache_dir() -> Path:
    env = os.environ.get("SEMDEPTH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "semdepth") / "tensorrt"


def compute_capability(device: int = 0) -> str:
    """"sm_XY" of CUDA device `device` (through pycuda, else torch); RuntimeError when none is visible."""
    from semdepth_core.export.cuda_build import device_capability

    return device_capability(device)


def engine_cache_key(onnx_bytes: bytes, trt_version: str, capability: str, precision: str,
                     input_shapes: dict[str, tuple[int, ...]]) -> str:
    """sha256 over everything an engine depends on (see module docstring)."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    desc = {"trt": trt_version, "cc": capability, "precision": precision,
            "inputs": {k: list(v) for k, v in sorted(input_shapes.items())}}
    h.update(json.dumps(desc, sort_keys=True).encode())
    return h.hexdigest()


def onnx_input_shapes(model) -> dict[str, tuple[int, ...]]:
    shapes = {}
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim)
        shapes[inp.name] = dims
    return shapes


def annotate_for_tensorrt(model):
    """Add plugin_namespace/plugin_version attributes to every semdepth::PacConv2d node so TensorRT's
    ONNX parser resolves it to the registered plugin creator. Returns the number of PAC nodes."""
    from onnx import helper

    from semdepth_core.export.pac_plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

    n = 0
    for node in model.graph.node:
        if node.op_type == PLUGIN_NAME and node.domain == PLUGIN_NAMESPACE:
            names = {a.name for a in node.attribute}
            if "plugin_namespace" not in names:
                node.attribute.append(helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE))
            if "plugin_version" not in names:
                node.attribute.append(helper.make_attribute("plugin_version", PLUGIN_VERSION))
            n += 1
    return n


def iter_calibration_images(calib_dir: str | Path, limit: int | None = None) -> list[Path]:
    d = Path(calib_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"calibration image directory not found: {d}")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {d}")
    return files[:limit] if limit else files


def load_calibration_batch(paths: list[Path], net_size: tuple[int, int]) -> np.ndarray:
    """Images -> float32 [N,3,h,w] through the shared inference preprocessing."""
    import cv2

    from semdepth_core.infer.processing import preprocess

    out = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read calibration image {p}")
        out.append(preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), net_size)[0])
    return np.stack(out).astype(np.float32)


def make_calibrator(calib_dir: str | Path, net_size: tuple[int, int], cache_file: str | Path,
                    batch_size: int = 1, limit: int | None = 64):
    """An IInt8EntropyCalibrator2 fed by the images of `calib_dir` (a pycuda device buffer)."""
    trt = _trt()
    from semdepth_core.infer.backends.tensorrt_backend import import_pycuda, primary_context

    cuda = import_pycuda()
    ctx = primary_context(0)

    class ImageDirCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.files = iter_calibration_images(calib_dir, limit)
            self.batch_size = batch_size
            self.cache_file = Path(cache_file)
            self.index = 0
            w, h = net_size
            with ctx:
                self.host_buf = cuda.pagelocked_empty((batch_size, 3, h, w), np.float32)
                self.device_buf = cuda.mem_alloc(self.host_buf.nbytes)

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            if self.index + self.batch_size > len(self.files):
                return None
            batch = load_calibration_batch(self.files[self.index:self.index + self.batch_size], net_size)
            self.index += self.batch_size
            np.copyto(self.host_buf, batch)
            with ctx:
                cuda.memcpy_htod(self.device_buf, self.host_buf)  # synchronous: the builder reads it next
            return [int(self.device_buf)]

        def read_calibration_cache(self):
            return self.cache_file.read_bytes() if self.cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            data = bytes(cache)
            atomic_write_bytes(self.cache_file, lambda f: f.write(data))

    return ImageDirCalibrator()


def build_engine(onnx_path: str | Path, precision: str = "fp32", cache_dir: str | Path | None = None,
                 calib_dir: str | Path | None = None, workspace_mib: int = 2048, force: bool = False) -> Path:
    """Build (or reuse from the cache) the engine of `onnx_path`; returns the engine file path."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    trt = _trt()
    onnx_path = Path(onnx_path)
    onnx_bytes = onnx_path.read_bytes()
    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # google.protobuf DecodeError
        raise GraphFileError(f"{onnx_path}: not a valid ONNX graph ({type(exc).__name__}: {exc}); the file is "
                             "truncated or corrupt, re-export it") from None
    if not model.graph.node:
        raise GraphFileError(f"{onnx_path}: not a valid ONNX graph (no graph nodes in {len(onnx_bytes)} bytes); "
                             "the file is truncated or corrupt, re-export it")
    shapes = onnx_input_shapes(model)
    cap = compute_capability()
    key = engine_cache_key(onnx_bytes, trt.__version__, cap, precision, shapes)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    sweep_stale_tmp(root)
    engine_path = root / f"{onnx_path.stem}_{precision}_{cap}_{key[:20]}.engine"
    if not force and reuse_cached(engine_path, "TensorRT engine", _cached_engine_problem):
        return engine_path
    if precision == "int8" and calib_dir is None:
        raise ValueError(f"no cached int8 engine for {onnx_path}; building one needs calib_dir "
                         "(a directory of calibration images)")

    n_pac = annotate_for_tensorrt(model)
    if n_pac:
        from semdepth_core.export.pac_plugin import register_pac_plugin

        register_pac_plugin()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    timing_path = root / f"timing_{cap}_trt{trt.__version__}.cache"
    timing = _timing_cache(config, timing_path)
    config.set_timing_cache(timing, ignore_mismatch=False)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep fp16 for layers without int8 kernels
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        (_, _, h, w) = next(iter(shapes.values()))
        config.int8_calibrator = make_calibrator(calib_dir, (w, h), root / f"{onnx_path.stem}_{key[:20]}.calib")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path} ({precision}); see the TensorRT log above")
    data = bytes(serialized)
    sidecar_path(engine_path).unlink(missing_ok=True)  # never leave an old record beside new bytes
    atomic_write_bytes(engine_path, lambda f: f.write(data))
    record_integrity(engine_path, data)
    tc = bytes(config.get_timing_cache().serialize())
    atomic_write_bytes(timing_path, lambda f: f.write(tc))
    log.info("built TensorRT engine %s (%s, %d PAC plugin nodes)", engine_path, precision, n_pac)
    return engine_path


def _timing_cache(config, timing_path: Path):
    """The builder's timing cache from `timing_path`; an unreadable one is dropped (WARNING) and
    replaced by an empty cache (it only speeds builds up)."""
    raw = timing_path.read_bytes() if timing_path.is_file() else b""
    timing, why = None, "rejected by TensorRT"
    try:
        timing = config.create_timing_cache(raw)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
    if timing is None and raw:
        discard(timing_path, "TensorRT timing cache", why, "starting an empty one")
        timing = config.create_timing_cache(b"")
    return timing


def _cached_engine_problem(engine_path: Path) -> str | None:
    """Why a cached engine cannot be used (None when it can): its size + sha256 record, or, for
    engines cached without one, a deserialisation attempt (recording it on success)."""
    def load_problem(path: Path) -> str | None:
        try:
            load_engine(path)
        except Exception as exc:
            return f"deserialisation failed: {type(exc).__name__}: {exc}"
        return None

    return cached_file_problem(engine_path, load_problem)


def load_engine(engine_path: str | Path):
    """Deserialise an engine (registers the PAC plugin first, Python plugins are not embedded)."""
    trt = _trt()
    try:
        from semdepth_core.export.pac_plugin import register_pac_plugin

        register_pac_plugin()
    except ImportError as exc:
        log.info("PAC plugin not registered (%s); fine for engines without PacConv2d nodes", exc)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialise {engine_path}")
    _RUNTIMES.append(runtime)  # the runtime must outlive its engines
    return engine


_RUNTIMES: list = []
