"""Two-stage training against the infinite-depth bias (paper §4.3), resumable.

    python -m training.two_stage --config CFG.yaml [--set key=value ...]

Stage 1 trains on all data; the filter (`training.filter_dataset`) drops training images whose
stage-1 depth puts more than 10 pixels below the ground plane; stage 2 retrains from scratch on
the kept split. Progress is recorded in OUT_DIR/NAME_two_stage.json (written atomically): run the
same command again after an interruption and it continues where it stopped (each training stage
resumes from its own last checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from semdepth_core.checkpoint import CheckpointError
from semdepth_core.config import Config, ConfigError, load_config
from training import train
from training.filter_dataset import filter_dataset, require_kept
from training.runtime import resolve_path


def _state_path(cfg: Config) -> Path:
    return resolve_path(cfg.train.out_dir) / f"{cfg.train.name}_two_stage.json"


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _stage_checkpoint(run_dir: Path) -> Path:
    best = run_dir / "best.ckpt"
    return best if best.is_file() else run_dir / "last.ckpt"


def run_two_stage(config_path: str, overrides: list[str], device: str | None = None) -> dict:
    """Run (or resume) stage 1, the filter and stage 2; return the state dict with all paths."""
    cfg = load_config(config_path, overrides)
    name = cfg.train.name
    out_root = resolve_path(cfg.train.out_dir)
    state_path = _state_path(cfg)
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"done": []}
    dev = ["--device", device] if device else []

    stage1_dir = out_root / f"{name}_stage1"
    if "stage1" not in state["done"]:
        rc = train.main(["--config", config_path, *sum((["--set", o] for o in overrides), []),
                         "--set", f"train.name={name}_stage1", "--resume", "auto", *dev])
        if rc != 0:
            raise RuntimeError(f"stage 1 training failed (exit {rc})")
        state["done"].append("stage1")
        state["stage1_checkpoint"] = str(_stage_checkpoint(stage1_dir))
        _save_state(state_path, state)

    filter_dir = out_root / f"{name}_filter"
    if "filter" not in state["done"]:
        report = filter_dataset(cfg, state["stage1_checkpoint"], filter_dir, device=device or "cpu")
        state["done"].append("filter")
        state["kept_split"] = str(filter_dir / "kept.txt")
        state["filter"] = {k: report[k] for k in ("images", "dropped", "fraction_dropped")}
        _save_state(state_path, state)

    stage2_dir = out_root / f"{name}_stage2"
    if "stage2" not in state["done"]:
        require_kept(json.loads((filter_dir / "report.json").read_text()))
        rc = train.main(["--config", config_path, *sum((["--set", o] for o in overrides), []),
                         "--set", f"train.name={name}_stage2", "--set", f"data.train_split={state['kept_split']}",
                         "--resume", "auto", *dev])
        if rc != 0:
            raise RuntimeError(f"stage 2 training failed (exit {rc})")
        state["done"].append("stage2")
        state["stage2_checkpoint"] = str(_stage_checkpoint(stage2_dir))
        _save_state(state_path, state)
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.two_stage", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    args = p.parse_args(argv)
    try:
        state = run_two_stage(args.config, args.overrides, args.device)
    except (ConfigError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f = state["filter"]
    print(f"two-stage done: stage 1 {state['stage1_checkpoint']}; filter dropped {f['dropped']}/{f['images']} "
          f"images; stage 2 {state['stage2_checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
