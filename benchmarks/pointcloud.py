"""Point cloud / image message conversion speed at KITTI size (1242x375).

    python benchmarks/pointcloud.py [--quick]

Measures (median and p90 over repeats, milliseconds):
- how fast each way of filling a message's `data` field is with rclpy's generated setters;
- depth_to_points + make_pointcloud2 (two steps) and the fused depth_to_pointcloud2, organised and
  unorganised, stride 1/2/4, with a freshly allocated buffer per cloud ("cold") and refilling the
  previously published cloud ("reuse", what the node does);
- Image decode (image_msg_to_rgb) and depth Image encode.
Writes benchmarks/results/pointcloud.json (pointcloud_quick.json with --quick).
Target: a full-resolution cloud in <= 5 ms.
"""
from __future__ import annotations

import argparse
import array
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m
from benchmarks.common import print_table, write_result  # noqa: E402

from semdepth_ros import conversions as C  # noqa: E402

H, W = 375, 1242
TARGET_MS = 5.0


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (ray cache, imports)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return float(np.median(ts)), float(np.percentile(ts, 90))


def _scene():
    rng = np.random.default_rng(0)
    # a plausible KITTI-like depth: far at the top, near at the bottom, 10% invalid
    v = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    depth = (80.0 * (1.0 - v) + 3.0 + rng.uniform(0, 2, (H, W))).astype(np.float32)
    depth[rng.random((H, W)) < 0.1] = np.nan
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (H, W)).astype(np.uint8)
    K = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
    return depth, rgb, labels, K


def bench_setters(repeats: int) -> list[dict]:
    from sensor_msgs.msg import PointCloud2

    buf = np.random.default_rng(1).integers(0, 256, H * W * C.POINT_STEP, dtype=np.uint8)
    msg = PointCloud2()

    def via_bytes():
        msg.data = buf.tobytes()

    def via_array_frombytes():
        msg.data = C.to_byte_array(buf)

    def via_array_ctor():
        msg.data = array.array("B", buf.tobytes())

    rows = []
    for name, fn in (("bytes (setter copies into array)", via_bytes),
                     ("array.array ctor from bytes", via_array_ctor),
                     ("array.frombytes(memoryview) [used]", via_array_frombytes)):
        med, p90 = _time(fn, repeats)
        rows.append({"case": f"msg.data = {name}", "MB": round(buf.nbytes / 1e6, 2), "median_ms": med, "p90_ms": p90})
    # a numpy array or memoryview goes through the per-element validation path: far too slow
    small = buf[: buf.size // 100]
    t0 = time.perf_counter()
    msg.data = memoryview(small)
    per_mb = (time.perf_counter() - t0) * 1e3 / (small.nbytes / 1e6)
    rows.append({"case": "msg.data = memoryview (extrapolated)", "MB": round(buf.nbytes / 1e6, 2),
                 "median_ms": per_mb * buf.nbytes / 1e6, "p90_ms": float("nan")})
    return rows


def bench_clouds(repeats: int, strides) -> list[dict]:
    depth, rgb, labels, K = _scene()
    rows = []
    for organized in (True, False):
        for stride in strides:
            kw = dict(stride=stride, max_range=80.0, organized=organized)

            def two_step():
                p = C.depth_to_points(depth, K, rgb, labels, **kw)
                return C.make_pointcloud2(None, p.xyz, p.rgb, p.labels, organized_shape=p.shape)

            def fused_cold():
                return C.depth_to_pointcloud2(None, depth, K, rgb, labels, **kw)

            prev = fused_cold()

            def fused_reuse():
                return C.depth_to_pointcloud2(None, depth, K, rgb, labels, reuse=prev, **kw)

            n = prev.width * prev.height
            for name, fn in (("two-step, cold", two_step), ("fused, cold", fused_cold),
                             ("fused, reuse [node]", fused_reuse)):
                med, p90 = _time(fn, repeats)
                rows.append({"case": name, "organized": organized, "stride": stride, "points": n,
                             "median_ms": med, "p90_ms": p90})
    return rows


def bench_images(repeats: int) -> list[dict]:
    depth, rgb, _, _ = _scene()
    rows = []
    for enc in ("rgb8", "bgr8", "bgra8"):
        m = C.rgb_to_image_msg(rgb, None, enc)
        med, p90 = _time(lambda m=m: C.image_msg_to_rgb(m), repeats)
        rows.append({"case": f"image_msg_to_rgb {enc}", "median_ms": med, "p90_ms": p90})
    for enc in ("32FC1", "16UC1"):
        med, p90 = _time(lambda enc=enc: C.depth_to_image_msg(depth, None, enc), repeats)
        rows.append({"case": f"depth_to_image_msg {enc}", "median_ms": med, "p90_ms": p90})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, stride 1 only")
    args = ap.parse_args(argv)
    repeats = 8 if args.quick else 50
    strides = (1,) if args.quick else (1, 2, 4)

    print(f"## msg.data setters ({H}x{W}x{C.POINT_STEP} bytes)")
    setters = bench_setters(max(3, repeats // 4))
    print_table(setters)
    print(f"\n## point clouds {W}x{H} (fields x,y,z,rgb,label; {C.POINT_STEP} B/point)")
    clouds = bench_clouds(repeats, strides)
    print_table(clouds)
    print("\n## images")
    images = bench_images(repeats)
    print_table(images)

    node_case = next(r for r in clouds if r["case"].endswith("[node]") and r["organized"] and r["stride"] == 1)
    ok = node_case["median_ms"] <= TARGET_MS
    summary = {"full_res_organized_fused_reuse_ms": node_case["median_ms"], "target_ms": TARGET_MS, "meets_target": ok}
    path = write_result("pointcloud", {"size": [W, H], "repeats": repeats, "setters": setters,
                                       "clouds": clouds, "images": images, "summary": summary}, quick=args.quick)
    print(f"\nfull-resolution organised cloud (fused, reuse): {node_case['median_ms']:.2f} ms "
          f"(target <= {TARGET_MS} ms: {'OK' if ok else 'MISSED'}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
