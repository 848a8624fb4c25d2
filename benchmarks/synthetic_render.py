"""Synthetic drive rendering speed (semdepth_core.data.synthetic).

    python benchmarks/synthetic_render.py [--quick]

Measures, per resolution, the image_02 render (`render_frame`: RGB + depth + semantic + dynamic)
as wall-clock and process CPU time per frame (median / p90 over the frames of a drive), the LiDAR
scan, and the whole `generate_drive` per frame (both cameras, LiDAR, PNG/bin/txt writing).
CPU time is reported next to wall time because the machine may be shared: wall time then
includes waiting for a core. Target: >= 10 frames/s for image_02 at 640x192.
Writes benchmarks/results/synthetic_render.json (synthetic_render_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import sys
import os
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m
from benchmarks.common import print_table, write_result  # noqa: E402

from semdepth_core.data import synthetic as S  # noqa: E402
from semdepth_core.data.synthetic.kitti_writer import _calib_texts, _rig_from_texts  # noqa: E402

TARGET_FPS = 10.0


def _setup(frames: int, seed: int, width: int, height: int):
    scene, ego, times = S.make_drive_scene(frames, seed, 10.0, lead_car=False)
    cam, velo, imu = _calib_texts(width, height, "2030_01_01")
    rig = _rig_from_texts(cam, velo, imu)
    T_imu_cam = np.linalg.inv(rig.T_cam_imu)
    ego.imu_height = S.CAM_HEIGHT - float(T_imu_cam[2, 3])
    return scene, ego, times, rig, T_imu_cam


def bench_render(width: int, height: int, frames: int, seed: int) -> dict:
    scene, ego, times, rig, T_imu_cam = _setup(frames, seed, width, height)
    T_imu_velo = np.linalg.inv(rig.T_velo_imu)
    snaps = [scene.at(float(t)) for t in times]
    poses = [ego.T_world_imu(float(t)) for t in times]
    S.render_frame(snaps[0], poses[0] @ T_imu_cam, rig.K, width, height)   # warm-up (ray cache)
    wall, cpu, lidar = [], [], []
    for snap, T in zip(snaps, poses):
        w0, c0 = time.perf_counter(), time.process_time()
        S.render_frame(snap, T @ T_imu_cam, rig.K, width, height)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        w0 = time.perf_counter()
        S.render_lidar(snap, T @ T_imu_velo)
        lidar.append(time.perf_counter() - w0)
    wall, cpu, lidar = (np.array(x) * 1e3 for x in (wall, cpu, lidar))
    return {
        "resolution": f"{width}x{height}", "frames": frames,
        "image02_wall_ms": float(np.median(wall)), "image02_wall_p90_ms": float(np.percentile(wall, 90)),
        "image02_cpu_ms": float(np.median(cpu)),
        "fps_wall": float(1e3 / np.median(wall)), "fps_cpu": float(1e3 / np.median(cpu)),
        "lidar_wall_ms": float(np.median(lidar)),
    }


def bench_generate(width: int, height: int, frames: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        S.generate_drive(tmp, frames=frames, seed=seed, width=width, height=height)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"resolution": f"{width}x{height}", "frames": frames,
            "drive_wall_ms_per_frame": wall / frames * 1e3, "drive_cpu_ms_per_frame": cpu / frames * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few frames, 640x192 and 320x96 only")
    a = ap.parse_args(argv)
    frames = 8 if a.quick else 40
    sizes = [(640, 192), (320, 96)] if a.quick else [(640, 192), (320, 96), (1242, 375)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    render = [bench_render(w, h, frames, seed=3) for w, h in sizes]
    print("image_02 render (render_frame) and LiDAR scan, per frame:")
    print_table(render, ["resolution", "frames", "image02_wall_ms", "image02_wall_p90_ms", "image02_cpu_ms",
                         "fps_wall", "fps_cpu", "lidar_wall_ms"])
    gen = [bench_generate(w, h, max(4, frames // 4), seed=4) for w, h in sizes[:2]]
    print("\nwhole generate_drive (image_02 + image_03 + LiDAR + GT + files), per frame:")
    print_table(gen)
    main_row = render[0]
    ok = main_row["fps_cpu"] >= TARGET_FPS
    print(f"\n640x192 image_02: {main_row['fps_wall']:.1f} frames/s wall, {main_row['fps_cpu']:.1f} frames/s CPU "
          f"(target {TARGET_FPS:g}; load average {load})")
    path = write_result("synthetic_render", {
        "target_fps_640x192": TARGET_FPS, "meets_target_cpu": ok, "load_average_1min": load,
        "render": render, "generate_drive": gen, "machine_info_note": "wall time includes waiting for a "
        "core when the machine is shared; CPU time is the process time of the render itself",
    }, quick=a.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
