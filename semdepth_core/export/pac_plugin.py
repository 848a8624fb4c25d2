"""TensorRT plugin for the `semdepth::PacConv2d` custom op (IPluginV3 implemented in Python).

The plugin runs the fused kernel of `cuda/pac_kernel.cu` (Gaussian kernel of Eq. 5 and the
weighted sum of Eq. 4 in one pass, float or __half storage, float accumulation).

How it launches: `cuda_build.py` compiles the .cu with nvcc into a shared library (cached on disk,
keyed by source hash + nvcc version + GPU architecture) whose extern "C" host launcher
`semdepth_pac_conv2d_forward` `enqueue` calls through ctypes with exactly what TensorRT hands it:
the raw device pointers of the five inputs and the output, and the raw `cudaStream_t`. No tensor
wrapping, no extra synchronisation, and no CuPy or torch in the engine's process. The launcher
returns the cudaError_t of the launch; a non-zero one raises RuntimeError with CUDA's message.

Registration: `register_pac_plugin()` registers the creator under the op's name "PacConv2d",
version "1", namespace "semdepth" in TensorRT's global plugin registry. Python plugins are not
serialised into the engine, so the creator must be registered before building *and* before
deserialising an engine (the TensorRT backend does both). The ONNX parser finds the creator from
the node's op_type plus the `plugin_namespace`/`plugin_version` attributes, which
`export.tensorrt.annotate_for_tensorrt` adds to every semdepth::PacConv2d node.

Plugin I/O: inputs (x [B,Cin,H,W], guide [B,D,H,W], weight [Cout,Cin,k,k], bias [Cout],
log_sigma [1|Cout]), output [B,Cout,Ho,Wo]; all linear (NCHW) and all of one type, float32 or
float16 (TensorRT chooses; INT8 stays outside the plugin).
"""
from __future__ import annotations

import ctypes

import numpy as np

from semdepth_core.export.cuda_build import KERNEL_SOURCE, PacLibraryError, load_library, pac_library_path

__all__ = ["PLUGIN_NAME", "PLUGIN_NAMESPACE", "PLUGIN_VERSION", "KERNEL_SOURCE", "KERNEL_NAMES", "DTYPE_CODES",
           "PacLibraryError", "pac_library", "launch_pac", "conv_out_size", "register_pac_plugin"]

PLUGIN_NAME = "PacConv2d"
PLUGIN_NAMESPACE = "semdepth"
PLUGIN_VERSION = "1"
KERNEL_NAMES = {"float32": "pac_conv2d_fwd_f32", "float16": "pac_conv2d_fwd_f16"}
DTYPE_CODES = {"float32": 0, "float16": 1}  # the launcher's `dtype` argument

_LIBRARY = None


def pac_library(arch: str | None = None):
    """The ctypes handle of the nvcc-built PAC library (built or taken from the cache once per process).

    Raises PacLibraryError (an ImportError) when it cannot be found, built or loaded.
    """
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = load_library(pac_library_path(arch))
    return _LIBRARY


def conv_out_size(n: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def launch_pac(x_ptr: int, guide_ptr: int, weight_ptr: int, bias_ptr: int, log_sigma_ptr: int, out_ptr: int,
               B: int, Cin: int, H: int, W: int, D: int, Cout: int, k: int, stride: int, padding: int,
               dilation: int, sigma_per_filter: bool, dtype: str, stream: int) -> None:
    """Launch the fused kernel on raw device pointers on `stream` (a cudaStream_t as int; 0 = default)."""
    if dtype not in DTYPE_CODES:
        raise ValueError(f"PacConv2d plugin: unsupported dtype {dtype!r} (expected one of {sorted(DTYPE_CODES)})")
    dims = {"B": B, "Cin": Cin, "H": H, "W": W, "D": D, "Cout": Cout}
    bad = {n: v for n, v in dims.items() if int(v) < 1}
    if bad:
        raise ValueError(f"PacConv2d plugin: non-positive dimensions {bad}")
    ptrs = {"x": x_ptr, "guide": guide_ptr, "weight": weight_ptr, "log_sigma": log_sigma_ptr, "out": out_ptr}
    null = [n for n, v in ptrs.items() if not v]
    if null:
        raise ValueError(f"PacConv2d plugin: null device pointer for {', '.join(null)}")
    lib = pac_library()
    vp, i32 = ctypes.c_void_p, ctypes.c_int
    rc = lib.semdepth_pac_conv2d_forward(
        vp(int(x_ptr)), vp(int(guide_ptr)), vp(int(weight_ptr)), vp(int(bias_ptr) or None), vp(int(log_sigma_ptr)),
        vp(int(out_ptr)),
        i32(B), i32(Cin), i32(H), i32(W), i32(D), i32(Cout), i32(k), i32(stride), i32(padding), i32(dilation),
        i32(1 if sigma_per_filter else 0), i32(DTYPE_CODES[dtype]), vp(int(stream) or None))
    if rc != 0:
        msg = lib.semdepth_cuda_error_string(int(rc))
        msg = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        raise RuntimeError(f"PacConv2d plugin: kernel launch failed with CUDA error {int(rc)} ({msg}); "
                           f"B={B} Cin={Cin} H={H} W={W} D={D} Cout={Cout} k={k} stride={stride} "
                           f"padding={padding} dilation={dilation} dtype={dtype}")


def _decode_field(field) -> object:
    """A creator field's value: sigma_mode as str, the integer fields as int."""
    data = np.asarray(field.data)
    if data.dtype in (np.int8, np.uint8) and field.name == "sigma_mode":
        return bytes(data.astype(np.uint8)).split(b"\0", 1)[0].decode()
    return int(data.reshape(-1)[0])


def _make_classes():
    """The plugin and creator classes (defined lazily: they subclass TensorRT's interfaces)."""
    import tensorrt as trt

    class PacConv2dPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, kernel_size=3, stride=1, padding=1, dilation=1, sigma_mode="layer"):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = PLUGIN_NAME
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self.num_outputs = 1
            self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
            self.sigma_mode = sigma_mode
            self.dtype = "float32"
            self.shapes = None  # (x, guide) dims, set by on_shape_change

        # -- core
        def get_capability_interface(self, type):
            return self

        def clone(self):
            c = PacConv2dPlugin(self.kernel_size, self.stride, self.padding, self.dilation, self.sigma_mode)
            c.dtype, c.shapes = self.dtype, self.shapes
            return c

        # -- build
        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            x, w = inputs[0], inputs[2]
            out = trt.DimsExprs(x)  # copy of x's [B, Cin, H, W] expressions, then edited
            out[1] = w[0]  # Cout
            eb, op = expr_builder, trt.DimensionOperation
            k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
            for i in (2, 3):
                # (n + 2p - d(k-1) - 1) // s + 1
                num = eb.operation(op.SUM, x[i], eb.constant(2 * p - d * (k - 1) - 1))
                out[i] = eb.operation(op.SUM, eb.operation(op.FLOOR_DIV, num, eb.constant(s)), eb.constant(1))
            return [out]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
            return desc.type == in_out[0].desc.type  # one type for all inputs and the output

        def configure_plugin(self, inp, out):
            self.dtype = "float16" if inp[0].desc.type == trt.DataType.HALF else "float32"

        def get_workspace_size(self, inp, out):
            return 0

        def get_fields_to_serialize(self):
            i32 = trt.PluginFieldType.INT32
            return trt.PluginFieldCollection([
                trt.PluginField("kernel_size", np.array([self.kernel_size], np.int32), i32),
                trt.PluginField("stride", np.array([self.stride], np.int32), i32),
                trt.PluginField("padding", np.array([self.padding], np.int32), i32),
                trt.PluginField("dilation", np.array([self.dilation], np.int32), i32),
                trt.PluginField("sigma_mode", np.frombuffer(self.sigma_mode.encode(), np.int8).copy(),
                                trt.PluginFieldType.CHAR),
            ])

        # -- runtime
        def on_shape_change(self, inp, out):
            self.dtype = "float16" if inp[0].type == trt.DataType.HALF else "float32"
            self.shapes = (tuple(inp[0].dims), tuple(inp[1].dims), tuple(inp[2].dims), tuple(inp[4].dims))

        def set_tactic(self, tactic):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            xs, gs, ws = tuple(input_desc[0].dims), tuple(input_desc[1].dims), tuple(input_desc[2].dims)
            n_sigma = int(np.prod(tuple(input_desc[4].dims)))
            dtype = "float16" if input_desc[0].type == trt.DataType.HALF else "float32"
            launch_pac(inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], outputs[0],
                       B=xs[0], Cin=xs[1], H=xs[2], W=xs[3], D=gs[1], Cout=ws[0], k=self.kernel_size,
                       stride=self.stride, padding=self.padding, dilation=self.dilation,
                       sigma_per_filter=n_sigma > 1, dtype=dtype, stream=stream)

    class PacConv2dPluginCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            i32 = trt.PluginFieldType.INT32
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField("kernel_size", np.array([], np.int32), i32),
                trt.PluginField("stride", np.array([], np.int32), i32),
                trt.PluginField("padding", np.array([], np.int32), i32),
                trt.PluginField("dilation", np.array([], np.int32), i32),
                trt.PluginField("sigma_mode", np.array([], np.int8), trt.PluginFieldType.CHAR),
            ])

        def create_plugin(self, name, fc, phase):
            kw = {f.name: _decode_field(f) for f in fc if f.name in
                  ("kernel_size", "stride", "padding", "dilation", "sigma_mode")}
            return PacConv2dPlugin(**kw)

    return PacConv2dPlugin, PacConv2dPluginCreator


_CREATOR = None


def register_pac_plugin():
    """Register the PacConv2d creator (namespace "semdepth") once per process; returns it.

    Raises ImportError when TensorRT is missing and PacLibraryError (an ImportError) when the
    kernel library cannot be built or loaded: the plugin cannot run without both.
    """
    global _CREATOR
    if _CREATOR is not None:
        return _CREATOR
    try:
        import tensorrt as trt
    except Exception as exc:
        raise ImportError(f"TensorRT is not importable ({type(exc).__name__}: {exc}); the PacConv2d plugin "
                          "needs it: pip install '.[trt]'") from exc
    pac_library()  # fail early and clearly: enqueue launches through this library

    _, creator_cls = _make_classes()
    creator = creator_cls()
    registry = trt.get_plugin_registry()
    if not registry.register_creator(creator, PLUGIN_NAMESPACE):
        raise RuntimeError(f"TensorRT refused to register plugin {PLUGIN_NAMESPACE}::{PLUGIN_NAME}")
    _CREATOR = creator
    return creator
