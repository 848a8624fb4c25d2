"""ONNX Runtime backend: the decomposed-PAC depth graph (+ the pose graph) on CPUExecutionProvider,
or CUDAExecutionProvider when the device is CUDA and the provider is present.

Graphs come from `onnx_path` (checked against the checkpoint through their metadata) or are
exported on first use into a cache directory keyed by the checkpoint's sha256 and the input size.
Cached graphs are checked against the size + sha256 recorded when they were written (or loaded, for
caches without that record) and re-exported with a WARNING when corrupt; stale `*.tmp` leftovers
of interrupted writes are swept (export/cache_integrity.py). A corrupt user-supplied graph raises
GraphFileError naming it and is left alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from semdepth_core.export.cache_integrity import cached_onnx_problem, discard, load_onnx_checked, sweep_stale_tmp
from semdepth_core.export.onnx_export import export_loaded, pose_graph_path, read_metadata, semantic_graph_path

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("SEMDEPTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "semdepth"


def check_graph_matches(path: Path, models, net_size: tuple[int, int], need_decomposed: bool) -> None:
    """Raise ValueError when an exported graph is not this checkpoint / size / PAC mode
    (GraphFileError, a ValueError, when it is no loadable graph at all)."""
    meta = read_metadata(load_onnx_checked(path))
    w, h = net_size
    sha = meta.get("checkpoint_sha256")
    if sha is not None and sha != models.checkpoint_sha256:
        raise ValueError(f"{path}: exported from another checkpoint (sha256 {sha[:12]}..., "
                         f"expected {models.checkpoint_sha256[:12]}...); re-export it")
    if "height" in meta and (int(meta["height"]), int(meta["width"])) != (h, w):
        raise ValueError(f"{path}: exported for {meta['width']}x{meta['height']}, predictor configured for {w}x{h}")
    if need_decomposed and meta.get("pac") == "custom-op":
        raise ValueError(f"{path}: has custom semdepth::PacConv2d nodes (TensorRT only); "
                         "export with --pac decomposed for ONNX Runtime")


def cached_onnx_paths(models, net_size: tuple[int, int], cache_dir: str | Path | None, pac: str,
                      split_semantics: bool = False) -> Path:
    """Depth-graph path in the cache for (checkpoint, size, pac[, split]); exported (atomically) if missing
    or corrupt (WARNING naming the file); stale temp files in the cache are swept first.
    split_semantics: the depth and semantic nets as two graphs (`export_loaded`)."""
    w, h = net_size
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    onnx_dir = root / "onnx"
    sweep_stale_tmp(onnx_dir)
    path = onnx_dir / f"{models.checkpoint_sha256[:16]}_{w}x{h}_{pac}{'_split' if split_semantics else ''}.onnx"
    graphs = [path] + ([pose_graph_path(path)] if models.pose_net is not None else []) + \
        ([semantic_graph_path(path)] if split_semantics else [])
    export = False
    for g in graphs:
        if not g.is_file():
            export = True
            continue
        problem = cached_onnx_problem(g)
        if problem is not None:
            discard(g, "cached ONNX graph", problem, "re-exporting it from the checkpoint")
            export = True
    if export:
        log.info("exporting %s (%s PAC) to %s", models.checkpoint_path, pac, path)
        export_loaded(models, path, net_size, pac=pac, logits=False, pose=True, sidecar=True,
                      split_semantics=split_semantics)
    return path


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in avail:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("WARNING: CUDAExecutionProvider not available in onnxruntime; running on CPU")
    return ["CPUExecutionProvider"]


def _session_options(threads: int | None, spin: bool = True):
    """ORT session options: all graph optimisations, `threads` intra-op threads (None/0: ORT's default), and
    spinning worker threads unless `spin` is False."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads and threads > 0:
        opts.intra_op_num_threads = int(threads)
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(self, depth_path: str | Path, pose_path: str | Path | None = None, device: str = "cpu",
                 threads: int | None = None, semantic_path: str | Path | None = None, semantic_threads: int | None = None):
        """threads: intra-op threads; None follows torch.get_num_threads() (whose default is the
        physical core count, ORT's own default too), so a caller's torch.set_num_threads() applies
        to both CPU backends alike. semantic_path: the semantic graph of a split export (run by
        `run_semantics`, with `semantic_threads` intra-op threads, default `threads`; the node's
        semantics.rate runs it beside the depth graph on a thread of its own with 1)."""
        import onnxruntime as ort

        if threads is None:
            import torch

            threads = torch.get_num_threads()
        # with a separate semantic graph two sessions share the cores (the node runs them on two threads):
        # worker threads that spin while waiting for work would take the cores from the other session
        shared = semantic_path is not None
        opts = _session_options(threads, spin=not shared)
        providers = _providers(device)
        self.depth_path = Path(depth_path)
        self.session = ort.InferenceSession(str(depth_path), sess_options=opts, providers=providers)
        outs = [o.name for o in self.session.get_outputs()]
        if "inv_depth" not in outs:
            raise ValueError(f"{depth_path}: no 'inv_depth' output (outputs: {outs})")
        self._outputs = ["inv_depth"] + (["labels"] if "labels" in outs else [])
        self._input = self.session.get_inputs()[0].name
        self.sem_session = None
        if semantic_path is not None:
            sopts = _session_options(semantic_threads if semantic_threads is not None else threads, spin=False)
            self.sem_session = ort.InferenceSession(str(semantic_path), sess_options=sopts, providers=providers)
            if [o.name for o in self.sem_session.get_outputs()] != ["labels"]:
                raise ValueError(f"{semantic_path}: expected one 'labels' output")
        self.has_semantics = "labels" in outs or self.sem_session is not None
        self.pose_session = None
        if pose_path is not None and Path(pose_path).is_file():
            self.pose_session = ort.InferenceSession(str(pose_path), sess_options=opts, providers=providers)
        self.has_pose = self.pose_session is not None
        self.num_context = (len(self.pose_session.get_inputs()) - 1) if self.has_pose else 0
        self.providers = self.session.get_providers()

    @classmethod
    def create(cls, models, net_size: tuple[int, int], device: str = "cpu", onnx_path=None, cache_dir=None,
               split_semantics: bool = False, semantic_threads: int | None = None):
        if onnx_path is not None:
            path = Path(onnx_path)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX graph not found: {path}")
            split_semantics = semantic_graph_path(path).is_file()
        else:
            path = cached_onnx_paths(models, net_size, cache_dir, "decomposed", split_semantics)
        check_graph_matches(path, models, net_size, need_decomposed=True)
        pose = pose_graph_path(path)
        if pose.is_file():
            check_graph_matches(pose, models, net_size, need_decomposed=False)
        elif models.pose_net is not None:
            log.warning("WARNING: %s has no pose graph beside it (%s); relative_pose unavailable", path, pose.name)
        sem = None
        if split_semantics:
            sem = semantic_graph_path(path)
            check_graph_matches(sem, models, net_size, need_decomposed=False)
        return cls(path, pose if pose.is_file() else None, device=device, semantic_path=sem,
                   semantic_threads=semantic_threads)

    def run_depth(self, x: np.ndarray):
        outs = self.session.run(self._outputs, {self._input: x})
        inv = outs[0][0, 0]
        if self.sem_session is not None:
            return inv, self.run_semantics(x)
        labels = outs[1][0] if self.has_semantics else None
        return inv, labels

    def run_depth_only(self, x: np.ndarray) -> np.ndarray:
        """Inverse depth [h,w] alone (split export: the semantic graph is not run)."""
        if self.sem_session is None and self.has_semantics:
            raise RuntimeError(f"{self.depth_path}: depth and semantics are one graph; export with split_semantics")
        return self.session.run(["inv_depth"], {self._input: x})[0][0, 0]

    def run_semantics(self, x: np.ndarray) -> np.ndarray:
        """Class indices [h,w] from the separate semantic graph."""
        if self.sem_session is None:
            raise RuntimeError(f"{self.depth_path}: no separate semantic graph loaded")
        return self.sem_session.run(["labels"], {self._input: x})[0][0]

    def run_pose(self, tgt: np.ndarray, ctxs: list[np.ndarray]) -> np.ndarray:
        if self.pose_session is None:
            raise RuntimeError(f"{self.depth_path}: no pose graph loaded")
        feeds = {"tgt": tgt, **{f"ctx{i}": c for i, c in enumerate(ctxs)}}
        (vec,) = self.pose_session.run(["pose"], feeds)
        return np.asarray(vec, np.float64).reshape(-1, 6)
