"""Cityscapes trainId label set (19 classes, 255 = ignore) shared by data, nets, eval and the node."""
from __future__ import annotations

import numpy as np

IGNORE = 255
NUM_CLASSES = 19

# (trainId, name, RGB colour) — the official Cityscapes palette
CLASSES: list[tuple[int, str, tuple[int, int, int]]] = [
    (0, "road", (128, 64, 128)),
    (1, "sidewalk", (244, 35, 232)),
    (2, "building", (70, 70, 70)),
    (3, "wall", (102, 102, 156)),
    (4, "fence", (190, 153, 153)),
    (5, "pole", (153, 153, 153)),
    (6, "traffic light", (250, 170, 30)),
    (7, "traffic sign", (220, 220, 0)),
    (8, "vegetation", (107, 142, 35)),
    (9, "terrain", (152, 251, 152)),
    (10, "sky", (70, 130, 180)),
    (11, "person", (220, 20, 60)),
    (12, "rider", (255, 0, 0)),
    (13, "car", (0, 0, 142)),
    (14, "truck", (0, 0, 70)),
    (15, "bus", (0, 60, 100)),
    (16, "train", (0, 80, 100)),
    (17, "motorcycle", (0, 0, 230)),
    (18, "bicycle", (119, 11, 32)),
]
NAMES = [c[1] for c in CLASSES]
ID = {name: tid for tid, name, _ in CLASSES}
SKY = ID["sky"]

# Classes that move (infinite-depth candidates) and SegDepth "foreground" objects.
DYNAMIC = [ID[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")]
FOREGROUND = DYNAMIC + [ID[n] for n in ("pole", "traffic light", "traffic sign")]

# palette indexed by trainId (256 entries, ignore = black)
PALETTE = np.zeros((256, 3), np.uint8)
for _tid, _name, _rgb in CLASSES:
    PALETTE[_tid] = _rgb


def colorize(labels: np.ndarray) -> np.ndarray:
    """trainId map [H,W] (uint8/int) -> RGB uint8 [H,W,3]; ignore/out of range -> black."""
    lab = np.asarray(labels)
    lab = np.where((lab >= 0) & (lab < 256), lab, IGNORE).astype(np.uint8)
    return PALETTE[lab]


def color_to_train_ids(rgb: np.ndarray) -> np.ndarray:
    """Cityscapes colour ground truth [H,W,3] RGB -> trainIds [H,W] uint8 (unknown colours -> 255)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = np.full(code.shape, IGNORE, np.uint8)
    for tid, _name, (r, g, b) in CLASSES:
        out[code == ((r << 16) | (g << 8) | b)] = tid
    return out
