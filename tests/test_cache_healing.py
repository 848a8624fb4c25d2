"""Export caches that heal: a truncated / empty / garbage cached ONNX graph (depth or pose) is
re-exported with a WARNING naming it, stale `*.tmp` leftovers of interrupted writes are swept at
start, and a corrupt user-supplied graph is refused with an error naming it (never deleted)."""
from __future__ import annotations

import logging
import os
import shutil
import time

import numpy as np
import pytest

from semdepth_core.export.cache_integrity import GraphFileError, sidecar_path
from semdepth_core.infer import load_predictor

LOGGER = "semdepth_core"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from conftest import TINY_NODE_MODEL, write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", TINY_NODE_MODEL)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 192, 3), dtype=np.uint8) for _ in range(2)]


def _outputs(pred, images):
    out = pred.predict(images[1])
    return out.depth, out.labels, pred.relative_pose(images[0], images[1])


@pytest.fixture(scope="module")
def pristine(ckpt, images, tmp_path_factory):
    """A cache filled by a first load, and that load's outputs."""
    cache = tmp_path_factory.mktemp("cache")
    pred = load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
    assert pred.has_pose and pred.has_semantics
    return cache, _outputs(pred, images)


@pytest.fixture
def cache(pristine, tmp_path):
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    return d


def _graphs(cache, sub="onnx"):
    depth = next(p for p in (cache / sub).glob("*_decomposed.onnx"))
    return {"depth": depth, "pose": depth.with_name(depth.stem + ".pose.onnx")}


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_first_export_records_size_and_hash(cache):
    import hashlib
    import json

    for g in _graphs(cache).values():
        rec = json.loads(sidecar_path(g).read_text())
        data = g.read_bytes()
        assert rec["size"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()


CORRUPTIONS = {
    "truncated": lambda b: b[: len(b) // 3],
    "empty": lambda b: b"",
    "garbage": lambda b: bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
    "garbage-same-size": lambda b: bytes(np.random.default_rng(2).integers(0, 256, len(b), dtype=np.uint8)),
}


# (depth graph, pose graph) corruptions, one load each: every kind is seen on both graphs
CASES = [("truncated", "empty"), ("empty", "garbage"), ("garbage", "truncated"), ("garbage-same-size", None)]


@pytest.mark.parametrize("depth_kind,pose_kind", CASES)
def test_corrupt_cached_graph_is_rebuilt_with_warning(ckpt, images, pristine, cache, depth_kind, pose_kind,
                                                      caplog):
    graphs = _graphs(cache)
    corrupted = []
    for graph, kind in (("depth", depth_kind), ("pose", pose_kind)):
        if kind is not None:
            path = graphs[graph]
            path.write_bytes(CORRUPTIONS[kind](path.read_bytes()))
            corrupted.append(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        pred = load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
    for path in corrupted:
        msgs = [m for m in _warnings(caplog) if str(path) in m]
        assert len(msgs) == 1 and "corrupt" in msgs[0] and "re-exporting" in msgs[0], _warnings(caplog)
    assert pred.has_pose and pred.has_semantics
    _assert_same(_outputs(pred, images), pristine[1])
    if pose_kind is None:  # healed: the next start is clean
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
        assert not _warnings(caplog)


def test_cache_without_record_is_checked_by_loading(ckpt, images, pristine, cache, caplog):
    """Caches written before the size/hash record: a corrupt graph is rebuilt, good ones are kept and recorded."""
    graphs = _graphs(cache)
    for g in graphs.values():
        sidecar_path(g).unlink()
    bad = graphs["pose"]
    bad.write_bytes(bad.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        pred = load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
    assert any(str(bad) in m and "load failed" in m for m in _warnings(caplog)), _warnings(caplog)
    _assert_same(_outputs(pred, images), pristine[1])
    assert all(sidecar_path(g).is_file() for g in graphs.values())

    for g in graphs.values():  # both good, no records: no warning, no re-export, records written
        sidecar_path(g).unlink()
    mtimes = [g.stat().st_mtime_ns for g in graphs.values()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
    assert not _warnings(caplog)
    assert [g.stat().st_mtime_ns for g in graphs.values()] == mtimes
    assert all(sidecar_path(g).is_file() for g in graphs.values())


def test_stale_tmp_files_are_swept_fresh_ones_kept(ckpt, cache, caplog):
    d = cache / "onnx"
    stale = d / "x.onnx.1234.tmp"
    stale_hidden = d / ".x.onnx.abcd.tmp"  # the name atomic_write_bytes gives its temp files
    fresh = d / "y.onnx.5678.tmp"
    for p in (stale, stale_hidden, fresh):
        p.write_bytes(b"partial")
    old = time.time() - 120
    for p in (stale, stale_hidden):
        os.utime(p, (old, old))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load_predictor(ckpt, backend="onnxruntime", engine_cache_dir=cache)
    assert not stale.exists() and not stale_hidden.exists()
    assert fresh.exists()
    msgs = _warnings(caplog)
    assert any(str(stale) in m and "stale" in m for m in msgs), msgs
    assert not any(str(fresh) in m for m in msgs)


@pytest.mark.parametrize("graph", ["depth", "pose"])
@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
def test_corrupt_user_graph_is_refused_not_deleted(ckpt, cache, tmp_path, graph, kind):
    user = tmp_path / "user"
    user.mkdir()
    for g in _graphs(cache).values():
        shutil.copy(g, user / g.name)  # without the cache's records
    target = _graphs(user, "")[graph]
    bad = CORRUPTIONS[kind](target.read_bytes())
    target.write_bytes(bad)
    with pytest.raises(GraphFileError) as info:
        load_predictor(ckpt, backend="onnxruntime", onnx_path=_graphs(user, "")["depth"])
    msg = str(info.value)
    assert str(target) in msg and "not a valid ONNX graph" in msg
    assert isinstance(info.value, ValueError) and info.value.__cause__ is None
    assert target.read_bytes() == bad  # left alone


def test_engine_cache_checks_without_tensorrt(tmp_path, monkeypatch, caplog):
    """The TensorRT engine cache uses the same records (the build itself needs a GPU: test_export)."""
    from semdepth_core.export import tensorrt as trt_mod
    from semdepth_core.export.cache_integrity import record_integrity

    engine = tmp_path / "m_fp32_sm_90_abc.engine"
    engine.write_bytes(b"serialised engine")
    record_integrity(engine, b"serialised engine")
    assert trt_mod._cached_engine_problem(engine) is None
    engine.write_bytes(b"serialised engin")  # truncated
    assert "recorded at write" in trt_mod._cached_engine_problem(engine)
    sidecar_path(engine).unlink()  # older cache: a deserialisation attempt decides
    monkeypatch.setattr(trt_mod, "load_engine", lambda p: (_ for _ in ()).throw(RuntimeError("bad engine")))
    assert "deserialisation failed" in trt_mod._cached_engine_problem(engine)
    monkeypatch.setattr(trt_mod, "load_engine", lambda p: object())
    assert trt_mod._cached_engine_problem(engine) is None and sidecar_path(engine).is_file()

    class FakeConfig:  # TensorRT rejects an unreadable timing cache: dropped, an empty one is used
        def create_timing_cache(self, raw):
            if raw:
                raise RuntimeError("corrupt timing cache")
            return "empty cache"

    timing = tmp_path / "timing_sm_90_trt10.cache"
    timing.write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert trt_mod._timing_cache(FakeConfig(), timing) == "empty cache"
    assert not timing.exists() and any(str(timing) in m for m in _warnings(caplog))
