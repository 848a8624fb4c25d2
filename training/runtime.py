"""Where a training process runs: repository-relative paths, the device, RNG seeding and state, DDP set-up.

Shared by `training.train`, `training.data` and the other training entry points; nothing here builds
models or datasets.
"""
from __future__ import annotations

import copy
import os
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from semdepth_core.config import Config
from semdepth_core.paths import REPO_ROOT

# ============================================================================ paths

def resolve_path(path: str) -> Path:
    """Config paths are relative to the repository root unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def resolved_model_config(cfg: Config):
    """cfg.model with weight paths made absolute (config paths are relative to the repository)."""
    m = copy.deepcopy(cfg.model)
    for obj, attr in ((m, "pretrained"), (m, "pose_pretrained"), (m.semantic, "weights"),
                      (m.semantic, "pretrained_backbone")):
        if getattr(obj, attr):
            setattr(obj, attr, str(resolve_path(getattr(obj, attr))))
    return m


def check_writable(run_dir: Path) -> None:
    """Fail early, with the path in the message, if outputs cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"error: output directory {run_dir} is not writable ({exc.strerror or exc})") from exc


# ============================================================================ device and processes

def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`, `cuda` or `cpu` -> the torch device of this process (exits if CUDA is asked for but absent)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_distributed(device_name: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return rank, world, local_rank


# ============================================================================ random number generators

def rng_state() -> dict:
    """Every RNG state as checkpoint-safe (weights_only) values: tensors, ints and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore every RNG stream from a `rng_state()` dict (CUDA's only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng():
    """Run a block without disturbing the global torch/numpy/python RNG streams."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def seed_everything(seed: int) -> None:
    """Seed the python, numpy and torch global RNGs from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
