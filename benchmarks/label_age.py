"""What stale semantic labels cost: how well the labels of frame t-k describe frame t, on real drives.

    python -m benchmarks.label_age [--quick] [--checkpoint PATH]

The node's default `semantics.rate` runs the semantic net apart from the depth net, on the latest frame at
most `rate` times a second, and labels each cloud with the latest mask: at a camera rate of R Hz the labels
are up to about R / rate frames old. This measures, on the KITTI raw drives in the shared data (10 Hz,
driving), the pixel agreement between the shipped model's labels of frame t and of frame t-k, for k = 0..5
(0-500 ms), over pixels labelled in both (void excluded) and per class group (the moving objects matter
most). Depth is not affected by the setting (the depth net does not use the semantic net). The agreement of
k = 0 is 1 by construction; the drop with k is the cost of age.

Results: benchmarks/results/label_age[_quick].json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, write_result  # noqa: E402

# Cityscapes trainIds: road 0 sidewalk 1 building 2 ... vegetation 8 terrain 9 sky 10 person 11 rider 12
# car 13 truck 14 bus 15 train 16 motorcycle 17 bicycle 18
GROUPS = {"all": None, "flat (road, sidewalk)": (0, 1), "objects (person..bicycle)": tuple(range(11, 19)),
          "car": (13,), "sky": (10,)}


def agreement(ref: np.ndarray, old: np.ndarray, classes) -> float:
    """Fraction of pixels (labelled in both; of `classes` in the reference when given) with the same label."""
    valid = (ref != 255) & (old != 255)
    if classes is not None:
        valid &= np.isin(ref, classes)
    n = int(valid.sum())
    return float((ref[valid] == old[valid]).sum() / n) if n else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one drive, k up to 2")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    args = ap.parse_args(argv)
    from semdepth_core.data import kitti
    from semdepth_core.infer import load_predictor
    from semdepth_core.paths import kitti_raw_dir
    from semdepth_ros.params import shipped_checkpoint

    ckpt = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint()
    pred = load_predictor(ckpt, backend="onnxruntime", split_semantics=True)
    drives = sorted(p for p in kitti_raw_dir().glob("*/*_sync") if (p / "image_02").is_dir())
    if args.quick:
        drives = drives[:1]
    max_k = 2 if args.quick else 5
    t0 = time.monotonic()
    per = {g: {k: [] for k in range(max_k + 1)} for g in GROUPS}
    pairs = {k: 0 for k in range(max_k + 1)}
    for d in drives:
        drive = kitti.KittiDrive(d)
        frames = sorted(drive.frames)
        labels = {f: pred.predict_labels(drive.load_image(f))[0] for f in frames}
        for i, f in enumerate(frames):
            for k in range(max_k + 1):
                if i - k < 0 or frames[i - k] != f - k:
                    continue
                pairs[k] += 1
                for g, cls in GROUPS.items():
                    per[g][k].append(agreement(labels[f], labels[frames[i - k]], cls))
    rows = []
    for k in range(max_k + 1):
        row = {"age_frames": k, "age_ms_at_10hz": 100 * k, "pairs": pairs[k]}
        for g in GROUPS:
            vals = [v for v in per[g][k] if np.isfinite(v)]
            row[g] = float(np.mean(vals)) if vals else float("nan")
        rows.append(row)
    text = print_table(rows)
    payload = {"checkpoint": str(ckpt), "drives": [d.name for d in drives], "network_input": list(pred.input_size),
               "metric": "pixel agreement of labels(t-k) with labels(t), pixels labelled in both, mean over frame pairs",
               "rows": rows, "table_text": text, "wall_s": time.monotonic() - t0}
    path = write_result("label_age", payload, quick=args.quick)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
