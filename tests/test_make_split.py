"""training.make_split (Eigen-Zhou lists from the data), the Eigen-test-drive training guard, and the paper configs.

The miniature KITTI tree lives in tmp: the real drive 0001 and the calibration are symlinked from the shared
data (never copied into the repository); synthetic drives are rendered under an Eigen test drive name and under
training drive names, one of them edited to hold a static frame, a missing OXTS packet and a missing right image.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from semdepth_core.config import ConfigError, load_config
from semdepth_core.data.kitti import (
    TestDriveError,
    check_training_drives,
    eigen_test_drives,
    find_drives,
    is_eigen_test_drive,
    read_oxts,
)
from semdepth_core.data.splits import SampleRef, read_split_file
from training import make_split as ms

REPO = Path(__file__).resolve().parent.parent
KITTI_CONFIGS = sorted((REPO / "training" / "configs").glob("kitti_*.yaml"))
REAL = "2011_09_26_drive_0001_sync"  # a training drive (8 frames, 0-7)
TEST_SYN = "2011_09_28_drive_0002_sync"  # an Eigen test drive name, rendered synthetically
EDITED = "2011_09_29_drive_0026_sync"  # a training drive name: frame 2 static, no OXTS for 3, no image_03 for 5
PARKED = "2011_09_28_drive_0001_sync"  # a training drive name, rendered at 0 m/s: every frame static


def _oxts_with_speed(path: Path, vf: float) -> None:
    """Rewrite one OXTS packet with forward velocity `vf` and no left/up velocity (fields 8-10)."""
    values = path.read_text().split()
    values[8], values[9], values[10] = f"{vf}", "0", "0"
    path.write_text(" ".join(values) + "\n")


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory, kitti_root) -> Path:
    from semdepth_core.data.synthetic import generate_drive

    root = tmp_path_factory.mktemp("mini_kitti")
    date = root / "2011_09_26"
    date.mkdir()
    for item in sorted((kitti_root / "2011_09_26").glob("calib_*.txt")) + [kitti_root / "2011_09_26" / REAL]:
        (date / item.name).symlink_to(item)
    generate_drive(root, frames=4, seed=11, width=64, height=32, drive_id=2, date="2011_09_28")
    generate_drive(root, frames=4, seed=12, width=64, height=32, drive_id=1, date="2011_09_28", speed=0.0)
    edited = generate_drive(root, frames=7, seed=13, width=64, height=32, drive_id=26, date="2011_09_29")
    _oxts_with_speed(edited / "oxts" / "data" / "0000000002.txt", 0.3)
    (edited / "oxts" / "data" / "0000000003.txt").unlink()
    (edited / "image_03" / "data" / "0000000005.png").unlink()
    return root


# ----------------------------------------------------------------------------- the shipped test drive list

def test_the_shipped_test_drives_are_the_eigen_test_lists_drives(shared_data):
    listed = (shared_data / "kitti_splits" / "test_files_eigen_sfmlearner.txt").read_text().split()
    assert len(listed) == 697
    assert eigen_test_drives() == {line.split("/")[1] for line in listed}
    scenes = (shared_data / "kitti_splits" / "test_scenes_eigen_sfmlearner.txt").read_text().split()
    assert eigen_test_drives() == {f"{s}_sync" for s in scenes}
    assert is_eigen_test_drive("2011_09_26_drive_0023") and is_eigen_test_drive("2011_09_26/2011_09_26_drive_0023_sync")
    assert not is_eigen_test_drive(REAL)  # the local training drive of real.yaml


def test_the_test_drive_list_loads_from_the_package():
    from semdepth_core.data.kitti import eigen_test_drives, is_eigen_test_drive

    drives = eigen_test_drives()  # read through importlib.resources, as from an installed package
    assert len(drives) == 28 and "2011_09_26_drive_0023_sync" in drives
    assert is_eigen_test_drive("2011_09_26/2011_09_26_drive_0023") and not is_eigen_test_drive("2011_09_26_drive_0001_sync")
    assert '"data/*.txt"' in (REPO / "setup.py").read_text()  # installed beside semdepth_core/data/kitti.py


# ----------------------------------------------------------------------------- the split generator

def test_split_keeps_and_drops_the_right_frames(mini_root):
    assert read_oxts(mini_root / "2011_09_28" / PARKED / "oxts" / "data" / "0000000001.txt").speed < 0.01
    result = ms.make_split(mini_root)
    kept = {(r.drive, r.frame, r.cam) for r in result.train + result.val}
    assert kept == ({(REAL, f, c) for f in range(1, 7) for c in (2, 3)}
                    | {(EDITED, 1, 2), (EDITED, 4, 2), (EDITED, 5, 2), (EDITED, 1, 3)})
    assert result.drives == 4 and result.test_drives == [TEST_SYN]
    assert result.dropped == {
        "test_drive": 8,  # 4 frames x 2 cameras, whatever their motion and context
        # the first and last image of each camera of the three training drives (12: the edited drive's last
        # image_03 is 6), and the edited drive's image_03 4, whose neighbour image_03 5 is missing
        "no_context": 13,
        "no_oxts": 2,  # the edited drive's frame 3, both cameras
        "static": 2 + 4,  # the edited drive's frame 2 (0.3 m/s), both cameras; the parked drive's frames 1-2
    }
    assert result.candidates == 16 + 8 + 13 + 2 + 6 == 45
    assert "(0.00 m/s)" in result.examples["static"] and TEST_SYN in result.examples["test_drive"]
    # a lower threshold keeps the slow frame, a higher one drops the real drive's (about 13 m/s) too
    slow = ms.make_split(mini_root, min_speed=0.2)
    assert (EDITED, 2, 2) in {(r.drive, r.frame, r.cam) for r in slow.train + slow.val}
    fast = ms.make_split(mini_root, min_speed=20.0)
    assert not any(r.drive == REAL for r in fast.train + fast.val)


def test_validation_subset_is_deterministic_and_stable(mini_root, tmp_path):
    a, b = ms.make_split(mini_root), ms.make_split(mini_root)
    assert (a.train, a.val) == (b.train, b.val)
    assert not set(a.train) & set(a.val)
    assert ms.make_split(mini_root, val_fraction=0.0).val == []
    assert all(ms.is_val(r, 0.1) for r in a.val) and not any(ms.is_val(r, 0.1) for r in a.train)
    # the hash rule: a frame's side does not depend on which other drives are present
    alone = tmp_path / "alone"
    (alone / "2011_09_26").mkdir(parents=True)
    for item in (mini_root / "2011_09_26").iterdir():
        (alone / "2011_09_26" / item.name).symlink_to(item.resolve())
    only_real = ms.make_split(alone)
    assert only_real.val == [r for r in a.val if r.drive == REAL]
    # about 10 % of a large list (the fraction of 2^64 is uniform): 4424 / 44234 in the published lists
    refs = [SampleRef("2011_10_03", "2011_10_03_drive_0034_sync", f, c) for f in range(5000) for c in (2, 3)]
    assert 0.09 < sum(ms.is_val(r, 0.1) for r in refs) / len(refs) < 0.11


def test_cli_writes_the_lists_atomically_in_the_loaders_format(mini_root, tmp_path, capsys):
    out = tmp_path / "splits" / "eigen_zhou"
    assert ms.main(["--root", str(mini_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drives found: 4 (1 Eigen test drive: 2011_09_28_drive_0002_sync)" in printed
    assert "kept: 16" in printed and "static" in printed and "no_context       13" in printed
    result = ms.make_split(mini_root)
    assert read_split_file(out / "train.txt") == result.train and read_split_file(out / "val.txt") == result.val
    assert (out / "train.txt").read_text().splitlines()[0] == f"2011_09_26/{REAL} 1 l"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"] + summary["val"] == 16 and summary["dropped"]["static"] == 6
    assert summary["min_speed_mps"] == ms.DEFAULT_MIN_SPEED
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "train.txt", "val.txt"]  # no temp files


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert ms.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "KITTI raw root does not exist" in capsys.readouterr().err
    assert ms.main(["--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no KITTI raw drives" in capsys.readouterr().err
    with pytest.raises(ValueError, match="val_fraction"):
        ms.make_split(tmp_path, val_fraction=1.5)
    assert not (tmp_path / "o").exists()


def test_split_of_the_local_kitti_raw(kitti_root):
    """The local data: drive 0001 (frames 0-7, about 13 m/s) and drive 0023 (Eigen test, frames 0-6)."""
    assert [d.name for d in find_drives(kitti_root)] == [REAL, "2011_09_26_drive_0023_sync"]
    result = ms.make_split(kitti_root)
    assert len(result.train) + len(result.val) == 12
    assert result.dropped == {"test_drive": 14, "no_context": 4, "no_oxts": 0, "static": 0}


# ----------------------------------------------------------------------------- the guard

def test_guard_message_names_the_drives_and_the_flag():
    assert check_training_drives([REAL, "2030_01_01_drive_0007_sync"]) == []
    with pytest.raises(TestDriveError) as err:
        check_training_drives([REAL, "2011_09_26_drive_0023_sync", "2011_10_03_drive_0047_sync"])
    msg = str(err.value)
    assert "2011_09_26_drive_0023_sync, 2011_10_03_drive_0047_sync" in msg and REAL not in msg
    assert "data.allow_test_drives: true" in msg and "training.make_split" in msg
    assert check_training_drives(["2011_09_26_drive_0023_sync"], allow=True) == ["2011_09_26_drive_0023_sync"]


def _kitti_cfg(root: Path, *extra: str):
    return load_config(None, ["data.kind=kitti", f"data.root={root}", "data.height=64", "data.width=192", *extra])


def test_training_refuses_a_test_drive_unless_the_flag_allows_it(mini_root, kitti_root, capsys):
    from training.data import build_datasets

    with pytest.raises(ConfigError, match=rf"data.allow_test_drives: .*1 Eigen test drive\(s\): {TEST_SYN}\. "):
        build_datasets(_kitti_cfg(mini_root), rank=0, world=1)
    train, _ = build_datasets(_kitti_cfg(mini_root, "data.allow_test_drives=true"), rank=0, world=1)
    assert TEST_SYN in {s.seq.drive for s in train.samples}
    assert "not held-out scores" in capsys.readouterr().out
    # the local real data: drive 0023 is an Eigen test drive (real.yaml leaves it out; a plain KITTI root does not)
    with pytest.raises(ConfigError, match="2011_09_26_drive_0023_sync"):
        build_datasets(_kitti_cfg(kitti_root), rank=0, world=1)
    source = f"data.sources=[{{kind: kitti, root: '{kitti_root}', cams: [2]}}]"
    with pytest.raises(ConfigError, match="2011_09_26_drive_0023_sync"):
        build_datasets(_kitti_cfg(kitti_root, "data.kind=mixed", source), rank=0, world=1)
    excluded = source.replace("cams: [2]", "cams: [2], exclude_drives: [2011_09_26_drive_0023_sync]")
    train, _ = build_datasets(_kitti_cfg(kitti_root, "data.kind=mixed", excluded), rank=0, world=1)
    assert len(train) == 6
    train, _ = build_datasets(_kitti_cfg(kitti_root, "data.allow_test_drives=true"), rank=0, world=1)
    assert len(train) == 11  # drive 0001 frames 1-6 and drive 0023 frames 1-5, camera 2


def test_the_shipped_real_configs_train_without_the_flag():
    for name in ("real", "real_sg"):
        cfg = load_config(REPO / "training" / "configs" / f"{name}.yaml")
        assert not cfg.data.allow_test_drives
        kitti = [s for s in cfg.data.sources if s.kind == "kitti"]
        assert kitti and all("2011_09_26_drive_0023_sync" in s.exclude_drives for s in kitti)


# ----------------------------------------------------------------------------- the paper configs

@pytest.mark.parametrize("path", KITTI_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_use_the_generated_split_and_the_papers_schedule(path):
    cfg = load_config(path)
    d, o = cfg.data, cfg.optim
    assert (d.train_split, d.val_split) == ("splits/eigen_zhou/train.txt", "splits/eigen_zhou/val.txt")
    assert (d.width, d.height, d.batch_size, tuple(d.context)) == (640, 192, 4, (-1, 1))
    assert (o.depth_lr, o.pose_lr, o.step_epochs, o.gamma, cfg.train.epochs) == (2e-4, 5e-4, 12, 0.5, 30)
    assert not d.allow_test_drives
    text, f = "", path  # the file and its bases say where the values come from
    while f is not None:
        text += f.read_text()
        base = yaml.safe_load(f.read_text()).get("base")
        f = path.parent / base if base else None
    assert "monodepth2" in text and "training.make_split" in text


def test_a_missing_split_says_to_run_make_split(tmp_path, kitti_root):
    from training.data import build_datasets

    cfg = load_config(REPO / "training" / "configs" / "kitti_resnet18.yaml",
                      [f"data.root={kitti_root}", f"data.train_split={tmp_path}/eigen_zhou/train.txt"])
    expected = rf"data.train_split: split file .* does not exist; .*python -m training\.make_split --root {kitti_root} "
    with pytest.raises(ConfigError, match=expected + rf"--out {tmp_path}/eigen_zhou"):
        build_datasets(cfg, rank=0, world=1)


def test_a_paper_config_trains_on_the_generated_split(tmp_path, kitti_root):
    """make_split on the local data, then the paper config's datasets from its lists (no test drive, no flag)."""
    from training.data import build_datasets

    out = tmp_path / "eigen_zhou"
    assert ms.main(["--root", str(kitti_root), "--out", str(out)]) == 0
    cfg = load_config(REPO / "training" / "configs" / "kitti_packnet_sg.yaml",
                      [f"data.root={kitti_root}", f"data.train_split={out / 'train.txt'}",
                       f"data.val_split={out / 'val.txt'}"])
    train, val = build_datasets(cfg, rank=0, world=1)
    assert len(train) + len(val) == 12
    assert {s.seq.drive for s in train.samples + val.samples} == {REAL}
    item = val[0]
    assert item["depth_gt"].shape[-2:] == (375, 1242)
