"""Eigen-Zhou train/val lists from the KITTI raw drives present, by Zhou et al.'s (CVPR 2017) rule.

    python -m training.make_split --root KITTI_RAW --out DIR [--min-speed 1.0] [--val-fraction 0.1]

Every image of cameras 2 and 3 (both sides, as in the published list) of every drive under --root is a
candidate target. Each candidate is dropped for the first of these reasons that applies, in this order:

  test_drive   its drive is one of the 28 Eigen test drives (semdepth_core/data/eigen_test_drives.txt)
  no_context   frame - 1 or frame + 1 has no image on that camera (a drive's first and last frames)
  no_oxts      no readable OXTS packet for the frame, so its speed is unknown
  static       OXTS speed |(vf, vl, vu)| below --min-speed m/s (default 1.0: 0.1 m between frames at 10 Hz)

Zhou et al. removed the frames of a precomputed list (SfMLearner's static_frames.txt), which is not
available here; the OXTS speed threshold stands in for it. A kept frame goes to the validation list when
sha256("DATE/DRIVE FRAME SIDE") read as a fraction of 2^64 is below --val-fraction (default 0.1, Zhou et
al.'s 10 %): deterministic, and a frame's side never changes when drives are added or removed.

Writes DIR/train.txt and DIR/val.txt (Eigen-Zhou lines `DATE/DRIVE FRAME l|r`, sorted, read by
semdepth_core.data.splits and `data.train_split` / `data.val_split`) and DIR/summary.json (the counts and
the rule's parameters), each atomically. Prints drives found, frames kept and frames dropped by reason.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from semdepth_core.data.kitti import (
    KittiDrive,
    KittiFormatError,
    find_drives,
    is_eigen_test_drive,
    read_oxts,
)
from semdepth_core.data.splits import SampleRef, format_split_line, write_split_file

DEFAULT_MIN_SPEED = 1.0  # m/s
DEFAULT_VAL_FRACTION = 0.1
CAMS = (2, 3)
REASONS = ("test_drive", "no_context", "no_oxts", "static")
PUBLISHED = {"train": 39810, "val": 4424}  # monodepth2's eigen_zhou lists (the paper's §5.1 counts)


@dataclass
class SplitResult:
    """The kept frames (train / val) and every dropped candidate counted by reason."""

    train: list[SampleRef] = field(default_factory=list)
    val: list[SampleRef] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    drives: int = 0
    test_drives: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one example, for the report

    @property
    def candidates(self) -> int:
        """Every image of cameras 2 and 3 that was considered as a target."""
        return len(self.train) + len(self.val) + sum(self.dropped.values())

    def summary(self, min_speed: float, val_fraction: float) -> dict:
        """The counts and the rule's parameters as a JSON-ready dict."""
        return {"drives": self.drives, "eigen_test_drives_found": self.test_drives,
                "candidates": self.candidates, "train": len(self.train), "val": len(self.val),
                "dropped": dict(self.dropped), "min_speed_mps": min_speed, "val_fraction": val_fraction,
                "cams": list(CAMS), "context": [-1, 1], "published_eigen_zhou": PUBLISHED}


def is_val(ref: SampleRef, fraction: float) -> bool:
    """True when `ref` belongs to the validation list: sha256 of its split line, as a fraction of 2^64, < fraction."""
    digest = hashlib.sha256(format_split_line(ref).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def _drop(result: SplitResult, reason: str, example: str, n: int = 1) -> None:
    result.dropped[reason] += n
    result.examples.setdefault(reason, example)


def make_split(root: str | Path, min_speed: float = DEFAULT_MIN_SPEED,
               val_fraction: float = DEFAULT_VAL_FRACTION) -> SplitResult:
    """Apply the rule of this module to every drive under `root`; nothing is written."""
    if not (min_speed >= 0):
        raise ValueError(f"min_speed must be >= 0 m/s, got {min_speed!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    result = SplitResult()
    drive_dirs = find_drives(root)
    if not drive_dirs:
        raise KittiFormatError(f"{root}: no KITTI raw drives (DATE/DATE_drive_NNNN_sync folders) under this root")
    result.drives = len(drive_dirs)
    for drive_dir in drive_dirs:
        test = is_eigen_test_drive(drive_dir.name)
        if test:
            result.test_drives.append(drive_dir.name)
        speeds: dict[int, float | None] = {}
        for cam in CAMS:
            drive = KittiDrive(drive_dir, cams=(cam,))
            if test:
                if drive.frames:
                    _drop(result, "test_drive", f"{drive.name} ({len(drive.frames)} image_0{cam} frames)",
                          len(drive.frames))
                continue
            with_context = set(drive.frames_with_context((-1, 1)))
            for frame in drive.frames:
                ref = SampleRef(drive.date, drive.drive, frame, cam)
                if frame not in with_context:
                    _drop(result, "no_context", format_split_line(ref))
                    continue
                if frame not in speeds:
                    oxts = drive_dir / "oxts" / "data" / f"{frame:010d}.txt"
                    try:
                        speeds[frame] = read_oxts(oxts).speed
                    except (OSError, KittiFormatError):  # missing or malformed: speed unknown
                        speeds[frame] = None
                speed = speeds[frame]
                if speed is None:
                    _drop(result, "no_oxts", f"{format_split_line(ref)} ({drive_dir / 'oxts' / 'data'})")
                elif speed < min_speed:
                    _drop(result, "static", f"{format_split_line(ref)} ({speed:.2f} m/s)")
                else:
                    (result.val if is_val(ref, val_fraction) else result.train).append(ref)
    order = lambda r: (r.date, r.drive, r.frame, r.cam)  # noqa: E731
    result.train.sort(key=order)
    result.val.sort(key=order)
    return result


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_split(result: SplitResult, out: str | Path, min_speed: float, val_fraction: float) -> dict[str, Path]:
    """Write train.txt, val.txt and summary.json into `out` (created if needed), each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.txt", "val": out / "val.txt", "summary": out / "summary.json"}
    write_split_file(paths["train"], result.train)
    write_split_file(paths["val"], result.val)
    _write_json(paths["summary"], result.summary(min_speed, val_fraction))
    return paths


def report(result: SplitResult, min_speed: float) -> str:
    """The printed counts: drives found, frames kept and dropped by reason."""
    n_test = len(result.test_drives)
    lines = [f"drives found: {result.drives} ({n_test} Eigen test drive{'s' if n_test != 1 else ''}"
             + (f": {', '.join(result.test_drives)}" if n_test else "") + ")",
             f"candidate frames (cameras 2 and 3): {result.candidates}",
             f"kept: {len(result.train) + len(result.val)} (train {len(result.train)}, val {len(result.val)}; "
             f"published Eigen-Zhou on the full KITTI raw: train {PUBLISHED['train']}, val {PUBLISHED['val']})",
             "dropped:"]
    labels = {"test_drive": "in an Eigen test drive", "no_context": "frame - 1 or + 1 missing",
              "no_oxts": "no readable OXTS", "static": f"static (OXTS speed < {min_speed:g} m/s)"}
    for reason in REASONS:
        n = result.dropped[reason]
        lines.append(f"  {reason:<11} {n:>7}  {labels[reason]}"
                     + (f"; e.g. {result.examples[reason]}" if n else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.make_split", description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="KITTI raw root (holds the YYYY_MM_DD folders)")
    p.add_argument("--out", required=True, help="output folder for train.txt, val.txt and summary.json")
    p.add_argument("--min-speed", type=float, default=DEFAULT_MIN_SPEED,
                   help=f"OXTS speed (m/s) below which a frame is static and dropped (default {DEFAULT_MIN_SPEED})")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help=f"fraction of the kept frames in val.txt, by a hash of each line (default "
                        f"{DEFAULT_VAL_FRACTION})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = make_split(args.root, args.min_speed, args.val_fraction)
    except (OSError, ValueError) as exc:  # KittiFormatError / KittiMissingFileError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(result, args.min_speed))
    if not result.train:
        print(f"error: no training frame kept under {args.root}; nothing written", file=sys.stderr)
        return 1
    try:
        paths = write_split(result, args.out, args.min_speed, args.val_fraction)
    except OSError as exc:
        print(f"error: cannot write the split into {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {paths['train']} ({len(result.train)} lines), {paths['val']} ({len(result.val)} lines), "
          f"{paths['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
