"""Integrity of the on-disk export cache (ONNX graphs, TensorRT engines): caches that heal.

* Every cached artifact gets a sidecar `<file>.sha256` (JSON: size and sha256 of the bytes written),
  written atomically right after the artifact. On use the artifact is checked against it (a stat,
  then a sha256 of a few MB); a missing sidecar (a cache written by an older version, or a kill
  between the two writes) is replaced by a load attempt, and recorded when that succeeds.
* A cached artifact that fails is deleted (with its sidecar) and rebuilt, with a WARNING naming the
  file and the reason. A user-supplied file is never deleted: `GraphFileError` names it instead.
* `sweep_stale_tmp` removes `*.tmp` files older than a minute from a cache directory: leftovers of
  an atomic write killed midway (SIGKILL, power loss). Fresher ones are left alone, another process
  may be writing them (the temp file only exists while already-built bytes are written out).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from semdepth_core.checkpoint import atomic_write_bytes

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"
STALE_TMP_AGE_S = 60.0


class GraphFileError(ValueError):
    """An ONNX graph file is not a loadable graph (truncated, empty, garbage)."""


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_integrity(path: str | Path, data: bytes | None = None) -> None:
    """Write `<path>.sha256` for `data` (the bytes just written to `path`; read back when None)."""
    path = Path(path)
    if data is None:
        size, sha = path.stat().st_size, _digest_file(path)
    else:
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    rec = json.dumps({"file": path.name, "size": size, "sha256": sha}).encode() + b"\n"
    atomic_write_bytes(sidecar_path(path), lambda f: f.write(rec))


def check_integrity(path: str | Path) -> tuple[str, str]:
    """("ok" | "bad" | "unrecorded", reason) of `path` against its sidecar."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        rec = json.loads(side.read_text())
        size, sha = int(rec["size"]), str(rec["sha256"])
    except FileNotFoundError:
        return "unrecorded", "no integrity record"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "bad", f"unreadable integrity record {side.name} ({type(exc).__name__})"
    actual = path.stat().st_size
    if actual != size:
        return "bad", f"size {actual} bytes, {size} recorded at write"
    if _digest_file(path) != sha:
        return "bad", f"sha256 differs from the one recorded at write ({sha[:12]}...)"
    return "ok", ""


def _load_onnx(path: Path):
    """(model, None) or (None, why the file is not a loadable graph)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # google.protobuf DecodeError, OSError, ...
        return None, f"{type(exc).__name__}: {exc}"
    # an empty file decodes as an empty ModelProto: a graph without nodes or outputs is refused too
    if not model.graph.node or not model.graph.output:
        return None, f"no graph nodes/outputs in {path.stat().st_size} bytes"
    return model, None


def load_onnx_checked(path: str | Path):
    """onnx.load `path` and check it is a real graph; GraphFileError naming the file otherwise."""
    path = Path(path)
    model, why = _load_onnx(path)
    if model is None:
        raise GraphFileError(f"{path}: not a valid ONNX graph ({why}); the file is truncated or corrupt, "
                             "re-export it (python -m semdepth_core.export onnx ...)")
    return model


def cached_file_problem(path: str | Path, load_problem: Callable[[Path], str | None]) -> str | None:
    """Why a cached artifact cannot be used (None when it can): its sidecar check, else (no sidecar) a load
    attempt, `load_problem(path)` saying why the load failed or None; a successful load records the sidecar,
    so later starts take the fast path."""
    path = Path(path)
    status, reason = check_integrity(path)
    if status == "ok":
        return None
    if status == "bad":
        return reason
    problem = load_problem(path)
    if problem is not None:
        return f"{reason}, {problem}"
    try:
        record_integrity(path)
    except OSError as exc:  # read-only cache: still usable
        log.info("could not record the integrity of %s (%s)", path, exc)
    return None


def cached_onnx_problem(path: str | Path) -> str | None:
    """Why a cached graph cannot be used (None when it can): `cached_file_problem` with an ONNX load and check."""
    import onnx

    def load_problem(p: Path) -> str | None:
        model, why = _load_onnx(p)
        if model is None:
            return f"load failed: {why}"
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            return f"ONNX checker failed: {type(exc).__name__}: {exc}"
        return None

    return cached_file_problem(path, load_problem)


def reuse_cached(path: str | Path, what: str, problem: Callable[[Path], str | None]) -> bool:
    """True when the cached `path` exists and `problem(path)` finds nothing wrong; a corrupt one is
    discarded with a WARNING naming it (and False: the caller rebuilds it)."""
    path = Path(path)
    if not path.is_file():
        return False
    reason = problem(path)
    if reason is None:
        log.debug("%s cache hit: %s", what, path)
        return True
    discard(path, f"cached {what}", reason, "rebuilding it")
    return False


def discard(path: str | Path, what: str, reason: str, action: str) -> None:
    """WARN naming the file and why, then delete it and its sidecar."""
    path = Path(path)
    log.warning("WARNING: %s %s is corrupt (%s); deleting it and %s", what, path, reason, action)
    for p in (path, sidecar_path(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def sweep_stale_tmp(directory: str | Path, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Delete `*.tmp` files in `directory` older than `max_age_s` (by mtime); returns them."""
    d = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for e in entries:
        if not e.name.endswith(".tmp"):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            age = now - e.stat(follow_symlinks=False).st_mtime
            if age <= max_age_s:
                continue
            os.unlink(e.path)
        except FileNotFoundError:
            continue  # another process finished or swept it
        except OSError as exc:
            log.info("could not remove stale temp file %s (%s)", e.path, exc)
            continue
        removed.append(Path(e.path))
        log.warning("WARNING: removed stale temporary file %s (%.0f s old, left by an interrupted "
                    "cache write)", e.path, age)
    return removed
