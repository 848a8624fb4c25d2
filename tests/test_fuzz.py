"""Untrusted inputs fuzzed with hypothesis: each parser either succeeds or raises its documented error.

Documented errors: KITTI files -> KittiFormatError (a ValueError); Image messages ->
ImageConversionError (a ValueError). Point clouds from NaN/inf/negative depth never crash and
never contain a non-finite point in the unorganised layout.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semdepth_core.data.kitti import (
    KittiCalib,
    KittiFormatError,
    parse_oxts_line,
    read_calib_file,
    read_oxts,
    read_timestamps,
)
from semdepth_core.data.splits import SampleRef, format_split_line, parse_split_line, read_split_file

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KITTI_DATE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kitti_raw" / "2011_09_26"

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
numberish = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                               st.sampled_from(["", "-", "1e", "nan", "0x10", "1,5", "--3", "7"])),
                     min_size=0, max_size=40).map(" ".join)


def _write(tmp_path: Path, name: str, content) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


@FUZZ
@given(content=st.one_of(texts, st.binary(max_size=300)))
def test_calib_file_parser(tmp_path, content):
    p = _write(tmp_path, "calib.txt", content)
    try:
        out = read_calib_file(p)
    except KittiFormatError:
        return
    assert all(isinstance(v, (str, np.ndarray)) for v in out.values())


def _mutations():
    """A real calibration file with one line replaced, deleted, duplicated or truncated."""
    return st.tuples(st.sampled_from(["calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"]),
                     st.integers(0, 40), st.sampled_from(["delete", "truncate", "garbage", "duplicate"]), numberish)


@FUZZ
@given(mut=_mutations())
def test_calibration_folder_mutations(tmp_path, mut):
    name, line_no, kind, garbage = mut
    date_dir = tmp_path / "2011_09_26"
    if date_dir.exists():
        shutil.rmtree(date_dir)
    date_dir.mkdir()
    for f in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        shutil.copy(KITTI_DATE / f, date_dir / f)
    lines = (date_dir / name).read_text().splitlines()
    i = line_no % len(lines)
    if kind == "delete":
        del lines[i]
    elif kind == "truncate":
        lines[i] = lines[i][: len(lines[i]) // 2]
    elif kind == "garbage":
        lines[i] = lines[i].split(":")[0] + ": " + garbage
    else:
        lines.insert(i, lines[i])
    (date_dir / name).write_text("\n".join(lines) + "\n")
    try:
        calib = KittiCalib.from_date_dir(date_dir)
    except KittiFormatError:
        return
    K = calib.K(2)
    assert K.shape == (3, 3) and np.isfinite(K).all()


@FUZZ
@given(line=st.one_of(texts, numberish))
def test_oxts_line_parser(line):
    try:
        pkt = parse_oxts_line(line)
    except KittiFormatError:
        return
    assert np.isfinite(pkt.speed)


@FUZZ
@given(content=st.one_of(texts, st.binary(max_size=200)))
def test_oxts_file_and_timestamps_files(tmp_path, content):
    for reader, name in ((read_oxts, "0000000000.txt"), (read_timestamps, "timestamps.txt")):
        p = _write(tmp_path, name, content)
        try:
            reader(p)
        except KittiFormatError:
            pass


@FUZZ
@given(line=texts)
def test_split_line_parser(line):
    try:
        ref = parse_split_line(line)
    except KittiFormatError:
        return
    if ref is not None:
        assert parse_split_line(format_split_line(ref)) == ref


@FUZZ
@given(date=st.from_regex(r"\A20\d\d_\d\d_\d\d\Z"), drive=st.integers(0, 9999), frame=st.integers(0, 10 ** 9),
       cam=st.sampled_from([2, 3]), fmt=st.sampled_from(["zhou", "eigen"]))
def test_split_round_trip(date, drive, frame, cam, fmt):
    ref = SampleRef(date, f"{date}_drive_{drive:04d}_sync", frame, cam)
    assert parse_split_line(format_split_line(ref, fmt)) == ref


@FUZZ
@given(content=st.binary(max_size=200))
def test_split_file_binary(tmp_path, content):
    p = _write(tmp_path, "split.txt", content)
    try:
        read_split_file(p)
    except KittiFormatError:
        pass


# ------------------------------------------------------------------ ROS message conversions
rclpy_msgs = pytest.importorskip("sensor_msgs.msg")
from semdepth_ros.conversions import (  # noqa: E402
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    depth_to_pointcloud2,
    image_msg_to_rgb,
    pointcloud2_to_array,
)

_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "mono16": 2, "16UC1": 2}


@FUZZ
@given(enc=st.sampled_from(list(SUPPORTED_ENCODINGS) + ["32FC1", "yuv422", "", "RGB8", "bayer_rggb8"]),
       h=st.integers(-1, 9), w=st.integers(-1, 9), pad=st.integers(-3, 5), cut=st.integers(0, 12),
       big=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_image_decoding(enc, h, w, pad, cut, big, seed):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.encoding, msg.is_bigendian = enc, big
    msg.height, msg.width = max(h, 0), max(w, 0)
    bpp = _BPP.get(enc, 3)
    step = max(0, max(w, 0) * bpp + pad)
    msg.step = step
    n = max(0, step * max(h, 0) - cut)
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    msg.data = data.tobytes()
    try:
        rgb = image_msg_to_rgb(msg)
    except ImageConversionError as exc:
        assert str(exc)
        return
    # decoding succeeded: geometry was valid and nothing was truncated
    assert enc in _BPP and h > 0 and w > 0 and pad >= 0 and cut == 0
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    rows = data.reshape(h, step)[:, : w * bpp]
    if enc == "rgb8":
        assert np.array_equal(rgb, rows.reshape(h, w, 3))
    elif enc in ("bgr8", "8UC3"):
        assert np.array_equal(rgb, rows.reshape(h, w, 3)[..., ::-1])
    elif enc in ("mono8", "8UC1"):
        assert np.array_equal(rgb[..., 1], rows)


@FUZZ
@given(seed=st.integers(0, 2 ** 16), h=st.integers(1, 12), w=st.integers(1, 12), stride=st.integers(1, 3),
       organized=st.booleans(), max_range=st.sampled_from([np.inf, 50.0, 5.0]))
def test_pointcloud_from_hostile_depth(seed, h, w, stride, organized, max_range):
    from std_msgs.msg import Header

    rng = np.random.default_rng(seed)
    depth = rng.uniform(-5, 100, (h, w)).astype(np.float32)
    specials = rng.integers(0, 5, (h, w))
    depth[specials == 0] = np.nan
    depth[specials == 1] = np.inf
    depth[specials == 2] = -np.inf
    K = np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]])
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (h, w)).astype(np.uint8)
    msg = depth_to_pointcloud2(Header(), depth, K, rgb, labels, stride=stride, max_range=max_range,
                               organized=organized)
    arr = pointcloud2_to_array(msg).reshape(-1)
    sub = depth[::stride, ::stride]
    valid = np.isfinite(sub) & (sub > 0) & (sub <= max_range)
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], 1)
    if organized:
        assert arr.size == sub.size
        assert np.array_equal(np.isfinite(xyz).all(1), valid.reshape(-1))
    else:
        assert arr.size == int(valid.sum())
        assert np.isfinite(xyz).all()
        assert (xyz[:, 2] > 0).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 4000), flips=st.lists(st.integers(0, 3999), max_size=8), junk=st.binary(max_size=64))
def test_load_checkpoint_on_mangled_bytes(tmp_path, cut, flips, junk):
    """A real checkpoint cut short, bit-flipped or with junk appended: loads, or one CheckpointError line."""
    import torch

    from semdepth_core.checkpoint import CheckpointError, load_checkpoint

    src = tmp_path / "src.ckpt"
    if not src.exists():
        torch.save({"format": "semdepth-ckpt-v1", "config": {}, "depth_model": {"w": torch.arange(900.0)}}, src)
    data = bytearray(src.read_bytes()[:cut])
    for i in flips:
        if i < len(data):
            data[i] ^= 0xFF
    path = tmp_path / "mangled.ckpt"
    path.write_bytes(bytes(data) + junk)
    try:
        out = load_checkpoint(path)
    except CheckpointError as exc:
        msg = str(exc)
        assert "\n" not in msg and str(path) in msg
    else:
        assert isinstance(out, dict) and out.get("format") == "semdepth-ckpt-v1"
