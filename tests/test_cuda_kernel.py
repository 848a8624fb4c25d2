"""The fused PAC kernel (semdepth_core/export/cuda/pac_kernel.cu) compiles for sm_80 and sm_90 with
nvcc (a real compile: PTX with both kernel entry points, an object with the host launcher); the
plugin's shared library builds with nvcc, is cached on disk (key, atomic write, integrity record,
healing) and its launcher answers through ctypes (CUDA's own error codes here, without a GPU); a
CPU emulation of the kernel matches PacConv2d; and, on a machine with CUDA, the nvcc-built
launcher matches torch's PacConv2d."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from semdepth_core.export.cache_integrity import check_integrity
from semdepth_core.export.pac_plugin import KERNEL_NAMES, KERNEL_SOURCE

NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.access("/usr/local/bin/nvcc", os.X_OK) else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH or at /usr/local/bin/nvcc: "
                                                    "cannot compile the CUDA kernel here")


def _nvcc(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NVCC, *args], cwd=tmp_path, capture_output=True, text=True, timeout=180)


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_to_ptx(arch, tmp_path):
    ptx = tmp_path / f"pac_{arch}.ptx"
    res = _nvcc(["--ptx", f"-arch={arch}", "-std=c++17", "-o", str(ptx), str(KERNEL_SOURCE)], tmp_path)
    assert res.returncode == 0, f"nvcc failed for {arch}:\n{res.stderr}"
    text = ptx.read_text()
    assert len(text) > 1000
    assert f".target {arch}" in text
    for name in KERNEL_NAMES.values():  # extern "C": unmangled entry points
        assert f".entry {name}(" in text, f"{name} missing from the {arch} PTX"
    # the half kernel converts through float (accumulation in float)
    assert "cvt.f32.f16" in text and "ex2.approx" in text


@needs_nvcc
def test_kernel_object_exports_host_launcher(tmp_path):
    obj = tmp_path / "pac.o"
    res = _nvcc(["-c", "-arch=sm_80", "-std=c++17", "-o", str(obj), str(KERNEL_SOURCE)], tmp_path)
    assert res.returncode == 0, res.stderr
    data = obj.read_bytes()
    assert b"semdepth_pac_conv2d_forward" in data  # extern "C" host launcher (nvcc builds only)
    for name in KERNEL_NAMES.values():
        assert name.encode() in data


def test_kernel_source_is_nvrtc_safe():
    """Host code must stay behind __CUDACC_RTC__ so a device-only compile (NVRTC, or the CPU emulation
    below) sees no host launcher and no cuda_runtime.h."""
    src = KERNEL_SOURCE.read_text()
    guard = src.index("#ifndef __CUDACC_RTC__")
    assert src.index("#include <cuda_runtime.h>") > guard
    assert src.index('extern "C" int semdepth_pac_conv2d_forward') > guard
    assert src.count("extern \"C\" __global__ void") == 2
    assert src.index('extern "C" const char* semdepth_cuda_error_string') > guard


@needs_nvcc
def test_kernel_matches_torch_on_gpu():
    """The nvcc-built library, launched through ctypes with torch's pointers and stream, as the plugin does."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the kernel can be compiled but not run here")
    from semdepth_core.export.pac_plugin import launch_pac, pac_library
    from semdepth_core.nets.pac import PacConv2d

    major, minor = torch.cuda.get_device_capability(0)
    pac_library(f"sm_{major}{minor}")
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 1e-2)):
        for sigma_mode, stride, dil in (("layer", 1, 1), ("filter", 2, 2)):
            layer = PacConv2d(16, 8, 3, stride=stride, padding=dil, dilation=dil, sigma_mode=sigma_mode).cuda()
            x = torch.randn(2, 16, 24, 40, device="cuda")
            g = torch.randn(2, 4, 24, 40, device="cuda")
            with torch.no_grad():
                ref = layer(x, g)
            args = [t.to(dtype).contiguous() for t in (x, g, layer.weight.detach(), layer.bias.detach(),
                                                       layer.log_sigma.detach())]
            out = torch.empty(ref.shape, dtype=dtype, device="cuda")
            launch_pac(*(a.data_ptr() for a in args), out.data_ptr(), B=2, Cin=16, H=24, W=40, D=4, Cout=8, k=3,
                       stride=stride, padding=dil, dilation=dil, sigma_per_filter=sigma_mode == "filter",
                       dtype="float16" if dtype == torch.float16 else "float32",
                       stream=torch.cuda.current_stream().cuda_stream)
            torch.cuda.synchronize()
            err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
            assert err <= tol, (dtype, sigma_mode, err)


# ------------------------------------------------------------------------------------------
# The plugin's shared library: nvcc build, disk cache, ctypes launcher.


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """(cache dir, library path) of one sm_80 build shared by the tests below."""
    if NVCC is None:
        pytest.skip("nvcc not found: the plugin library cannot be built here")
    from semdepth_core.export.cuda_build import build_pac_library

    cache = tmp_path_factory.mktemp("pac_lib")
    return cache, build_pac_library("sm_80", cache, nvcc=NVCC)


def _copy_cache(src: Path, dst: Path) -> Path:
    for f in src.iterdir():
        if f.suffix in (".so", ".sha256"):
            shutil.copy2(f, dst / f.name)
    return dst


def _no_nvcc(monkeypatch):
    """Fail the test if nvcc is run for a build (its version is cached per process)."""
    from semdepth_core.export import cuda_build

    def run(cmd, *a, **k):
        raise AssertionError(f"unexpected nvcc run: {cmd}")

    monkeypatch.setattr(cuda_build.subprocess, "run", run)


def test_plugin_library_builds_with_nvcc_and_is_cached(built_library, monkeypatch):
    from semdepth_core.export import cuda_build

    cache, path = built_library
    key = cuda_build.library_cache_key(KERNEL_SOURCE.read_bytes(), cuda_build.nvcc_version(NVCC), "sm_80")
    assert path == cuda_build.library_path(cache, "sm_80", key) and path.name.startswith("libsemdepth_pac_sm_80_")
    assert check_integrity(path) == ("ok", "")
    assert not list(cache.glob("*.tmp"))  # written to a temp file, then moved into place
    lib = cuda_build.load_library(path)
    assert lib.semdepth_cuda_error_string(1) == b"invalid argument"
    _no_nvcc(monkeypatch)
    assert cuda_build.build_pac_library("sm_80", cache, nvcc=NVCC) == path  # cache hit: nvcc not run


def test_library_cache_key_covers_every_dependency():
    from semdepth_core.export.cuda_build import NVCC_FLAGS, library_cache_key

    base = dict(source=b"__global__ void k() {}", nvcc_version_line="release 13.0, V13.0.88", arch="sm_90")
    k = library_cache_key(**base)
    assert len(k) == 64 and k == library_cache_key(**base) == library_cache_key(**{**base, "arch": "90"})
    for change in ({"source": b"__global__ void k() { }"}, {"nvcc_version_line": "release 12.8, V12.8.93"},
                   {"arch": "sm_80"}, {"flags": [*NVCC_FLAGS, "-G"]}):
        assert library_cache_key(**{**base, **change}) != k, change


def test_arch_names_normalised_and_bad_ones_refused():
    from semdepth_core.export.cuda_build import gencode_flags, normalize_arch

    assert normalize_arch("sm_90") == normalize_arch("90") == normalize_arch("9.0") == normalize_arch((9, 0)) == "sm_90"
    assert normalize_arch("sm_90a") == "sm_90a" and normalize_arch(120) == "sm_120"
    assert gencode_flags("sm_87") == ["-gencode=arch=compute_87,code=sm_87",
                                      "-gencode=arch=compute_87,code=compute_87"]
    for bad in ("hopper", "sm_9", "", "compute_90"):
        with pytest.raises(ValueError, match="look like sm_90"):
            normalize_arch(bad)


def test_corrupt_cached_library_is_rebuilt(built_library, tmp_path, caplog):
    from semdepth_core.export import cuda_build

    _, path = built_library
    cache = _copy_cache(path.parent, tmp_path)
    cached = cache / path.name
    cached.write_bytes(cached.read_bytes()[:4096])  # truncated, as by a full disk
    with caplog.at_level("WARNING"):
        again = cuda_build.build_pac_library("sm_80", cache, nvcc=NVCC)
    assert again == cached and check_integrity(again)[0] == "ok"
    assert any("cached PAC kernel library" in r.getMessage() and "is corrupt" in r.getMessage()
               for r in caplog.records)
    cuda_build.load_library(again)


def test_unrecorded_cached_library_is_loaded_and_recorded(built_library, tmp_path, monkeypatch):
    from semdepth_core.export import cuda_build

    _, path = built_library
    cache = _copy_cache(path.parent, tmp_path)
    cuda_build.sidecar_path(cache / path.name).unlink()
    _no_nvcc(monkeypatch)
    assert cuda_build.build_pac_library("sm_80", cache, nvcc=NVCC) == cache / path.name
    assert check_integrity(cache / path.name)[0] == "ok"


def test_launcher_through_ctypes_reports_cuda_errors(built_library, monkeypatch):
    """The real library, called as the plugin calls it: bad arguments are refused by the launcher, and
    on a machine without a GPU the launch reports CUDA's own error (nothing runs, nothing crashes)."""
    from semdepth_core.export import cuda_build, pac_plugin

    _, path = built_library
    monkeypatch.setattr(pac_plugin, "_LIBRARY", cuda_build.load_library(path))
    kw = dict(B=1, Cin=2, H=4, W=4, D=1, Cout=2, k=3, stride=1, padding=1, dilation=1, sigma_per_filter=False,
              dtype="float32", stream=0)
    with pytest.raises(RuntimeError, match=r"CUDA error 1 \(invalid argument\).*k=2"):
        pac_plugin.launch_pac(1, 2, 3, 4, 5, 6, **{**kw, "k": 2})  # even kernel: refused before any launch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the no-GPU launch error cannot be checked")
    with pytest.raises(RuntimeError, match=r"kernel launch failed with CUDA error \d+ \("):
        pac_plugin.launch_pac(1, 2, 3, 4, 5, 6, **kw)


def test_missing_nvcc_and_prebuilt_library_override(built_library, tmp_path, monkeypatch):
    from semdepth_core.export import cuda_build

    _, path = built_library
    monkeypatch.setattr(cuda_build, "find_nvcc", lambda: None)
    with pytest.raises(ImportError, match=r"nvcc \(CUDA toolkit\) not found.*SEMDEPTH_PAC_LIBRARY"):
        cuda_build.build_pac_library("sm_80", tmp_path)
    monkeypatch.setenv("SEMDEPTH_PAC_LIBRARY", str(path))
    assert cuda_build.pac_library_path() == path  # prebuilt: no nvcc needed
    monkeypatch.setenv("SEMDEPTH_PAC_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(cuda_build.PacLibraryError, match="does not exist"):
        cuda_build.pac_library_path()
    monkeypatch.undo()  # the real find_nvcc again: a bad $SEMDEPTH_NVCC is named
    monkeypatch.setenv("SEMDEPTH_NVCC", str(tmp_path / "nvcc"))
    with pytest.raises(cuda_build.PacLibraryError, match="SEMDEPTH_NVCC.*not an executable"):
        cuda_build.find_nvcc()
    (tmp_path / "garbage.so").write_bytes(b"not an ELF")
    with pytest.raises(cuda_build.PacLibraryError, match="not a loadable PAC kernel library"):
        cuda_build.load_library(tmp_path / "garbage.so")


# ------------------------------------------------------------------------------------------
# CPU emulation: the same .cu source compiled by the host C++ compiler with a tiny CUDA shim
# (blockIdx/threadIdx as globals, __half = _Float16), every thread of the launch grid run in a
# loop. Checks the kernel's indexing, padding/centre handling, sigma modes and the half path
# against PacConv2d on machines without a GPU.

_SHIM = r"""
#pragma once
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
struct semdepth_dim3 { unsigned x, y, z; };
extern semdepth_dim3 blockIdx, threadIdx, blockDim, gridDim;
typedef _Float16 __half;
inline float __half2float(__half h) { return (float)h; }
inline __half __float2half_rn(float f) { return (__half)f; }
inline float __expf(float v) { return std::exp(v); }
"""

_DRIVER = r"""
#include "cuda_fp16.h"
semdepth_dim3 blockIdx, threadIdx, blockDim, gridDim;
#include "KERNEL"

template <typename T, typename F>
static void run(F kernel, const T* x, const T* g, const T* w, const T* b, const T* ls, T* out,
                int B, int Cin, int H, int W, int D, int Cout, int k, int s, int p, int d, int spf) {
    const int Ho = (H + 2 * p - d * (k - 1) - 1) / s + 1, Wo = (W + 2 * p - d * (k - 1) - 1) / s + 1;
    const unsigned threads = 64;
    blockDim = {threads, 1, 1};
    gridDim = {(unsigned)((Ho * Wo + threads - 1) / threads), (unsigned)Cout, (unsigned)B};
    for (unsigned bz = 0; bz < gridDim.z; ++bz)
        for (unsigned by = 0; by < gridDim.y; ++by)
            for (unsigned bx = 0; bx < gridDim.x; ++bx)
                for (unsigned t = 0; t < threads; ++t) {
                    blockIdx = {bx, by, bz};
                    threadIdx = {t, 0, 0};
                    kernel(x, g, w, b, ls, out, B, Cin, H, W, D, Cout, Ho, Wo, k, s, p, d, spf);
                }
}

extern "C" void emu_f32(const float* x, const float* g, const float* w, const float* b, const float* ls, float* out,
                        int B, int Cin, int H, int W, int D, int Cout, int k, int s, int p, int d, int spf) {
    run<float>(pac_conv2d_fwd_f32, x, g, w, b, ls, out, B, Cin, H, W, D, Cout, k, s, p, d, spf);
}
extern "C" void emu_f16(const __half* x, const __half* g, const __half* w, const __half* b, const __half* ls,
                        __half* out, int B, int Cin, int H, int W, int D, int Cout, int k, int s, int p, int d,
                        int spf) {
    run<__half>(pac_conv2d_fwd_f16, x, g, w, b, ls, out, B, Cin, H, W, D, Cout, k, s, p, d, spf);
}
"""

CXX = shutil.which("g++") or shutil.which("c++")


@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory):
    import ctypes

    if CXX is None:
        pytest.skip("no host C++ compiler (g++/c++) for the CPU emulation of the kernel")
    d = tmp_path_factory.mktemp("pac_emu")
    (d / "cuda_fp16.h").write_text(_SHIM)
    (d / "driver.cpp").write_text(_DRIVER.replace("KERNEL", str(KERNEL_SOURCE)))
    lib = d / "libpacemu.so"
    res = subprocess.run([CXX, "-O2", "-std=c++17", "-shared", "-fPIC", "-D__CUDACC_RTC__", f"-I{d}",
                          "-o", str(lib), str(d / "driver.cpp")], capture_output=True, text=True, timeout=180)
    if res.returncode != 0 and "_Float16" in res.stderr:
        pytest.skip(f"host compiler lacks _Float16: {res.stderr[:200]}")
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize("sigma_mode,stride,padding,dilation",
                         [("layer", 1, 1, 1), ("filter", 1, 1, 1), ("layer", 2, 1, 1), ("filter", 1, 2, 2),
                          ("layer", 1, 0, 1), ("layer", 1, 2, 1)])
def test_kernel_cpu_emulation_matches_pac_conv2d(emulated_kernel, sigma_mode, stride, padding, dilation):
    """(padding 2 with dilation 1 puts window centres in the zero padding: guide centre = 0.)"""
    import ctypes

    from semdepth_core.nets.pac import PacConv2d

    torch.manual_seed(7)
    B, Cin, Cout, D, H, W = 2, 5, 4, 3, 9, 13
    layer = PacConv2d(Cin, Cout, 3, stride=stride, padding=padding, dilation=dilation, sigma_mode=sigma_mode)
    with torch.no_grad():
        layer.log_sigma.uniform_(-0.3, 0.6)
    x, g = torch.randn(B, Cin, H, W), torch.randn(B, D, H, W)
    with torch.no_grad():
        ref = layer(x, g).numpy()
    params = [layer.weight.detach().numpy(), layer.bias.detach().numpy(), layer.log_sigma.detach().numpy()]
    dims = [B, Cin, H, W, D, Cout, 3, stride, padding, dilation, int(sigma_mode == "filter")]
    for np_dtype, fn, tol in ((np.float32, emulated_kernel.emu_f32, 1e-5), (np.float16, emulated_kernel.emu_f16, 1e-2)):
        arrays = [np.ascontiguousarray(a, dtype=np_dtype) for a in (x.numpy(), g.numpy(), *params)]
        out = np.full(ref.shape, np.nan, dtype=np_dtype)
        ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in (*arrays, out)]
        fn(*ptrs, *[ctypes.c_int(v) for v in dims])
        err = np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max()
        assert np.all(np.isfinite(out)), "kernel left output elements unwritten"
        assert err <= tol, (np_dtype.__name__, err)
