"""Build-once native CPU kernels: C source compiled with the system compiler (`$CC`, else `cc`) into a
per-CPU cache (`$SEMDEPTH_CACHE/native`, else ~/.cache/semdepth/native), keyed by source, flags and CPU
(the libraries use -march=native), written atomically and loaded with ctypes by the kernel modules
(`losses/_native_photometric.py`, `nets/_native_pac.py`), which fall back to torch when this fails."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path


def cpu_key() -> str:
    """What identifies this CPU for -march=native builds: a library built on another CPU is never reused."""
    try:
        with open("/proc/cpuinfo") as f:
            info = [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        info = [platform.processor()]
    return "".join(info) + platform.machine()


def cache_dir() -> Path:
    """Where the compiled kernels live."""
    root = os.environ.get("SEMDEPTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "semdepth")
    return Path(root) / "native"


def build_library(name: str, source: str, flags: list[str]) -> Path:
    """Path of the shared library compiled from `source` with `flags`, building it (atomically) if it is not
    cached yet; raises RuntimeError naming the compiler's error, OSError / SubprocessError when it cannot run."""
    key = hashlib.sha256("\0".join([source, *flags, cpu_key()]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{key}.so"
    if path.is_file():
        return path
    cc = os.environ.get("CC", "cc")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp) / f"{name}.c"
        src.write_text(source)
        out = Path(tmp) / path.name
        proc = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
        os.replace(out, path)  # atomic: a concurrent or interrupted build never leaves a partial library
    return path
