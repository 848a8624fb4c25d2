"""Visualisation shared by training summaries, evaluation and the demo (no ROS, no GUI)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from semdepth_core.data.labels import colorize as colorize_labels


def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


_LUTS: dict[str, np.ndarray] = {}


def colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str = "magma", invalid=(0, 0, 0)) -> np.ndarray:
    """Map a [H,W] float array to RGB uint8 through a matplotlib colormap; NaN/inf -> `invalid`."""
    if cmap not in _LUTS:
        _LUTS[cmap] = _lut(cmap)
    v = np.asarray(values, np.float32)
    finite = np.isfinite(v)
    t = np.clip((np.where(finite, v, vmin) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    out = _LUTS[cmap][(t * 255).astype(np.uint8)]
    out[~finite] = invalid
    return out


def colorize_depth(depth: np.ndarray, max_depth: float = 80.0, min_depth: float = 1.0) -> np.ndarray:
    """Depth [H,W] metres -> RGB with near = bright (inverse-depth colouring, like the paper's figures)."""
    d = np.asarray(depth, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where((d > 0) & np.isfinite(d), 1.0 / d, np.nan)
    return colorize(inv, 1.0 / max_depth, 1.0 / min_depth, "magma")


def depth_scale_bar(height: int, max_depth: float = 80.0, min_depth: float = 1.0, width: int = 60) -> np.ndarray:
    """A vertical colour bar [height,width,3] matching `colorize_depth`, labelled in metres."""
    inv = np.linspace(1.0 / min_depth, 1.0 / max_depth, height, dtype=np.float32)[:, None].repeat(18, 1)
    bar = np.full((height, width, 3), 255, np.uint8)
    bar[:, :18] = colorize(inv, 1.0 / max_depth, 1.0 / min_depth, "magma")
    font_scale = max(0.3, min(0.5, height / 400))
    last_row = -100
    for d in sorted({min_depth, 2 * min_depth, 3, 5, 10, 20, 40, max_depth}):
        if not (min_depth <= d <= max_depth):
            continue
        row = int(round((1.0 / min_depth - 1.0 / d) / (1.0 / min_depth - 1.0 / max_depth) * (height - 1)))
        row = min(max(row, 6), height - 3)
        if row - last_row < 14 and d != max_depth:  # labels would overlap (inverse-depth spacing)
            continue
        if row - last_row < 14:  # always label the far end; drop the previous label instead
            bar[max(0, last_row - 8):last_row + 5, 19:] = 255
        cv2.putText(bar, f"{d:g}m", (20, row + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
        last_row = row
    return bar


def semantic_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the Cityscapes palette of `labels` [H,W] over `rgb` [H,W,3]."""
    if labels.shape != rgb.shape[:2]:
        labels = cv2.resize(labels.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    col = colorize_labels(labels).astype(np.float32)
    return (alpha * col + (1 - alpha) * rgb.astype(np.float32)).astype(np.uint8)


def depth_strip(rgb: np.ndarray, depth: np.ndarray, labels: np.ndarray | None, max_depth: float = 80.0,
                min_depth: float = 3.0) -> np.ndarray:
    """input | colourised depth + scale bar | semantic overlay, side by side (RGB uint8).

    A fixed colour range (min_depth..max_depth metres, inverse-depth spacing) so frames compare."""
    h, w = rgb.shape[:2]
    if depth.shape != (h, w):
        depth = cv2.resize(depth.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    parts = [rgb, colorize_depth(depth, max_depth, min_depth), depth_scale_bar(h, max_depth, min_depth)]
    if labels is not None:
        parts.append(semantic_overlay(rgb, labels))
    return np.concatenate(parts, axis=1)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode PNG for {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Binary little-endian PLY with float x,y,z, uchar r,g,b (and uint label), written atomically."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    if len(xyz) != len(rgb) or (labels is not None and len(labels) != len(xyz)):
        raise ValueError("write_ply: xyz, rgb and labels must have the same number of points")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if labels is not None:
        fields.append(("label", "<u4"))
    rec = np.empty(len(xyz), dtype=fields)
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["red"], rec["green"], rec["blue"] = rgb.T
    if labels is not None:
        rec["label"] = labels
    ply_types = {"<f4": "float", "u1": "uchar", "<u4": "uint"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {ply_types[t]} {n}" for n, t in fields] + ["end_header"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode())
        f.write(rec.tobytes())
    os.replace(tmp, path)


def read_ply(path: str | Path) -> np.ndarray:
    """Read a PLY written by `write_ply` back into a structured array (tests, tools)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode().splitlines()
    n = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    types = {"float": "<f4", "uchar": "u1", "uint": "<u4"}
    fields = [(l.split()[2], types[l.split()[1]]) for l in lines if l.startswith("property")]
    return np.frombuffer(data[end:], dtype=fields, count=n)


def class_bar_chart(path: str | Path, per_class: dict[str, float], other: dict[str, float] | None = None,
                    names: tuple[str, str] = ("guided", "baseline"), metric: str = "abs_rel") -> None:
    """Per-class error bars (Fig. 4 style): one series, or two side by side, plus the class average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in per_class if other is None or c in other]
    if not classes:
        raise ValueError("class_bar_chart: no classes to plot")
    x = np.arange(len(classes) + 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(x) + 2), 3.5))
    series = [(names[0], per_class, "tab:blue")] + ([(names[1], other, "tab:red")] if other else [])
    width = 0.8 / len(series)
    for i, (label, data, color) in enumerate(series):
        vals = [data[c] for c in classes]
        vals.append(float(np.mean(vals)))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label, color=color)
    ax.set_xticks(x, classes + ["class avg"], rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
