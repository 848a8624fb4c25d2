"""TensorRT backend: engines built (and cached) from the custom-op ONNX graph with the fused PAC
plugin, executed with torch CUDA tensors as bindings on a dedicated CUDA stream.

Per call: the preprocessed frame is copied into a pinned host buffer, uploaded asynchronously,
the engine is enqueued (`execute_async_v3`), the outputs are downloaded asynchronously into pinned
host buffers, and the stream is synchronised once. pycuda is not needed (torch owns the memory
and the stream).

When CuPy (needed by the Python PAC plugin) is missing, the engine is built from the decomposed
graph instead (standard ops only) with a warning. `infer.load_predictor` falls back to ONNX
Runtime when anything here fails.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _torch_dtype(trt_dtype):
    import tensorrt as trt
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    for name, tdt in (("UINT8", torch.uint8), ("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if trt_dtype not in table:
        raise TypeError(f"unsupported TensorRT I/O dtype {trt_dtype}")
    return table[trt_dtype]


class EngineRunner:
    """One engine + execution context with preallocated device and pinned host buffers."""

    def __init__(self, engine, device: str = "cuda"):
        import tensorrt as trt
        import torch

        self.engine = engine
        self.device = torch.device(device)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = torch.cuda.Stream(device=self.device)
        self.inputs, self.outputs = {}, {}
        self.host_in, self.host_out = {}, {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ValueError(f"engine tensor {name} has a dynamic shape {shape}; export with a fixed size")
            dtype = _torch_dtype(engine.get_tensor_dtype(name))
            dev = torch.empty(shape, dtype=dtype, device=self.device)
            host = torch.empty(shape, dtype=dtype, pin_memory=True)
            self.context.set_tensor_address(name, int(dev.data_ptr()))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs[name], self.host_in[name] = dev, host
            else:
                self.outputs[name], self.host_out[name] = dev, host

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.cuda.stream(self.stream):
            for name, arr in feeds.items():
                self.host_in[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)))
                self.inputs[name].copy_(self.host_in[name], non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for name, dev in self.outputs.items():
                self.host_out[name].copy_(dev, non_blocking=True)
        self.stream.synchronize()
        return {name: h.numpy() for name, h in self.host_out.items()}


class TensorRTRunner:
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
        from semdepth_core.export.onnx_export import pose_graph_path
        from semdepth_core.export.tensorrt import build_engine, load_engine
        from semdepth_core.infer.backends.onnxruntime_backend import cached_onnx_paths, check_graph_matches

        if onnx_path is not None:
            path = Path(onnx_path)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX graph not found: {path}")
        else:
            try:
                import cupy  # noqa: F401
                pac = "custom-op"
            except ImportError:
                log.warning("WARNING: CuPy is missing, so the fused PAC plugin cannot run; building the "
                            "TensorRT engine from the decomposed (standard-op) graph")
                pac = "decomposed"
            path = cached_onnx_paths(models, net_size, cache_dir, pac)
        check_graph_matches(path, models, net_size, need_decomposed=False)
        engine_dir = Path(cache_dir) if cache_dir else None  # same layout as the export CLI's --cache-dir
        depth = EngineRunner(load_engine(build_engine(path, precision, engine_dir)), device)
        pose = None
        ppath = pose_graph_path(path)
        if ppath.is_file():
            pose = EngineRunner(load_engine(build_engine(ppath, precision, engine_dir)), device)
        return cls(depth, pose)

    def run_depth(self, x: np.ndarray):
        out = self.depth({"rgb": x})
        inv = out["inv_depth"][0, 0].astype(np.float32)
        labels = out["labels"][0] if self.has_semantics else None
        return inv, labels

    def run_pose(self, tgt: np.ndarray, ctxs: list[np.ndarray]) -> np.ndarray:
        if self.pose is None:
            raise RuntimeError("no pose engine")
        feeds = {"tgt": tgt, **{f"ctx{i}": c for i, c in enumerate(ctxs)}}
        return np.asarray(self.pose(feeds)["pose"], np.float64).reshape(-1, 6)
