"""Visualisation helpers: colour maps, scale bar, strips, PLY round trip, bar chart."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from semdepth_core.data.labels import ID, PALETTE
from semdepth_core.viz import (
    class_bar_chart,
    colorize_depth,
    depth_scale_bar,
    depth_strip,
    read_ply,
    semantic_overlay,
    write_ply,
    write_png,
)


def test_colorize_depth_near_is_brighter_and_invalid_black():
    depth = np.array([[2.0, 50.0, 0.0, np.nan]], np.float32)
    rgb = colorize_depth(depth, max_depth=80.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].astype(int).sum() > rgb[0, 1].astype(int).sum()
    assert np.all(rgb[0, 2] == 0) and np.all(rgb[0, 3] == 0)


def test_scale_bar_matches_colouring():
    bar = depth_scale_bar(200, max_depth=80.0, min_depth=1.0)
    assert bar.shape == (200, 60, 3)
    top = colorize_depth(np.array([[1.0]]), 80.0, 1.0)[0, 0]
    bottom = colorize_depth(np.array([[80.0]]), 80.0, 1.0)[0, 0]
    assert np.abs(bar[0, 5].astype(int) - top.astype(int)).max() <= 2
    assert np.abs(bar[-1, 5].astype(int) - bottom.astype(int)).max() <= 2


def test_strip_and_overlay(tmp_path):
    rgb = np.full((24, 32, 3), 100, np.uint8)
    labels = np.full((24, 32), ID["car"], np.uint8)
    ov = semantic_overlay(rgb, labels, alpha=1.0)
    assert np.all(ov == PALETTE[ID["car"]])
    strip = depth_strip(rgb, np.full((12, 16), 10.0, np.float32), labels)
    assert strip.shape == (24, 32 * 3 + 60, 3)
    write_png(tmp_path / "s.png", strip)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "s.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, strip)


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (50, 3)).astype(np.uint8)
    lab = rng.integers(0, 19, 50).astype(np.uint32)
    write_ply(tmp_path / "c.ply", xyz, rgb, lab)
    rec = read_ply(tmp_path / "c.ply")
    assert np.allclose(np.stack([rec["x"], rec["y"], rec["z"]], 1), xyz)
    assert np.array_equal(np.stack([rec["red"], rec["green"], rec["blue"]], 1), rgb)
    assert np.array_equal(rec["label"], lab)
    with pytest.raises(ValueError):
        write_ply(tmp_path / "bad.ply", xyz, rgb[:3])


def test_bar_chart(tmp_path):
    class_bar_chart(tmp_path / "b.png", {"car": 0.2, "road": 0.1}, {"car": 0.25, "road": 0.12})
    img = cv2.imread(str(tmp_path / "b.png"))
    assert img is not None and img.shape[0] > 100
    with pytest.raises(ValueError):
        class_bar_chart(tmp_path / "e.png", {})
