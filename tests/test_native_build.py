"""semdepth_core.native_build: the one build-and-cache path of the fused CPU kernels."""
from __future__ import annotations

import ctypes
import shutil

import pytest

from semdepth_core import native_build

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@needs_cc
def test_builds_once_per_source_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMDEPTH_CACHE", str(tmp_path))
    src = "int twice(int x) { return 2 * x; }\n"
    flags = ["-O2", "-shared", "-fPIC"]
    path = native_build.build_library("t", src, flags)
    assert path.parent == tmp_path / "native" and path.name.startswith("t-") and path.suffix == ".so"
    assert ctypes.CDLL(str(path)).twice(21) == 42
    mtime = path.stat().st_mtime_ns
    assert native_build.build_library("t", src, flags) == path and path.stat().st_mtime_ns == mtime  # cached
    other = native_build.build_library("t", src.replace("2 *", "3 *"), flags)
    assert other != path and ctypes.CDLL(str(other)).twice(2) == 6  # another source, another library
    assert not list((tmp_path / "native").glob("tmp*"))  # no build leftovers


@needs_cc
def test_a_compile_error_names_the_compiler_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMDEPTH_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="failed: .*error"):
        native_build.build_library("bad", "int f( {", ["-shared", "-fPIC"])
    assert not list((tmp_path / "native").iterdir())
