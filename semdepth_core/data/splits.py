"""KITTI split files in both common formats, parsed into `SampleRef`s.

- Eigen (SfMLearner test list): ``2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png``
- Eigen-Zhou (monodepth2 train/val lists): ``2011_09_26/2011_09_26_drive_0022_sync 473 l``
  (side ``l`` = left colour camera 2, ``r`` = right colour camera 3).

Blank lines and lines starting with ``#`` are skipped. A malformed line raises
`KittiFormatError` naming the file and line number.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, NamedTuple

from semdepth_core.data.kitti import KittiDrive, KittiFormatError, find_drives, read_text_file

_NAME = r"[^/\s]+"
_DRIVE = r"[^/\s]*_drive_[^/\s]*_sync"
_EIGEN_RE = re.compile(rf"^({_NAME})/({_DRIVE})/image_0([0-3])/data/(\d+)\.(png|jpg)$")
_ZHOU_RE = re.compile(rf"^({_NAME})/({_DRIVE})\s+(\d+)\s+([lr])$")
_SIDE_TO_CAM = {"l": 2, "r": 3}
_CAM_TO_SIDE = {2: "l", 3: "r"}


class SampleRef(NamedTuple):
    """One target frame: `date` folder, `drive` folder, frame number, camera index (2 or 3)."""

    date: str
    drive: str
    frame: int
    cam: int = 2

    @property
    def name(self) -> str:
        """'date/drive/NNNNNNNNNN' (the dataset's `filename`)."""
        return f"{self.date}/{self.drive}/{self.frame:010d}"

    def drive_dir(self, root: str | Path) -> Path:
        return Path(root) / self.date / self.drive

    def image_path(self, root: str | Path) -> Path:
        return self.drive_dir(root) / f"image_0{self.cam}" / "data" / f"{self.frame:010d}.png"


def parse_split_line(line: str, lineno: int | None = None, source: str = "<split>") -> SampleRef | None:
    """Parse one split line (either format); None for blank/comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    where = f"{source}:{lineno}" if lineno is not None else source
    m = _EIGEN_RE.match(text)
    if m:
        date, drive, cam, frame, _ = m.groups()
        return SampleRef(date, drive, int(frame), int(cam))
    m = _ZHOU_RE.match(text)
    if m:
        date, drive, frame, side = m.groups()
        return SampleRef(date, drive, int(frame), _SIDE_TO_CAM[side])
    raise KittiFormatError(
        f"{where}: malformed split line {line.rstrip()!r}; expected "
        "'DATE/DRIVE_sync/image_0X/data/NNNNNNNNNN.png' or 'DATE/DRIVE_sync FRAME l|r'")


def read_split_file(path: str | Path) -> list[SampleRef]:
    """All `SampleRef`s of a split file (either format, even mixed), in file order."""
    path = Path(path)
    refs = []
    for lineno, line in enumerate(read_text_file(path, "split file").splitlines(), start=1):
        ref = parse_split_line(line, lineno, str(path))
        if ref is not None:
            refs.append(ref)
    return refs


def format_split_line(ref: SampleRef, fmt: str = "zhou") -> str:
    if fmt == "zhou":
        if ref.cam not in _CAM_TO_SIDE:
            raise ValueError(f"the zhou split format only holds cams 2/3, got cam {ref.cam} in {ref}")
        return f"{ref.date}/{ref.drive} {ref.frame} {_CAM_TO_SIDE[ref.cam]}"
    if fmt == "eigen":
        return f"{ref.date}/{ref.drive}/image_0{ref.cam}/data/{ref.frame:010d}.png"
    raise ValueError(f"split format must be 'zhou' or 'eigen', got {fmt!r}")


def write_split_file(path: str | Path, refs: Iterable[SampleRef], fmt: str = "zhou") -> None:
    """Write refs one per line in `fmt` ('zhou' or 'eigen'), atomically (temp file + os.replace)."""
    if fmt not in ("zhou", "eigen"):
        raise ValueError(f"split format must be 'zhou' or 'eigen', got {fmt!r}")
    path = Path(path)
    text = "".join(format_split_line(SampleRef(*r), fmt) + "\n" for r in refs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def refs_for_root(root: str | Path, offsets: tuple[int, ...] = (-1, 1), cam: int = 2) -> list[SampleRef]:
    """Every frame of camera `cam` whose context frames (frame + offsets) all exist, over all drives."""
    refs = []
    for drive_dir in find_drives(root):
        drive = KittiDrive(drive_dir, cams=(cam,))
        refs.extend(SampleRef(drive.date, drive.drive, f, cam) for f in drive.frames_with_context(tuple(offsets)))
    return refs
