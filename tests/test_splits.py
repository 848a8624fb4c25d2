"""Split files: Eigen (SfMLearner) and Eigen-Zhou formats, malformed lines, atomic writing."""
from __future__ import annotations

import pytest

from semdepth_core.data.kitti import KittiFormatError
from semdepth_core.data.splits import (
    SampleRef, parse_split_line, read_split_file, refs_for_root, write_split_file,
)


@pytest.fixture(scope="module")
def eigen_file(shared_data):
    return shared_data / "kitti_splits" / "test_files_eigen_sfmlearner.txt"


def test_eigen_lines_from_real_split(eigen_file, shared_data):
    first = eigen_file.read_text().splitlines()[0]
    assert parse_split_line(first) == SampleRef("2011_09_26", "2011_09_26_drive_0002_sync", 69, 2)
    refs = read_split_file(eigen_file)
    assert len(refs) == 697
    assert all(r.cam == 2 for r in refs)
    assert all(r.drive.startswith(r.date) for r in refs)
    scenes = {ln.strip() for ln in (shared_data / "kitti_splits" / "test_scenes_eigen_sfmlearner.txt")
              .read_text().splitlines() if ln.strip()}
    drives = {r.drive for r in refs}
    assert len(drives) == 28
    # the scenes file names drives as 2011_09_26_drive_0002 (without _sync)
    assert {d[: -len("_sync")] for d in drives} == scenes
    assert refs[0].image_path("/kitti").as_posix() == "/kitti/" + first


def test_zhou_lines():
    assert parse_split_line("2011_09_26/2011_09_26_drive_0022_sync 473 l") == \
        SampleRef("2011_09_26", "2011_09_26_drive_0022_sync", 473, 2)
    assert parse_split_line("  2011_10_03/2011_10_03_drive_0034_sync\t0 r \n") == \
        SampleRef("2011_10_03", "2011_10_03_drive_0034_sync", 0, 3)
    assert parse_split_line("") is None and parse_split_line("# comment") is None
    assert parse_split_line("2011_09_26/2011_09_26_drive_0002_sync/image_03/data/0000000005.jpg").cam == 3


@pytest.mark.parametrize("line", [
    "2011_09_26/2011_09_26_drive_0022_sync 473 x",          # bad side
    "2011_09_26/2011_09_26_drive_0022_sync 473",            # side missing
    "2011_09_26/2011_09_26_drive_0022_sync abc l",          # frame not a number
    "2011_09_26/2011_09_26_drive_0022_sync -3 l",           # negative frame
    "2011_09_26/2011_09_26_drive_0022_sync 473 l extra",    # extra field
    "2011_09_26/some_folder 473 l",                         # not a drive folder
    "2011_09_26_drive_0022_sync 473 l",                     # date folder missing
    "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.jpeg",
    "2011_09_26/2011_09_26_drive_0002_sync/image_05/data/0000000069.png",
    "2011_09_26/2011_09_26_drive_0002_sync/image_02/0000000069.png",
    "garbage",
])
def test_malformed_lines(line, tmp_path):
    with pytest.raises(KittiFormatError, match="malformed split line"):
        parse_split_line(line)
    p = tmp_path / "split.txt"
    p.write_text("# header\n2011_09_26/2011_09_26_drive_0022_sync 1 l\n\n" + line + "\n")
    with pytest.raises(KittiFormatError, match=r"split.txt:4: malformed split line"):
        read_split_file(p)


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: missing split file"):
        read_split_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("fmt", ["zhou", "eigen"])
def test_write_read_roundtrip(fmt, tmp_path):
    refs = [SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 5, 2),
            SampleRef("2011_10_03", "2011_10_03_drive_0042_sync", 1170, 3)]
    p = tmp_path / "out.txt"
    p.write_text("old content\n")
    write_split_file(p, refs, fmt=fmt)
    assert read_split_file(p) == refs
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]  # no temp file left behind
    text = p.read_text()
    assert ("1170 r" in text) if fmt == "zhou" else ("image_03/data/0000001170.png" in text)


def test_write_errors_keep_old_file(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("2011_09_26/2011_09_26_drive_0001_sync 1 l\n")
    with pytest.raises(ValueError, match="cams 2/3"):
        write_split_file(p, [SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 1, 0)], fmt="zhou")
    with pytest.raises(ValueError, match="'zhou' or 'eigen'"):
        write_split_file(p, [], fmt="csv")
    assert read_split_file(p) == [SampleRef("2011_09_26", "2011_09_26_drive_0001_sync", 1, 2)]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]


def test_refs_for_root(kitti_root):
    # drive 0001 has frames 0-7, drive 0023 frames 0-6; refs come drive by drive, in frame order
    d1, d23 = "2011_09_26_drive_0001_sync", "2011_09_26_drive_0023_sync"
    refs = refs_for_root(kitti_root, (-1, 1))
    assert [(r.drive, r.frame) for r in refs] == [(d1, f) for f in range(1, 7)] + [(d23, f) for f in range(1, 6)]
    assert all(r == SampleRef("2011_09_26", r.drive, r.frame, 2) for r in refs)
    assert [r.frame for r in refs_for_root(kitti_root, (-1,))] == [*range(1, 8), *range(1, 7)]
    assert [r.frame for r in refs_for_root(kitti_root, (-3, 3))] == [3, 4, 3]
    assert [r.cam for r in refs_for_root(kitti_root, (-1, 1), cam=3)] == [3] * 11
    assert refs[0].name == "2011_09_26/2011_09_26_drive_0001_sync/0000000001"
