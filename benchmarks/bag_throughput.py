"""Training-sample throughput: a KITTI drive read from its folder vs from rosbag2 recordings of it.

    python benchmarks/bag_throughput.py [--quick] [--drive DRIVE_DIR] [--workers N]
    python -m benchmarks.bag_throughput --quick

The drive (default KITTI 2011_09_26_drive_0001 from the shared data) is converted with
`semdepth_ros.kitti_to_bag` into a jpeg CompressedImage mcap bag (what a robot with image_transport
compressed records) and a raw-Image mcap bag, in a temporary folder. For each source it measures the
one-time indexing (dataset construction: a full pass over the bag, the on-disk index cache off) and then
full training items (target + 2 context frames at 640x192, no augmentation) per second, in the main
process and with a DataLoader of N workers (2 workers on this 2-core machine do not help at this size).
Writes benchmarks/results/bag_throughput.json (bag_throughput_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m

from benchmarks.common import print_table, write_result  # noqa: E402

KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
KITTI_ODOM = "/kitti/oxts/odom"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer passes, main process only")
    ap.add_argument("--drive", default="", help="KITTI raw drive folder (default: shared drive 0001)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the second measurement")
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=640)
    return ap.parse_args(argv)


def _rate(dataset, passes: int, workers: int) -> float:
    """Items per second over `passes` full passes (main process, or a DataLoader with `workers`)."""
    import torch

    from semdepth_core.data.dataset import collate

    n = 0
    t0 = time.perf_counter()
    if workers == 0:
        for _ in range(passes):
            for i in range(len(dataset)):
                dataset.load(i)
                n += 1
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate,
                                             persistent_workers=True)
        for _ in range(passes):
            for batch in loader:
                n += batch["rgb"].shape[0]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from semdepth_core.config import BagConfig
    from semdepth_core.data.dataset import KittiDataset
    from semdepth_core.data.splits import refs_for_root
    from semdepth_core.paths import kitti_raw_dir
    from semdepth_ros import kitti_to_bag
    from semdepth_ros.bag_dataset import build_bag_datasets

    torch.set_num_threads(1)
    drive = Path(args.drive) if args.drive else kitti_raw_dir() / "2011_09_26" / "2011_09_26_drive_0001_sync"
    if not drive.is_dir():
        print(f"error: {drive}: no such KITTI drive (set --drive or SEMDEPTH_SHARED_DATA)", file=sys.stderr)
        return 2
    passes = 2 if args.quick else 10
    worker_counts = [0] if args.quick else [0, args.workers]
    size = dict(height=args.height, width=args.width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bags = {}
        for fmt in ("jpeg", "raw"):
            out = Path(tmp) / f"{fmt}.bag"
            t0 = time.perf_counter()
            kitti_to_bag.convert(drive, out, storage="mcap", image_format=fmt, log=lambda m: None)
            bags[fmt] = (out, time.perf_counter() - t0)

        def folder():
            root = drive.parent.parent
            refs = [r for r in refs_for_root(root, (-1, 1)) if r.drive == drive.name and r.date == drive.parent.name]
            return KittiDataset(root, refs=refs, context=(-1, 1), with_gt=False, **size)

        def bag(fmt):
            settings = BagConfig(image_topic=KITTI_IMAGE, odom_topic=KITTI_ODOM, index_cache=False)  # a real pass
            return build_bag_datasets(bags[fmt][0], settings, args.height, args.width, [-1, 1], log=None)[0]

        sources = [("KITTI folder (png)", "-", folder),
                   ("rosbag2 mcap, CompressedImage jpeg", "jpeg", lambda: bag("jpeg")),
                   ("rosbag2 mcap, Image rgb8", "raw", lambda: bag("raw"))]
        for name, fmt, make in sources:
            t0 = time.perf_counter()
            ds = make()
            index_s = time.perf_counter() - t0
            row = {"source": name, "samples": len(ds), "index_s": index_s,
                   "bag_MB": (sum(p.stat().st_size for p in bags[fmt][0].iterdir()) / 1e6) if fmt != "-" else "-"}
            for w in worker_counts:
                row[f"samples_per_s_w{w}"] = _rate(ds, passes, w)
            rows.append(row)
    print(f"{drive.name}: {passes} passes, {args.width}x{args.height}, items = target + 2 context frames")
    print_table(rows)
    path = write_result("bag_throughput", {"drive": str(drive), "passes": passes, "size": [args.width, args.height],
                                           "rows": rows}, quick=args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
