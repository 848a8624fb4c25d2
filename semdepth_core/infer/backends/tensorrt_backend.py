"""TensorRT backend: engines built (and cached) from the custom-op ONNX graph with the fused PAC
plugin, executed with pycuda buffers on a pycuda stream (optional extra `[trt]`: tensorrt, pycuda).

Per engine (`EngineRunner`), once: the device's primary CUDA context is retained (the one the
CUDA runtime, TensorRT and the PAC plugin's kernel library use), and every I/O tensor gets a
`pycuda.driver.mem_alloc` device buffer of its exact nbytes and a page-locked host buffer
(`pagelocked_empty`) of its shape and dtype; each device pointer is bound once with
`context.set_tensor_address`. Engines must have static shapes (export at a fixed size).

Per call, with the context pushed on the calling thread: the inputs are copied into their
page-locked buffers and uploaded with `memcpy_htod_async` on the runner's `pycuda.driver.Stream`,
the engine is enqueued on that stream (`execute_async_v3(stream.handle)`), the outputs are
downloaded with `memcpy_dtoh_async` on the same stream, and the stream is synchronised once.
Fused PacConv2d nodes run inside the engine through the plugin (`export/pac_plugin.py`), whose
kernel library nvcc builds on first use; when that library cannot be had (no nvcc, no prebuilt
library) the engine is built from the decomposed (standard-op) graph with a warning.
`infer.load_predictor` falls back to ONNX Runtime when anything here fails.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def import_tensorrt():
    """The tensorrt module; ImportError with the install hint when it is missing or broken."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError
        raise ImportError(f"TensorRT is not importable ({type(exc).__name__}: {exc}); the TensorRT backend "
                          "needs it: pip install '.[trt]' (tensorrt, pycuda)") from exc
    return trt


def import_pycuda():
    """pycuda.driver, initialised; ImportError with the install hint when pycuda is missing or broken."""
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        raise ImportError(f"pycuda is not importable ({type(exc).__name__}: {exc}); the TensorRT backend "
                          "allocates its buffers and streams with it: pip install '.[trt]' (tensorrt, pycuda)") from exc
    cuda.init()
    return cuda


def device_index(device) -> int:
    """CUDA device index of "cuda", "cuda:N" or N; ValueError naming the bad value otherwise."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    text = str(device)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(f"TensorRT runs on a CUDA device: expected 'cuda', 'cuda:N' or an index, got {device!r}")


class PrimaryContext:
    """The retained primary CUDA context of one device; `with ctx:` makes it current on this thread."""

    def __init__(self, index: int = 0):
        cuda = import_pycuda()
        count = cuda.Device.count()
        if index >= count:
            raise RuntimeError(f"CUDA device {index} requested but pycuda sees {count} device(s)")
        self._cuda = cuda
        self.device = cuda.Device(index)
        self.context = self.device.retain_primary_context()

    def __enter__(self):
        self.context.push()
        return self

    def __exit__(self, *exc):
        self._cuda.Context.pop()
        return False

    def release(self) -> None:
        """Drop this process's reference to the primary context (once, after the last use)."""
        if self.context is not None:
            self.context.detach()
            self.context = None


def primary_context(index: int = 0) -> PrimaryContext:
    """A PrimaryContext for CUDA device `index`."""
    return PrimaryContext(index)


def numpy_dtype(trt, trt_dtype) -> np.dtype:
    """numpy dtype of a TensorRT I/O tensor type; TypeError naming types without one (e.g. BF16, FP8)."""
    table = {}
    for name, np_dtype in (("FLOAT", np.float32), ("HALF", np.float16), ("INT32", np.int32), ("INT8", np.int8),
                           ("BOOL", np.bool_), ("UINT8", np.uint8), ("INT64", np.int64)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = np.dtype(np_dtype)
    if trt_dtype not in table:
        raise TypeError(f"unsupported TensorRT I/O dtype {trt_dtype} (no numpy equivalent)")
    return table[trt_dtype]


class EngineRunner:
    """One engine + execution context with preallocated pycuda device and page-locked host buffers."""

    def __init__(self, engine, device="cuda"):
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self.engine = engine
        self.ctx = primary_context(device_index(device))
        self.inputs: dict[str, object] = {}  # name -> device allocation
        self.outputs: dict[str, object] = {}
        self.host_in: dict[str, np.ndarray] = {}  # name -> page-locked host buffer
        self.host_out: dict[str, np.ndarray] = {}
        self._allocations = []
        self.context = None
        try:
            with self.ctx:
                self.context = engine.create_execution_context()
                if self.context is None:
                    raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
                self.stream = cuda.Stream()
                for i in range(engine.num_io_tensors):
                    name = engine.get_tensor_name(i)
                    shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                    if any(d < 0 for d in shape):
                        raise ValueError(f"engine tensor {name!r} has a dynamic shape {shape}; the TensorRT runtime "
                                         "needs static shapes: export the ONNX graph at a fixed size")
                    dtype = numpy_dtype(trt, engine.get_tensor_dtype(name))
                    host = cuda.pagelocked_empty(shape, dtype)
                    dev = cuda.mem_alloc(max(int(host.nbytes), 1))  # a 0-byte allocation is refused
                    self._allocations.append(dev)
                    if not self.context.set_tensor_address(name, int(dev)):
                        raise RuntimeError(f"TensorRT refused the device address of tensor {name!r}")
                    if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                        self.inputs[name], self.host_in[name] = dev, host
                    else:
                        self.outputs[name], self.host_out[name] = dev, host
        except BaseException:
            self.close()  # free what was allocated before the failure
            raise

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on `feeds` (every input by name, shapes as bound); returns fresh output arrays."""
        cuda = self._cuda
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise KeyError(f"engine inputs are {sorted(self.inputs)}; missing {missing}, unexpected {extra}")
        for name, arr in feeds.items():
            arr = np.asarray(arr)
            if arr.shape != self.host_in[name].shape:
                raise ValueError(f"input {name!r} has shape {arr.shape}, the engine was built for "
                                 f"{self.host_in[name].shape}")
            np.copyto(self.host_in[name], arr, casting="same_kind")
        with self.ctx:
            for name, dev in self.inputs.items():
                cuda.memcpy_htod_async(dev, self.host_in[name], self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            for name, dev in self.outputs.items():
                cuda.memcpy_dtoh_async(self.host_out[name], dev, self.stream)
            self.stream.synchronize()
        return {name: host.copy() for name, host in self.host_out.items()}

    def close(self) -> None:
        """Free the device buffers and release the context (the runner is unusable afterwards)."""
        if self.ctx.context is None:
            return
        with self.ctx:
            for dev in self._allocations:
                dev.free()
            self._allocations.clear()
            self.context = None
        self.ctx.release()


class TensorRTRunner:
    """The TensorRT depth (and pose) engines behind the runner interface of the other backends."""

    name = "tensorrt"

    def __init__(self, depth: EngineRunner, pose: EngineRunner | None):
        self.depth = depth
        self.pose = pose
        self.has_semantics = "labels" in depth.outputs
        self.has_pose = pose is not None
        self.num_context = sum(n.startswith("ctx") for n in pose.inputs) if pose is not None else 0

    @classmethod
    def create(cls, models, net_size: tuple[int, int], device: str = "cuda", onnx_path=None, cache_dir=None,
               precision: str = "fp32") -> "TensorRTRunner":
        """Export (cached), build (cached) and load the engines of `models` at `net_size`."""
        from semdepth_core.export.onnx_export import pose_graph_path
        from semdepth_core.export.tensorrt import build_engine, load_engine
        from semdepth_core.infer.backends.onnxruntime_backend import cached_onnx_paths, check_graph_matches

        import_tensorrt()
        import_pycuda()  # both fail early and clearly, before any export or build
        if onnx_path is not None:
            path = Path(onnx_path)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX graph not found: {path}")
        else:
            path = cached_onnx_paths(models, net_size, cache_dir, pac_graph_kind())
        check_graph_matches(path, models, net_size, need_decomposed=False)
        engine_dir = Path(cache_dir) if cache_dir else None  # same layout as the export CLI's --cache-dir
        depth = EngineRunner(load_engine(build_engine(path, precision, engine_dir)), device)
        pose = None
        ppath = pose_graph_path(path)
        if ppath.is_file():
            pose = EngineRunner(load_engine(build_engine(ppath, precision, engine_dir)), device)
        return cls(depth, pose)

    def run_depth(self, x: np.ndarray):
        """(inverse depth [h,w] float32, labels [h,w] or None) of a preprocessed [1,3,h,w] frame."""
        out = self.depth({"rgb": x})
        inv = out["inv_depth"][0, 0].astype(np.float32)
        labels = out["labels"][0] if self.has_semantics else None
        return inv, labels

    def run_pose(self, tgt: np.ndarray, ctxs: list[np.ndarray]) -> np.ndarray:
        """Pose vectors [N,6] float64 of `tgt` against each context frame."""
        if self.pose is None:
            raise RuntimeError("no pose engine")
        feeds = {"tgt": tgt, **{f"ctx{i}": c for i, c in enumerate(ctxs)}}
        return np.asarray(self.pose(feeds)["pose"], np.float64).reshape(-1, 6)


def pac_graph_kind() -> str:
    """"custom-op" when the PAC plugin's kernel library is available, else "decomposed" (with a warning)."""
    from semdepth_core.export.pac_plugin import pac_library

    try:
        pac_library()
        return "custom-op"
    except ImportError as exc:  # PacLibraryError: no nvcc / build failed / library unloadable
        log.warning("WARNING: the fused PAC plugin cannot run (%s); building the TensorRT engine from the "
                    "decomposed (standard-op) graph", exc)
        return "decomposed"
