"""`make demo`: the product end to end, offline, on an embedded default.

    python -m semdepth_ros.demo [--data DRIVE_DIR] [--frames N] [--out demo_output] [--checkpoint CKPT]

A synthetic KITTI-format drive is generated on the fly (or a real KITTI raw drive is read with
--data), converted to a rosbag2, and replayed over real DDS into the real `depth_node` running as a
separate process with the default weights and `config/depth.yaml`. A collector node records the
node's depth, semantics and point clouds; the demo then scores them against the ground truth
(synthetic dense depth, or the Velodyne scans of a real drive) and writes demo_output/:
  strip_NNN.png      input | colourised depth with a scale bar | semantic overlay
  cloud.ply          one frame's labelled, coloured point cloud
  per_class_abs_rel.png, summary.json, and a summary table printed at the end.
Without --data the same then runs on a real KITTI drive (--real; by default drive 0023 of the shared
data, which the default weights never trained on) into demo_output/kitti/, and demo_output/demo_strip.png
shows its first strip above the synthetic one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "default.ckpt"
NAMESPACE = "/semdepth"


def default_params_file() -> Path:
    """config/depth.yaml of the source tree, else the installed share/ copy."""
    src = REPO / "config" / "depth.yaml"
    if src.is_file():
        return src
    return Path(sys.prefix) / "share" / "semdepth_ros" / "config" / "depth.yaml"


@dataclass
class Collected:
    depth: dict = field(default_factory=dict)  # stamp_ns -> [H,W] float32 metres (NaN = none)
    semantic: dict = field(default_factory=dict)  # stamp_ns -> [H,W] uint8
    points: dict = field(default_factory=dict)  # stamp_ns -> structured array
    arrival: dict = field(default_factory=dict)  # stamp_ns -> wall time of the depth message
    diagnostics: list = field(default_factory=list)  # KeyValue dicts of the node's status


def node_command(checkpoint: Path, params_file: Path, backend: str, scale_mode: str) -> list[str]:
    """Exactly what launch/depth.launch.py runs: the depth_node executable, params file, remaps."""
    from semdepth_ros import kitti_to_bag as k2b

    return [sys.executable, "-m", "semdepth_ros.node", "--ros-args",
            "--params-file", str(params_file),
            "-p", f"checkpoint:={checkpoint}", "-p", f"backend:={backend}", "-p", f"scale.mode:={scale_mode}",
            "-r", f"__ns:={NAMESPACE}",
            "-r", f"image:={k2b.TOPIC_IMAGE}", "-r", f"camera_info:={k2b.TOPIC_CAMERA_INFO}",
            "-r", f"odom:={k2b.TOPIC_ODOM}"] + reliable_qos_overrides()


OUTPUTS = ("depth", "semantic", "semantic/color", "depth/camera_info", "points")


def reliable_qos_overrides() -> list[str]:
    """Large images are lost between processes over best-effort DDS (fragments): the demo makes its
    inputs and outputs reliable with the node's standard `qos_overrides` parameters."""
    from semdepth_ros import kitti_to_bag as k2b

    args = []
    for topic in (k2b.TOPIC_IMAGE, k2b.TOPIC_CAMERA_INFO, k2b.TOPIC_ODOM):
        args += ["-p", f"qos_overrides.{topic}.subscription.reliability:=reliable"]
    for topic in OUTPUTS:
        args += ["-p", f"qos_overrides.{NAMESPACE}/{topic}.publisher.reliability:=reliable"]
    return args


def collect(env: dict, node_cmd: list[str], bag: Path, frames: int, rate: float, timeout: float,
            log_path: Path) -> tuple[Collected, float]:
    """Run depth_node + replay as processes; record the node's outputs in this process."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2
    from tqdm import tqdm

    from semdepth_ros import conversions as C
    from semdepth_ros import kitti_to_bag as k2b

    os.environ.update(env)
    out = Collected()
    lock = threading.Lock()
    rclpy.init()
    node = rclpy.create_node("semdepth_demo_collector")

    def stamp(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def on_depth(msg):
        with lock:
            out.depth[stamp(msg)] = C.image_msg_to_array(msg).astype(np.float32)
            out.arrival[stamp(msg)] = time.monotonic()

    def on_semantic(msg):
        with lock:
            out.semantic[stamp(msg)] = C.image_msg_to_array(msg)

    def on_points(msg):
        with lock:
            out.points[stamp(msg)] = C.pointcloud2_to_array(msg).reshape(-1)

    def on_diag(msg):
        for st in msg.status:
            if "semdepth" in st.name or "depth_node" in st.name:
                with lock:
                    out.diagnostics.append({"level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level),
                                            "message": st.message, **{kv.key: kv.value for kv in st.values}})

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, f"{NAMESPACE}/depth", on_depth, qos)
    node.create_subscription(Image, f"{NAMESPACE}/semantic", on_semantic, qos)
    node.create_subscription(PointCloud2, f"{NAMESPACE}/points", on_points, qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    spin = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
    spin.start()

    with open(log_path, "w") as node_log:
        proc = subprocess.Popen(node_cmd, env={**os.environ, **env}, stdout=node_log, stderr=subprocess.STDOUT)
        replay = None
        try:
            deadline = time.monotonic() + 120
            while node.count_subscribers(k2b.TOPIC_IMAGE) == 0:  # depth_node subscribed: ready
                if proc.poll() is not None:
                    raise RuntimeError(f"depth_node exited with status {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"depth_node did not subscribe to {k2b.TOPIC_IMAGE} within 120 s; see {log_path}")
                time.sleep(0.2)
            # the node skips inference while nothing subscribes to its outputs: wait until its publishers are
            # discovered here too (a short real drive replays in about a second, all of it lost otherwise)
            while not all(node.count_publishers(f"{NAMESPACE}/{t}") > 0 for t in ("depth", "semantic", "points")):
                if proc.poll() is not None:
                    raise RuntimeError(f"depth_node exited with status {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"depth_node's outputs did not appear within 120 s; see {log_path}")
                time.sleep(0.2)
            time.sleep(2.0)  # let discovery settle on both sides
            t0 = time.monotonic()
            replay = subprocess.Popen([sys.executable, "-m", "semdepth_ros.replay", str(bag), "--rate", f"{rate:g}",
                                       "--wait-for", k2b.TOPIC_IMAGE],
                                      env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            bar = tqdm(total=frames, desc="depth frames", unit="frame")
            seen = 0
            end_by = time.monotonic() + timeout
            while time.monotonic() < end_by:
                with lock:
                    n = len(out.depth)
                if n > seen:
                    bar.update(n - seen)
                    seen = n
                if replay.poll() is not None:
                    if replay.returncode != 0:
                        raise RuntimeError(f"replay failed: {replay.stderr.read()[-2000:]}")
                    # after the last message, give the node time for its final frame
                    last = max(out.arrival.values(), default=t0)
                    if time.monotonic() - max(last, t0) > 5.0 or n >= frames:
                        break
                time.sleep(0.1)
            bar.close()
            elapsed = time.monotonic() - t0
            # the stage timings come with /diagnostics (every diagnostics_period): wait for a report that
            # covers the frames received, so a loaded machine does not end the run before it arrives
            diag_by = time.monotonic() + 15.0
            while time.monotonic() < diag_by and proc.poll() is None:
                with lock:
                    done = [d for d in out.diagnostics if "time_ms.total" in d
                            and int(d.get("frames_processed", 0)) >= len(out.depth)]
                if done:
                    break
                time.sleep(0.1)
        finally:
            for p in (replay, proc):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in (replay, proc):
                if p is not None:
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
            node.destroy_node()
            rclpy.shutdown()
            spin.join(timeout=5)
    return out, elapsed


def ground_truth(drive, frame: int) -> np.ndarray:
    """The drive's ground truth at its native size: dense synthetic depth, else the LiDAR (raw scan or the
    packaged projection); drive: KittiDrive."""
    gt = drive.depth_gt(frame, 2)
    if gt is None:
        raise FileNotFoundError(f"{drive.path}: frame {frame} has neither dense depth nor LiDAR")
    return gt


def summarise(col: Collected, drive_dir: Path, out_dir: Path, elapsed: float, scale_mode: str,
              strips: int = 4) -> dict:
    from semdepth_core.data.kitti import KittiDrive, read_label_png, read_rgb
    from semdepth_core.eval.metrics import MetricAccumulator
    from semdepth_core.viz import class_bar_chart, depth_strip, write_ply, write_png
    from semdepth_ros.kitti_to_bag import read_timestamps_ns

    drive = KittiDrive(drive_dir)
    stamps = read_timestamps_ns(drive.path / "image_02" / "timestamps.txt")
    frame_of = {int(stamps[f]): f for f in drive.frames}
    keys = sorted(k for k in col.depth if k in frame_of)
    if not keys:
        raise RuntimeError("the depth node published no depth for the replayed frames")
    scaled, unscaled = MetricAccumulator(), MetricAccumulator()
    dynamic_present = False
    for k in keys:
        depth = np.nan_to_num(col.depth[k], nan=0.0)
        f = frame_of[k]
        gt = ground_truth(drive, f)
        if gt.shape != depth.shape:
            import cv2

            depth = cv2.resize(depth, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        sem = col.semantic.get(k)
        if sem is not None and sem.shape != gt.shape:
            import cv2

            sem = cv2.resize(sem, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        dyn_path = drive.dynamic_path(f)
        dyn = None
        if dyn_path is not None:
            dyn = read_label_png(dyn_path)
            dynamic_present = True
        scaled.add(gt, depth, semantic=sem, dynamic=dyn, median_scaling=True)
        unscaled.add(gt, depth, semantic=sem, dynamic=dyn, median_scaling=False)
    s_sum, u_sum = scaled.summary(), unscaled.summary()

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(keys[:: max(1, len(keys) // strips)][:strips]):
        rgb = read_rgb(drive.image_path(frame_of[k]))
        write_png(out_dir / f"strip_{i:03d}.png", depth_strip(rgb, col.depth[k], col.semantic.get(k)))
    cloud_key = keys[len(keys) // 2]
    pts = col.points.get(cloud_key) if col.points else None
    if pts is None and col.points:
        cloud_key = min(col.points, key=lambda s: abs(s - cloud_key))
        pts = col.points[cloud_key]
    if pts is not None:
        good = np.isfinite(pts["x"]) & np.isfinite(pts["y"]) & np.isfinite(pts["z"])
        rgb_u32 = pts["rgb"].view(np.uint32) if pts["rgb"].dtype != np.uint32 else pts["rgb"]
        cols = np.stack([(rgb_u32 >> 16) & 255, (rgb_u32 >> 8) & 255, rgb_u32 & 255], 1).astype(np.uint8)
        write_ply(out_dir / "cloud.ply", np.stack([pts["x"], pts["y"], pts["z"]], 1)[good], cols[good],
                  pts["label"][good].astype(np.uint32))
    per_class = {name: m["abs_rel"] for name, m in s_sum.get("per_class", {}).items()}
    if per_class:
        class_bar_chart(out_dir / "per_class_abs_rel.png", per_class, names=("default model", "-"))

    stage_ms: dict[str, list[float]] = {}
    for d in col.diagnostics:
        for key, val in d.items():
            if key.startswith("time_ms."):
                try:
                    stage_ms.setdefault(key[len("time_ms."):], []).append(float(val))
                except ValueError:
                    pass
    arrivals = sorted(col.arrival[k] for k in keys)
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else float("nan")
    summary = {
        "frames_in_drive": len(drive.frames),
        "frames_with_depth": len(keys),
        "fps": fps,
        "elapsed_s": elapsed,
        "scale_mode": scale_mode,
        "median_scaled": {m: s_sum[m] for m in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")},
        "unscaled": {m: u_sum[m] for m in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")},
        "median_gt_pred_ratio": u_sum.get("ratio_spread", {}).get("median"),
        "class_avg_abs_rel": s_sum.get("class_avg_abs_rel"),
        "infinite_depth_fraction": s_sum.get("infinite_depth_fraction") if dynamic_present else None,
        "latency_ms": {k: float(np.median(v)) for k, v in sorted(stage_ms.items())},
        "per_class_abs_rel": per_class,
    }
    tmp = out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, out_dir / "summary.json")
    return summary


def print_summary(s: dict, out_dir: Path) -> None:
    rows = [("frames (depth / drive)", f"{s['frames_with_depth']} / {s['frames_in_drive']}"),
            ("throughput", f"{s['fps']:.2f} FPS"),
            ("scale mode", s["scale_mode"]),
            ("abs_rel / a1 (metric, unscaled)", f"{s['unscaled']['abs_rel']:.3f} / {s['unscaled']['a1']:.3f}"),
            ("abs_rel / a1 (median-scaled)", f"{s['median_scaled']['abs_rel']:.3f} / {s['median_scaled']['a1']:.3f}"),
            ("median GT/pred ratio", f"{s['median_gt_pred_ratio']:.3f}" if s["median_gt_pred_ratio"] else "n/a"),
            ("class-average abs_rel", f"{s['class_avg_abs_rel']:.3f}" if s["class_avg_abs_rel"] else "n/a")]
    rows += [(f"latency {k}", f"{v:.1f} ms") for k, v in s["latency_ms"].items()]
    w = max(len(r[0]) for r in rows)
    print("\nsemdepth demo summary")
    print("-" * (w + 20))
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")
    print(f"\noutputs in {out_dir}/")


def held_out_kitti_drive() -> Path | None:
    """KITTI raw drive 0023 in the shared real data (held out of the default's training), if present."""
    from semdepth_core.paths import kitti_raw_dir

    d = kitti_raw_dir() / "2011_09_26" / "2011_09_26_drive_0023_sync"
    return d if d.is_dir() else None


def run_drive(drive_dir: Path, out_dir: Path, checkpoint: Path, args, tmp: Path) -> dict:
    """Bag `drive_dir`, replay it into a depth_node process, score and draw what it published."""
    from semdepth_ros.kitti_to_bag import convert

    bag = tmp / f"{drive_dir.name}.bag"
    counts = convert(drive_dir, bag, storage="mcap", max_frames=args.frames, log=lambda *a: None)
    n_frames = max(counts.values()) if counts else 0
    print(f"bag written: {bag.name} ({n_frames} frames)")
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(random.randint(20, 200)))}
    cmd = node_command(checkpoint, default_params_file(), args.backend, args.scale_mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    col, elapsed = collect(env, cmd, bag, n_frames, args.rate, args.timeout, out_dir / "node.log")
    return summarise(col, drive_dir, out_dir, elapsed, args.scale_mode)


def combined_strip(paths: list[Path], out: Path) -> Path | None:
    """The first strip of each run, one above the other (real KITTI first): the README picture."""
    import cv2

    imgs = [cv2.imread(str(p)) for p in paths if p.is_file()]
    imgs = [im for im in imgs if im is not None]
    if not imgs:
        return None
    w = min(im.shape[1] for im in imgs)
    imgs = [cv2.resize(im, (w, round(im.shape[0] * w / im.shape[1])), interpolation=cv2.INTER_AREA) for im in imgs]
    gap = np.full((6, w, 3), 255, np.uint8)
    stacked = [imgs[0]]
    for im in imgs[1:]:
        stacked += [gap, im]
    cv2.imwrite(str(out), np.concatenate(stacked, axis=0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semdepth_ros.demo", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="a KITTI raw drive folder (YYYY_MM_DD/..._drive_XXXX_sync); default: a synthetic drive "
                                  "and then the real KITTI drive of --real")
    p.add_argument("--real", default="auto",
                   help="without --data, the real KITTI drive shown after the synthetic one: a drive folder, 'auto' "
                        "(drive 0023 of the shared data, held out of the default's training, when present) or 'none'")
    p.add_argument("--frames", type=int, default=40, help="frames to generate / replay")
    p.add_argument("--seed", type=int, default=2024, help="synthetic drive seed")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--backend", default="auto")
    p.add_argument("--scale-mode", default="auto", choices=["auto", "none", "model", "odometry", "fixed"],
                   help="metric scale (default auto: the checkpoint's own metres when it was trained metric, as the "
                        "default weights are; else odometry, the bag's OXTS speed and the pose network)")
    p.add_argument("--rate", type=float, default=0.5, help="replay rate (1 = real time)")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)

    out_dir = Path(args.out).resolve()
    checkpoint = Path(args.checkpoint).resolve()
    if not checkpoint.is_file():
        print(f"error: checkpoint not found: {checkpoint}", file=sys.stderr)
        return 2
    if args.scale_mode == "auto":
        from semdepth_core.checkpoint import CheckpointError, load_checkpoint
        from semdepth_core.config import config_from_dict

        try:
            metric = config_from_dict(load_checkpoint(checkpoint)["config"]).loss.velocity_weight > 0
        except (CheckpointError, KeyError, ValueError) as exc:
            print(f"error: {checkpoint}: {exc}", file=sys.stderr)
            return 2
        args.scale_mode = "model" if metric else "odometry"
    real = None
    if not args.data and args.real != "none":
        real = held_out_kitti_drive() if args.real == "auto" else Path(args.real).resolve()
        if real is None:
            print("note: no real KITTI drive found (set SEMDEPTH_SHARED_DATA); showing the synthetic drive only")
        elif not real.is_dir():
            print(f"error: --real {real}: not a folder", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="semdepth_demo_") as tmp:
        tmp = Path(tmp)
        if args.data:
            drive_dir = Path(args.data).resolve()
        else:
            from semdepth_core.data.synthetic import generate_drive

            print(f"generating a synthetic drive (seed {args.seed}, {args.frames} frames, 640x192) ...")
            drive_dir = generate_drive(tmp / "kitti", frames=args.frames, seed=args.seed, width=640, height=192)
        summary = run_drive(drive_dir, out_dir, checkpoint, args, tmp)
        print_summary(summary, out_dir)
        if real is not None:
            print(f"\nthe real KITTI drive {real.name} ...")
            real_summary = run_drive(real, out_dir / "kitti", checkpoint, args, tmp)
            print_summary(real_summary, out_dir / "kitti")
            pic = combined_strip([out_dir / "kitti" / "strip_000.png", out_dir / "strip_000.png"],
                                 out_dir / "demo_strip.png")
            if pic is not None:
                print(f"real and synthetic strips: {pic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
