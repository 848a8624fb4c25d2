"""Where the read-only shared data lives (env SEMDEPTH_SHARED_DATA, default ../shared/data)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    env = os.environ.get("SEMDEPTH_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def kitti_raw_dir() -> Path:
    return shared_data_dir() / "kitti_raw"
