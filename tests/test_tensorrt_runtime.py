"""The TensorRT runtime (pycuda buffers, stream, execute_async_v3) and the PAC plugin's enqueue,
against a fake `tensorrt` and a fake `pycuda` injected into sys.modules: no GPU, TensorRT or
pycuda needed. The fake device memory is real host memory keyed by the fake device pointers, and
the fake engine computes its outputs from the bytes bound to its inputs, so data flow, bindings
and the order of copies, enqueue and synchronisation are all checked. Also the GPU benchmarks'
skip path and their pure-CPU logic."""
from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np
import pytest

from semdepth_core.export import pac_plugin
from semdepth_core.infer.backends import tensorrt_backend as tb

# ------------------------------------------------------------------------------------------ fakes


class _Enum:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"DataType.{self.name}"


def make_fake_trt(log: list, driver=None) -> types.ModuleType:
    """A fake `tensorrt` module: data types, I/O modes, plugin base classes and a plugin registry."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.fake"
    trt.DataType = types.SimpleNamespace(**{n: _Enum(n) for n in
                                            ("FLOAT", "HALF", "INT32", "INT8", "BOOL", "UINT8", "INT64", "BF16")})
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Enum("INPUT"), OUTPUT=_Enum("OUTPUT"))
    trt.TensorFormat = types.SimpleNamespace(LINEAR=_Enum("LINEAR"), CHW32=_Enum("CHW32"))
    trt.PluginFieldType = types.SimpleNamespace(INT32=_Enum("INT32"), CHAR=_Enum("CHAR"))

    class _Base:
        def __init__(self, *a, **k):
            pass

    for n in ("IPluginV3", "IPluginV3OneCore", "IPluginV3OneBuild", "IPluginV3OneRuntime", "IPluginCreatorV3One"):
        setattr(trt, n, type(n, (_Base,), {}))

    class PluginField:
        def __init__(self, name, data, type):
            self.name, self.data, self.type = name, data, type

    trt.PluginField = PluginField
    trt.PluginFieldCollection = list
    registry = types.SimpleNamespace(creators=[])

    def register_creator(creator, namespace):
        registry.creators.append((creator, namespace))
        return True

    registry.register_creator = register_creator
    trt.get_plugin_registry = lambda: registry
    trt.registry = registry
    return trt


class FakeAllocation:
    def __init__(self, driver, ptr, nbytes):
        self.driver, self.ptr, self.nbytes, self.freed = driver, ptr, nbytes, False

    def __int__(self):
        return self.ptr

    def free(self):
        self.driver.log.append(("free", self.ptr))
        self.freed = True


class FakeDriver(types.ModuleType):
    """A fake `pycuda.driver`: device memory is a dict of byte arrays keyed by fake pointers."""

    def __init__(self, log: list, n_devices: int = 1):
        super().__init__("pycuda.driver")
        self.log, self.memory, self.allocs, self.pinned = log, {}, [], []
        self._next = 0x7f0000000000
        drv = self

        class Context:
            def __init__(self, index):
                self.index = index

            def push(self):
                drv.log.append(("push", self.index))

            @staticmethod
            def pop():
                drv.log.append(("pop",))

            def detach(self):
                drv.log.append(("detach", self.index))

        class Device:
            def __init__(self, index):
                if index >= n_devices:
                    raise RuntimeError(f"cuDeviceGet failed: invalid device ordinal {index}")
                self.index = index

            @staticmethod
            def count():
                return n_devices

            def retain_primary_context(self):
                drv.log.append(("retain", self.index))
                return Context(self.index)

            def compute_capability(self):
                return (9, 0)

        class Stream:
            def __init__(self):
                self.handle = 0xABC0 + len([e for e in drv.log if e[0] == "stream"])
                drv.log.append(("stream", self.handle))

            def synchronize(self):
                drv.log.append(("sync", self.handle))

        self.Context, self.Device, self.Stream = Context, Device, Stream

    def init(self):
        self.log.append(("init",))

    def mem_alloc(self, nbytes):
        ptr = self._next
        self._next += (int(nbytes) + 255) // 256 * 256 + 256
        self.memory[ptr] = np.zeros(int(nbytes), np.uint8)
        a = FakeAllocation(self, ptr, int(nbytes))
        self.allocs.append(a)
        return a

    def pagelocked_empty(self, shape, dtype):
        arr = np.empty(shape, dtype)
        self.pinned.append(arr)
        return arr

    def memcpy_htod_async(self, dev, host, stream=None):
        assert host.nbytes == self.memory[int(dev)].nbytes
        self.memory[int(dev)][:] = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
        self.log.append(("htod", int(dev), stream.handle))

    def memcpy_dtoh_async(self, host, dev, stream=None):
        host.reshape(-1).view(np.uint8)[:] = self.memory[int(dev)]
        self.log.append(("dtoh", int(dev), stream.handle))

    def memcpy_htod(self, dev, host):
        self.memory[int(dev)][:] = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
        self.log.append(("htod_sync", int(dev)))


class FakeEngine:
    """Static-shape engine: tensors = [(name, shape, trt dtype, mode)], compute(inputs) -> outputs."""

    def __init__(self, trt, driver, tensors, compute, execute_ok=True):
        self.trt, self.driver, self.tensors, self.compute, self.execute_ok = trt, driver, tensors, compute, execute_ok
        self.by_name = {t[0]: t for t in tensors}
        self.contexts = []

    @property
    def num_io_tensors(self):
        return len(self.tensors)

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def get_tensor_shape(self, name):
        return list(self.by_name[name][1])

    def get_tensor_dtype(self, name):
        return self.by_name[name][2]

    def get_tensor_mode(self, name):
        return self.by_name[name][3]

    def create_execution_context(self):
        ctx = FakeExecutionContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeExecutionContext:
    def __init__(self, engine):
        self.engine, self.addresses = engine, {}

    def set_tensor_address(self, name, ptr):
        self.engine.driver.log.append(("bind", name, ptr))
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle):
        eng, drv = self.engine, self.engine.driver
        drv.log.append(("execute", stream_handle))
        np_dt = {eng.trt.DataType.FLOAT: np.float32, eng.trt.DataType.HALF: np.float16,
                 eng.trt.DataType.INT64: np.int64, eng.trt.DataType.INT32: np.int32}
        ins = {n: drv.memory[self.addresses[n]].view(np_dt[dt]).reshape(shape).copy()
               for n, shape, dt, mode in eng.tensors if mode is eng.trt.TensorIOMode.INPUT}
        outs = eng.compute(ins)
        for n, shape, dt, mode in eng.tensors:
            if mode is eng.trt.TensorIOMode.OUTPUT:
                drv.memory[self.addresses[n]][:] = np.ascontiguousarray(outs[n], np_dt[dt]).view(np.uint8).reshape(-1)
        return eng.execute_ok


H, W = 8, 16


def depth_compute(ins):
    rgb = ins["rgb"]
    return {"inv_depth": rgb.mean(axis=1, keepdims=True) + 1.0, "labels": (rgb[:, 0] > 0.5).astype(np.int64)}


def pose_compute(ins):
    vec = np.stack([np.full(6, ins[f"ctx{i}"].mean() - ins["tgt"].mean()) for i in range(2)])
    return {"pose": vec[None].astype(np.float32)}


@pytest.fixture
def fake(monkeypatch):
    """Inject fake tensorrt + pycuda modules; returns (trt, driver, log)."""
    log: list = []
    drv = FakeDriver(log)
    trt = make_fake_trt(log)
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    return trt, drv, log


def depth_engine(trt, drv, **kw):
    IN, OUT, F = trt.TensorIOMode.INPUT, trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT
    return FakeEngine(trt, drv, [("rgb", (1, 3, H, W), F, IN), ("inv_depth", (1, 1, H, W), F, OUT),
                                 ("labels", (1, H, W), trt.DataType.INT64, OUT)], depth_compute, **kw)


def pose_engine(trt, drv):
    IN, OUT, F = trt.TensorIOMode.INPUT, trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT
    return FakeEngine(trt, drv, [("tgt", (1, 3, H, W), F, IN), ("ctx0", (1, 3, H, W), F, IN),
                                 ("ctx1", (1, 3, H, W), F, IN), ("pose", (1, 2, 6), F, OUT)], pose_compute)


# ------------------------------------------------------------------------------- runtime: buffers


def test_every_io_tensor_gets_device_and_pinned_buffers_and_a_binding(fake):
    trt, drv, log = fake
    engine = depth_engine(trt, drv)
    runner = tb.EngineRunner(engine, "cuda")
    assert set(runner.inputs) == {"rgb"} and set(runner.outputs) == {"inv_depth", "labels"}
    expected = {"rgb": ((1, 3, H, W), np.float32), "inv_depth": ((1, 1, H, W), np.float32),
                "labels": ((1, H, W), np.int64)}
    binds = {e[1]: e[2] for e in log if e[0] == "bind"}
    assert set(binds) == set(expected)
    for name, (shape, dtype) in expected.items():
        dev = runner.inputs.get(name) or runner.outputs[name]
        host = runner.host_in.get(name) if name in runner.host_in else runner.host_out[name]
        assert host.shape == shape and host.dtype == dtype  # page-locked buffer of the tensor's shape/dtype
        assert any(host is p for p in drv.pinned)
        assert dev.nbytes == int(np.prod(shape)) * np.dtype(dtype).itemsize  # device buffer of exact nbytes
        assert binds[name] == int(dev)  # set_tensor_address got this buffer's pointer
    assert len(drv.allocs) == 3 and len({int(a) for a in drv.allocs}) == 3
    assert ("retain", 0) in log  # the device's primary context, shared with the runtime and the plugin


def test_call_orders_copies_enqueue_and_one_sync_on_one_stream(fake):
    trt, drv, log = fake
    runner = tb.EngineRunner(depth_engine(trt, drv), "cuda:0")
    x = np.random.default_rng(0).random((1, 3, H, W)).astype(np.float32)
    for call in range(2):
        start = len(log)
        out = runner({"rgb": x})
        events = log[start:]
        kinds = [e[0] for e in events]
        assert kinds[0] == "push" and kinds[-1] == "pop"
        i_exec = kinds.index("execute")
        htod = [e for e in events[:i_exec] if e[0] == "htod"]
        dtoh = [e for e in events[i_exec:] if e[0] == "dtoh"]
        assert [e[1] for e in htod] == [int(runner.inputs["rgb"])]  # inputs up before the enqueue
        assert sorted(e[1] for e in dtoh) == sorted(int(d) for d in runner.outputs.values())  # outputs after
        assert "dtoh" not in kinds[:i_exec] and "htod" not in kinds[i_exec:]
        handle = runner.stream.handle
        assert all(e[2] == handle for e in htod + dtoh) and events[i_exec][1] == handle  # one stream
        syncs = [e for e in events if e[0] == "sync"]
        assert syncs == [("sync", handle)] and kinds.index("sync") > max(i for i, k in enumerate(kinds) if k == "dtoh")
        ref = depth_compute({"rgb": x})
        np.testing.assert_allclose(out["inv_depth"], ref["inv_depth"], rtol=1e-6)
        np.testing.assert_array_equal(out["labels"], ref["labels"])


def test_outputs_are_fresh_arrays_not_the_reused_host_buffers(fake):
    trt, drv, _ = fake
    runner = tb.EngineRunner(depth_engine(trt, drv))
    a = runner({"rgb": np.zeros((1, 3, H, W), np.float32)})
    b = runner({"rgb": np.ones((1, 3, H, W), np.float32)})
    assert np.all(a["inv_depth"] == 1.0) and np.all(b["inv_depth"] == 2.0)


def test_dynamic_shapes_are_refused_and_buffers_freed(fake):
    trt, drv, log = fake
    IN, OUT, F = trt.TensorIOMode.INPUT, trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT
    engine = FakeEngine(trt, drv, [("inv_depth", (1, 1, H, W), F, OUT), ("rgb", (-1, 3, H, W), F, IN)],
                        depth_compute)
    with pytest.raises(ValueError, match=r"'rgb' has a dynamic shape \(-1, 3, 8, 16\).*fixed size"):
        tb.EngineRunner(engine)
    assert drv.allocs and all(a.freed for a in drv.allocs)
    assert ("detach", 0) in log


def test_bad_feeds_and_failed_enqueue_are_clear_errors(fake):
    trt, drv, _ = fake
    runner = tb.EngineRunner(depth_engine(trt, drv))
    with pytest.raises(KeyError, match=r"missing \['rgb'\]"):
        runner({"image": np.zeros((1, 3, H, W), np.float32)})
    with pytest.raises(ValueError, match=r"'rgb' has shape \(1, 3, 4, 4\).*\(1, 3, 8, 16\)"):
        runner({"rgb": np.zeros((1, 3, 4, 4), np.float32)})
    failing = tb.EngineRunner(depth_engine(trt, drv, execute_ok=False))
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        failing({"rgb": np.zeros((1, 3, H, W), np.float32)})


def test_unsupported_dtype_and_device_are_refused(fake):
    trt, drv, _ = fake
    IN = trt.TensorIOMode.INPUT
    with pytest.raises(TypeError, match="BF16"):
        tb.EngineRunner(FakeEngine(trt, drv, [("rgb", (1, 3, H, W), trt.DataType.BF16, IN)], depth_compute))
    with pytest.raises(ValueError, match="'cpu'"):
        tb.EngineRunner(depth_engine(trt, drv), "cpu")
    with pytest.raises(RuntimeError, match="device 3 requested but pycuda sees 1"):
        tb.EngineRunner(depth_engine(trt, drv), "cuda:3")


def test_close_frees_device_buffers_and_releases_the_context(fake):
    trt, drv, log = fake
    runner = tb.EngineRunner(depth_engine(trt, drv))
    runner.close()
    assert all(a.freed for a in drv.allocs) and log[-2:] == [("pop",), ("detach", 0)]
    runner.close()  # idempotent


@pytest.mark.parametrize("missing", ["pycuda", "tensorrt"])
def test_missing_pycuda_or_tensorrt_is_a_clear_import_error(fake, monkeypatch, missing):
    trt, drv, _ = fake
    engine = depth_engine(trt, drv)
    if missing == "pycuda":
        monkeypatch.setitem(sys.modules, "pycuda", None)
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", None)
    label = "pycuda" if missing == "pycuda" else "TensorRT"
    with pytest.raises(ImportError, match=rf"{label} is not importable.*pip install '\.\[trt\]'"):
        tb.EngineRunner(engine)
    with pytest.raises(ImportError, match=f"{label} is not importable"):
        tb.TensorRTRunner.create(models=None, net_size=(W, H))
    from semdepth_core.infer.predictor import tensorrt_available

    ok, reason = tensorrt_available()
    assert not ok and ("pycuda" in reason if missing == "pycuda" else "TensorRT is not importable" in reason)


def test_tensorrt_available_asks_pycuda_for_a_device(fake, monkeypatch):
    from semdepth_core.infer.predictor import tensorrt_available

    assert tensorrt_available() == (True, "ok")
    drv0 = FakeDriver([], n_devices=0)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv0)
    sys.modules["pycuda"].driver = drv0
    assert tensorrt_available() == (False, "no CUDA device visible to pycuda")


def test_runner_run_depth_and_run_pose(fake):
    trt, drv, _ = fake
    runner = tb.TensorRTRunner(tb.EngineRunner(depth_engine(trt, drv)), tb.EngineRunner(pose_engine(trt, drv)))
    assert runner.has_semantics and runner.has_pose and runner.num_context == 2
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, H, W)).astype(np.float32)
    inv, labels = runner.run_depth(x)
    assert inv.shape == (H, W) and inv.dtype == np.float32 and labels.shape == (H, W)
    np.testing.assert_allclose(inv, x[0].mean(axis=0) + 1.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, (x[0, 0] > 0.5).astype(np.int64))
    tgt, c0, c1 = (rng.random((1, 3, H, W)).astype(np.float32) for _ in range(3))
    pose = runner.run_pose(tgt, [c0, c1])
    assert pose.shape == (2, 6) and pose.dtype == np.float64
    np.testing.assert_allclose(pose[:, 0], [c0.mean() - tgt.mean(), c1.mean() - tgt.mean()], rtol=1e-5)
    no_pose = tb.TensorRTRunner(tb.EngineRunner(depth_engine(trt, drv)), None)
    with pytest.raises(RuntimeError, match="no pose engine"):
        no_pose.run_pose(tgt, [c0])


def test_create_builds_from_the_decomposed_graph_when_the_plugin_cannot_run(fake, monkeypatch, caplog):
    def no_library(arch=None):
        raise pac_plugin.PacLibraryError("nvcc (CUDA toolkit) not found")

    monkeypatch.setattr(pac_plugin, "pac_library", no_library)
    with caplog.at_level("WARNING"):
        assert tb.pac_graph_kind() == "decomposed"
    assert any("nvcc (CUDA toolkit) not found" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(pac_plugin, "pac_library", lambda arch=None: object())
    assert tb.pac_graph_kind() == "custom-op"


# ---------------------------------------------------------------------- PAC plugin: enqueue/launch


class FakeLibrary:
    """Stands in for the nvcc-built library: records the launcher's ctypes arguments."""

    def __init__(self, rc=0):
        self.calls, self.rc = [], rc

    def semdepth_pac_conv2d_forward(self, *args):
        self.calls.append(args)
        return self.rc

    def semdepth_cuda_error_string(self, code):
        return b"an illegal memory access was encountered"


def _values(args):
    return [a.value for a in args]


@pytest.fixture
def plugin_classes(fake, monkeypatch):
    monkeypatch.setattr(pac_plugin, "_CREATOR", None)
    lib = FakeLibrary()
    monkeypatch.setattr(pac_plugin, "_LIBRARY", lib)
    plugin_cls, creator_cls = pac_plugin._make_classes()
    return fake[0], plugin_cls, creator_cls, lib


def _desc(dims, dtype):
    return types.SimpleNamespace(dims=dims, type=dtype)


@pytest.mark.parametrize("half,per_filter", [(False, False), (True, True)])
def test_plugin_enqueue_passes_pointers_dims_and_stream_in_order(plugin_classes, half, per_filter):
    trt, plugin_cls, _, lib = plugin_classes
    dt = trt.DataType.HALF if half else trt.DataType.FLOAT
    plugin = plugin_cls(kernel_size=3, stride=2, padding=2, dilation=2, sigma_mode="filter" if per_filter else "layer")
    B, Cin, Hh, Ww, D, Cout = 2, 16, 24, 40, 4, 8
    desc = [_desc((B, Cin, Hh, Ww), dt), _desc((B, D, Hh, Ww), dt), _desc((Cout, Cin, 3, 3), dt), _desc((Cout,), dt),
            _desc((Cout,) if per_filter else (1,), dt)]
    ptrs = [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]
    plugin.enqueue(desc, [_desc((B, Cout, 12, 20), dt)], ptrs, [0x6000], 0, 0xBEEF)
    (args,) = lib.calls
    assert len(args) == 19
    assert _values(args[:6]) == [0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000]
    assert all(isinstance(a, ctypes.c_void_p) for a in args[:6] + (args[18],))
    assert _values(args[6:18]) == [B, Cin, Hh, Ww, D, Cout, 3, 2, 2, 2, int(per_filter), 1 if half else 0]
    assert args[18].value == 0xBEEF  # TensorRT's cudaStream_t, untouched


def test_launch_errors_are_clear(plugin_classes, monkeypatch):
    _, _, _, lib = plugin_classes
    kw = dict(B=1, Cin=2, H=4, W=4, D=1, Cout=2, k=3, stride=1, padding=1, dilation=1, sigma_per_filter=False,
              dtype="float32", stream=7)
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        pac_plugin.launch_pac(1, 2, 3, 4, 5, 6, **{**kw, "dtype": "int8"})
    with pytest.raises(ValueError, match="null device pointer for guide"):
        pac_plugin.launch_pac(1, 0, 3, 4, 5, 6, **kw)
    with pytest.raises(ValueError, match="non-positive dimensions {'Cout': 0}"):
        pac_plugin.launch_pac(1, 2, 3, 4, 5, 6, **{**kw, "Cout": 0})
    assert not lib.calls
    lib.rc = 700
    with pytest.raises(RuntimeError, match="CUDA error 700 \\(an illegal memory access was encountered\\)"):
        pac_plugin.launch_pac(1, 2, 3, 4, 5, 6, **kw)


def test_plugin_registration_names_fields_and_serialisation(plugin_classes):
    trt, plugin_cls, creator_cls, _ = plugin_classes
    creator = pac_plugin.register_pac_plugin()
    assert trt.registry.creators == [(creator, "semdepth")]
    assert (creator.name, creator.plugin_namespace, creator.plugin_version) == ("PacConv2d", "semdepth", "1")
    assert [f.name for f in creator.field_names] == ["kernel_size", "stride", "padding", "dilation", "sigma_mode"]
    assert pac_plugin.register_pac_plugin() is creator  # once per process
    plugin = plugin_cls(kernel_size=5, stride=1, padding=4, dilation=2, sigma_mode="filter")
    clone = creator.create_plugin("pac", plugin.get_fields_to_serialize(), None)
    assert (clone.kernel_size, clone.stride, clone.padding, clone.dilation, clone.sigma_mode) == (5, 1, 4, 2, "filter")
    assert (clone.plugin_name, clone.plugin_namespace, clone.plugin_version) == ("PacConv2d", "semdepth", "1")


def test_registration_needs_the_kernel_library(fake, monkeypatch):
    monkeypatch.setattr(pac_plugin, "_CREATOR", None)
    monkeypatch.setattr(pac_plugin, "_LIBRARY", None)

    def missing(arch=None, cache_dir=None):
        raise pac_plugin.PacLibraryError("nvcc (CUDA toolkit) not found")

    monkeypatch.setattr(pac_plugin, "pac_library_path", missing)
    with pytest.raises(ImportError, match="nvcc"):
        pac_plugin.register_pac_plugin()
    assert fake[0].registry.creators == []


# ------------------------------------------------------------------------------ GPU benchmarks


@pytest.mark.parametrize("name", ["gpu_pac", "gpu_node"])
def test_gpu_benchmark_without_cuda_writes_a_skipped_result(name, tmp_path, monkeypatch):
    import importlib

    import torch

    mod = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys.modules[mod.write_result.__module__], "RESULTS", tmp_path)
    assert mod.main(["--quick"]) == 0
    data = json.loads((tmp_path / f"{name}_quick.json").read_text())
    assert data["skipped"] is True and "no CUDA device" in data["reason"] and data["quick"] is True
    statuses = [t["status"] for t in data["targets"].values() if isinstance(t, dict)]
    assert statuses and set(statuses) == {"not measured"}
    assert not list(tmp_path.glob("*.tmp"))


def test_gpu_node_targets_and_sizes():
    from benchmarks import gpu_node as g

    assert g.target_status(4.2, 5.0, "max") == "met" and g.target_status(5.3, 5.0, "max") == "not met"
    assert g.target_status(3.5, 3.0, "min") == "met" and g.target_status(2.0, 3.0, "min") == "not met"
    assert g.target_status(None, 5.0, "max") == "not measured"
    with pytest.raises(ValueError, match="'max' or 'min'"):
        g.target_status(1.0, 5.0, "less")
    assert g.sizes_to_run((416, 128), quick=False) == [("640x192", (640, 192)), ("416x128 (checkpoint)", (416, 128))]
    assert g.sizes_to_run((640, 192), quick=False) == [("640x192", (640, 192))]
    assert g.sizes_to_run((416, 128), quick=True) == [("640x192", (640, 192))]
    rows = [{"size": "640x192", "trt_fp16_ms": 6.1, "plugin_speedup": None},
            {"size": "416x128 (checkpoint)", "trt_fp16_ms": 3.0, "plugin_speedup": None}]
    t = g.build_targets(rows, None, "not applicable: no PacConv2d layers")
    assert t["trt_fp16_640x192_le_5ms"]["status"] == "not met" and t["trt_fp16_640x192_le_5ms"]["measured_ms"] == 6.1
    assert t["pac_plugin_ge_3x_decomposed"] == {"target": 3.0, "measured": None, "status": "not measured",
                                                "reason": "not applicable: no PacConv2d layers"}
    t = g.build_targets([], "TensorRT unavailable: pycuda is not importable", None)
    assert t["trt_fp16_640x192_le_5ms"]["reason"].startswith("TensorRT unavailable")


def test_gpu_pac_speedup_status():
    from benchmarks import gpu_pac

    assert gpu_pac.speedup_status([3.4, 5.0]) == "met"
    assert gpu_pac.speedup_status([3.4, 2.9]) == "not met"
    assert gpu_pac.speedup_status([]) == "not measured"


# ------------------------------------------------------------------- engine build helpers (pycuda)


def test_compute_capability_for_the_engine_key_comes_from_pycuda(fake):
    from semdepth_core.export.tensorrt import compute_capability

    assert compute_capability(0) == "sm_90"  # same "sm_XY" form as before: engine cache keys unchanged


def test_int8_calibrator_feeds_batches_through_a_pycuda_buffer(fake, tmp_path):
    import cv2

    from semdepth_core.export.tensorrt import load_calibration_batch, make_calibrator

    trt, drv, log = fake
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    cal = make_calibrator(tmp_path, (W, H), tmp_path / "cal.cache", batch_size=2)
    (ptr,) = cal.get_batch(["rgb"])
    assert ptr == int(cal.device_buf) and cal.device_buf.nbytes == 2 * 3 * H * W * 4
    expected = load_calibration_batch(sorted(tmp_path.glob("*.png"))[:2], (W, H))
    np.testing.assert_array_equal(drv.memory[ptr].view(np.float32).reshape(2, 3, H, W), expected)
    assert cal.get_batch(["rgb"]) is None  # one image left: not a full batch
    assert ("htod_sync", ptr) in log and log.count(("push", 0)) == log.count(("pop",)) == 2
