"""Plumbing of the research probes: their result folder, plus the benchmarks' table printer and machine info."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common as _bench  # noqa: E402
from benchmarks.common import print_table  # noqa: E402,F401  (re-exported for the probes)

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, payload: dict, quick: bool = False) -> Path:
    """Write experiments/results/NAME.json (NAME_quick.json for --quick runs) atomically, with machine info."""
    return _bench.write_result(name, payload, quick, results=RESULTS)
