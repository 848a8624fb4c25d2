"""Checkpoint I/O: atomic writes, safe loads (`weights_only=True`, never a blind unpickle).

A checkpoint is a dict: {"format": FORMAT, "config": <Config as dict>, "depth_model": state_dict,
"pose_net": state_dict | None, ...training state}. The embedded config rebuilds the model.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "semdepth-ckpt-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe or of another architecture."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, writer) -> None:
    """Call `writer(fileobj)` on a temp file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp files are 0600; give the usual permissions
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically save `payload` (must hold "config" and "depth_model")."""
    if "config" not in payload or "depth_model" not in payload:
        raise CheckpointError("checkpoint payload needs 'config' and 'depth_model'")
    data = dict(payload)
    data["format"] = FORMAT
    atomic_write_bytes(path, lambda f: torch.save(data, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; raise CheckpointError with a clear reason on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (zip), EOFError ...
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: refused or unreadable checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a semdepth checkpoint (format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    return data


def load_state_dict_checked(module: torch.nn.Module, state: dict, what: str) -> None:
    """load_state_dict(strict=True) with a clear architecture-mismatch message instead of a traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{what}: checkpoint does not match the configured architecture: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_matching(module: torch.nn.Module, state: dict) -> dict[str, list[str]]:
    """Copy the tensors of `state` whose name and shape match `module`'s (fine-tuning from another run);
    -> {"copied", "new" (kept as initialised), "ignored" (in the checkpoint only, or of another shape)}."""
    own = module.state_dict()
    copied = [k for k in own if k in state and tuple(own[k].shape) == tuple(state[k].shape)]
    module.load_state_dict({k: state[k] for k in copied}, strict=False)
    return {"copied": copied, "new": [k for k in own if k not in copied],
            "ignored": [k for k in state if k not in own or k not in copied]}


def slim_checkpoint(ckpt: dict, half: bool = True, provenance: dict | None = None) -> dict:
    """A deployable copy: config + network weights only (fp16 floats when `half`), no optimiser/RNG state.

    Loading casts the weights back to the model's float32 parameters (`load_state_dict` copies with a
    dtype conversion), so a slim checkpoint loads through the same path as a training checkpoint.
    """
    def conv(state):
        if state is None:
            return None
        return {k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in state.items()}

    out = {"config": ckpt["config"], "depth_model": conv(ckpt["depth_model"]), "pose_net": conv(ckpt.get("pose_net")),
           "format": FORMAT}
    for key in ("epoch", "global_step", "best_abs_rel", "elapsed_s"):
        if key in ckpt:
            out[key] = ckpt[key]
    if provenance:
        out["provenance"] = provenance
    return out
