"""nvcc build of the fused PAC kernel (`cuda/pac_kernel.cu`) into a shared library, cached on disk.

The TensorRT plugin (`pac_plugin.py`) and `benchmarks/gpu_pac.py` call the library's C host
launcher `semdepth_pac_conv2d_forward` through ctypes with raw device pointers and a raw
`cudaStream_t`, so neither CuPy nor a C++ plugin build is needed at run time.

* Build: `nvcc --shared -Xcompiler -fPIC -O3 -std=c++17 -cudart static` with SASS for the GPU's
  architecture plus its PTX (so a newer GPU can JIT it). The CUDA runtime is linked statically:
  the library needs only the driver (libcuda) at run time, and works in the context and on the
  streams of TensorRT, pycuda or torch (runtime and driver stream handles are interchangeable).
* Cache: `<cache>/cuda/libsemdepth_pac_<arch>_<key>.so`, `<cache>` = $SEMDEPTH_CACHE or
  ~/.cache/semdepth. The key is sha256(kernel source) + nvcc's version line + the architecture +
  the nvcc flags, so an edited kernel, another toolkit or another GPU never reuses a stale binary.
  nvcc writes to a per-process `*.tmp` file that is moved into place atomically (under a lock, one
  build per key at a time); a `<lib>.sha256` record (cache_integrity.py) is written after it, and a
  cached library that does not match its record (or, without one, does not load) is deleted and
  rebuilt with a WARNING.
* Overrides: $SEMDEPTH_NVCC (the nvcc to use), $SEMDEPTH_CUDA_ARCH (e.g. sm_87, when no device can
  be queried at build time), $SEMDEPTH_PAC_LIBRARY (a prebuilt library: no nvcc needed).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from semdepth_core.export.cache_integrity import (cached_file_problem, record_integrity, reuse_cached, sidecar_path,
                                                  sweep_stale_tmp)

log = logging.getLogger(__name__)

KERNEL_SOURCE = Path(__file__).resolve().parent / "cuda" / "pac_kernel.cu"
LAUNCHER_SYMBOL = "semdepth_pac_conv2d_forward"
ERROR_SYMBOL = "semdepth_cuda_error_string"
NVCC_FLAGS = ("--shared", "-Xcompiler", "-fPIC", "-O3", "-std=c++17", "-cudart", "static")
NVCC_FALLBACK_PATHS = ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc")
ENV_NVCC, ENV_ARCH, ENV_LIBRARY = "SEMDEPTH_NVCC", "SEMDEPTH_CUDA_ARCH", "SEMDEPTH_PAC_LIBRARY"
BUILD_TIMEOUT_S = 600
_ARCH_RE = re.compile(r"^sm_(\d{2,3})([af]?)$")


class PacLibraryError(ImportError):
    """The PAC plugin's shared library cannot be found, built or loaded (the plugin cannot run)."""


def find_nvcc() -> str | None:
    """Path of nvcc: $SEMDEPTH_NVCC, $CUDA_HOME/bin, PATH, then the usual install places (None if absent)."""
    env = os.environ.get(ENV_NVCC)
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise PacLibraryError(f"${ENV_NVCC}={env!r} is not an executable file")
        return env
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    which = shutil.which("nvcc")
    if which:
        candidates.append(which)
    candidates.extend(NVCC_FALLBACK_PATHS)
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@functools.lru_cache(maxsize=8)
def nvcc_version(nvcc: str) -> str:
    """nvcc's version line, e.g. "Cuda compilation tools, release 13.0, V13.0.88"."""
    try:
        res = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PacLibraryError(f"cannot run {nvcc} --version ({type(exc).__name__}: {exc})") from exc
    lines = [ln.strip() for ln in res.stdout.splitlines() if "release" in ln]
    if res.returncode != 0 or not lines:
        raise PacLibraryError(f"{nvcc} --version gave no release line (exit {res.returncode}): "
                              f"{(res.stdout + res.stderr)[-300:]!r}")
    return lines[-1]


def normalize_arch(arch) -> str:
    """"sm_XY" from "sm_90", "90", "9.0", 90 or (9, 0); ValueError naming the bad value otherwise."""
    if isinstance(arch, (tuple, list)) and len(arch) == 2:
        text = f"sm_{int(arch[0])}{int(arch[1])}"
    else:
        text = str(arch).strip().lower()
        if re.fullmatch(r"\d+\.\d", text):
            major, minor = text.split(".")
            text = f"sm_{major}{minor}"
        elif re.fullmatch(r"\d{2,3}[af]?", text):
            text = f"sm_{text}"
    if not _ARCH_RE.match(text):
        raise ValueError(f"CUDA architecture must look like sm_90 (or 90, 9.0, (9, 0)); got {arch!r}")
    return text


def gencode_flags(arch: str) -> list[str]:
    """nvcc -gencode flags: SASS for `arch` plus its PTX (JIT-compiled on newer GPUs)."""
    arch = normalize_arch(arch)
    compute = "compute_" + arch[3:]
    return [f"-gencode=arch={compute},code={arch}", f"-gencode=arch={compute},code={compute}"]


def device_capability(device: int = 0) -> str:
    """"sm_XY" of CUDA device `device`, asked through pycuda, else torch; RuntimeError if none is visible."""
    reasons = []
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > device:
            major, minor = cuda.Device(device).compute_capability()
            return f"sm_{major}{minor}"
        reasons.append(f"pycuda sees {cuda.Device.count()} CUDA device(s)")
    except Exception as exc:  # ImportError, or pycuda's driver errors
        reasons.append(f"pycuda: {type(exc).__name__}: {exc}")
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > device:
            major, minor = torch.cuda.get_device_capability(device)
            return f"sm_{major}{minor}"
        reasons.append("no CUDA device visible to torch")
    except Exception as exc:
        reasons.append(f"torch: {type(exc).__name__}: {exc}")
    raise RuntimeError(f"no CUDA device {device} visible ({'; '.join(reasons)})")


def detect_arch() -> str:
    """The architecture to build for: $SEMDEPTH_CUDA_ARCH, else CUDA device 0's."""
    env = os.environ.get(ENV_ARCH)
    if env:
        try:
            return normalize_arch(env)
        except ValueError as exc:
            raise PacLibraryError(f"${ENV_ARCH}: {exc}") from None
    try:
        return device_capability(0)
    except RuntimeError as exc:
        raise PacLibraryError(f"cannot tell which GPU to build the PAC kernel for ({exc}); set ${ENV_ARCH}, "
                              "e.g. sm_90") from None


def library_cache_key(source: bytes, nvcc_version_line: str, arch: str, flags: Sequence[str] = NVCC_FLAGS) -> str:
    """sha256 over everything the library depends on (see module docstring)."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(source).digest())
    desc = {"nvcc": nvcc_version_line, "arch": normalize_arch(arch), "flags": list(flags)}
    h.update(json.dumps(desc, sort_keys=True).encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """($SEMDEPTH_CACHE or ~/.cache/semdepth)/cuda."""
    env = os.environ.get("SEMDEPTH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "semdepth") / "cuda"


def library_path(cache_dir: str | Path, arch: str, key: str) -> Path:
    """Cache file of the library for `arch` and `key`."""
    return Path(cache_dir) / f"libsemdepth_pac_{normalize_arch(arch)}_{key[:20]}.so"


@contextlib.contextmanager
def _build_lock(lock_path: Path):
    """Exclusive advisory lock (flock) while one process builds a key; a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(lock_path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_pac_library(arch: str | None = None, cache_dir: str | Path | None = None, nvcc: str | None = None,
                      force: bool = False) -> Path:
    """Build (or reuse from the cache) the PAC shared library for `arch`; returns its path."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise PacLibraryError("nvcc (CUDA toolkit) not found: set $SEMDEPTH_NVCC or $CUDA_HOME, put nvcc on PATH, "
                              f"or point ${ENV_LIBRARY} at a prebuilt libsemdepth_pac .so")
    arch = normalize_arch(arch) if arch is not None else detect_arch()
    try:
        source = KERNEL_SOURCE.read_bytes()
    except OSError as exc:
        raise PacLibraryError(f"PAC kernel source missing: {KERNEL_SOURCE} ({exc})") from exc
    version = nvcc_version(nvcc)
    key = library_cache_key(source, version, arch)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = library_path(root, arch, key)
    with _build_lock(path.with_name(path.name + ".lock")):
        sweep_stale_tmp(root)
        if not force and reuse_cached(path, "PAC kernel library", _cached_library_problem):
            return path
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        cmd = [nvcc, *NVCC_FLAGS, *gencode_flags(arch), "-o", str(tmp), str(KERNEL_SOURCE)]
        log.info("building the PAC kernel library for %s: %s", arch, " ".join(cmd))
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tmp.unlink(missing_ok=True)
            raise PacLibraryError(f"nvcc could not be run for the PAC kernel ({type(exc).__name__}: {exc})") from exc
        if res.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise PacLibraryError(f"nvcc failed to build the PAC kernel for {arch} (exit {res.returncode}):\n"
                                  f"{res.stderr[-2000:]}")
        data = tmp.read_bytes()
        sidecar_path(path).unlink(missing_ok=True)  # never leave an old record beside new bytes
        os.replace(tmp, path)
        record_integrity(path, data)
    log.info("built PAC kernel library %s (%d bytes)", path, len(data))
    return path


def _cached_library_problem(path: Path) -> str | None:
    """Why a cached library cannot be used (None when it can): its integrity record, or, without one,
    a load attempt (recording it on success)."""
    def load_problem(p: Path) -> str | None:
        try:
            load_library(p)
        except PacLibraryError as exc:
            return str(exc)
        return None

    return cached_file_problem(path, load_problem)


def load_library(path: str | Path) -> ctypes.CDLL:
    """ctypes handle of a PAC library with the launcher's and error-string's signatures set."""
    path = Path(path)
    if not path.is_file():
        raise PacLibraryError(f"PAC kernel library not found: {path}")
    try:
        lib = ctypes.CDLL(str(path))
        launch = getattr(lib, LAUNCHER_SYMBOL)
        err = getattr(lib, ERROR_SYMBOL)
    except (OSError, AttributeError) as exc:
        raise PacLibraryError(f"{path} is not a loadable PAC kernel library ({type(exc).__name__}: {exc})") from exc
    vp, i = ctypes.c_void_p, ctypes.c_int
    launch.argtypes = [vp] * 6 + [i] * 12 + [vp]
    launch.restype = i
    err.argtypes = [i]
    err.restype = ctypes.c_char_p
    return lib


def pac_library_path(arch: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """$SEMDEPTH_PAC_LIBRARY when set, else the cached (built on first use) library."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        p = Path(env)
        if not p.is_file():
            raise PacLibraryError(f"${ENV_LIBRARY}={env!r} does not exist")
        return p
    return build_pac_library(arch, cache_dir)
