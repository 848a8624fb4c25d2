"""Does `scale.mode: odometry` give a scale-ambiguous model metric depth on a drive bag?

    python -m benchmarks.odometry_scale --checkpoint runs/<run>/best.ckpt [--frames 40] [--rate 0.5]
    python -m benchmarks.odometry_scale --untrained --quick      # plumbing check only

Issue: "on a synthetic drive bag with a scale-ambiguous model, scale.mode: odometry brings median
GT/pred depth ratio within 1 +- 0.1".

1. A synthetic drive (semdepth_core.data.synthetic.generate_drive, 640x192, 10 m/s, `--seed`,
   `--frames` >= 40 for the real run) in KITTI raw layout, with dense GT depth PNGs
   (proj_depth/groundtruth/image_02, 0 = invalid/sky) and OXTS (-> nav_msgs/Odometry twist).
2. kitti_to_bag -> a rosbag2 (mcap) with image, camera_info, odometry (Velodyne not replayed).
3. For scale.mode odometry and then none: the real depth_node process (backend torch by default,
   the checkpoint's own network input size) with reliable QoS overrides; semdepth_replay plays the
   bag (`--wait-for` image and odom, `--rate`); this process records every `depth` image and the
   node's /diagnostics.
4. Per depth frame: median(GT / pred) over pixels with GT > 0 and a finite prediction (the GT PNG
   of the frame with the same image stamp). The headline is the median over frames of that ratio,
   for frames received after the node reported `scale.known: True` (for mode none every frame; its
   ratio is the model's own, arbitrary scale).

A frame counts as "scale known" when its depth arrived after the first /diagnostics status with
scale.known True after at least one processed frame: frames are processed one at a time, so at most the frame in transit at that
moment could have been processed earlier, and it is then the frame whose state that status reports.

Target: |median ratio - 1| <= 0.1 with mode odometry. With an untrained checkpoint the pose
network's translations are arbitrary and the ratio means nothing; that run only checks the plumbing.
Results: benchmarks/results/odometry_scale[_quick].json.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, print_table, write_result
from benchmarks.node_latency import Client, NodeProc, build_checkpoint, node_command, ros_env
from semdepth_ros.conversions import stamp_ns

WORK = REPO / "runs" / "bench" / "odometry_scale"
NS = "/odo_bench"


def frame_ratio(gt: np.ndarray, pred: np.ndarray) -> tuple[float, int]:
    """median(GT/pred) over valid GT pixels with a finite positive prediction, and the pixel count."""
    valid = (gt > 0) & np.isfinite(pred) & (pred > 0)
    n = int(valid.sum())
    return (float(np.median(gt[valid] / pred[valid])) if n else float("nan")), n


def run_mode(mode: str, ckpt: Path, bag: Path, stamps: np.ndarray, drive: Path, args, log_dir: Path) -> dict:
    from semdepth_ros import conversions as C
    from semdepth_ros import kitti_to_bag as k2b
    from semdepth_core.data.kitti import read_depth_png

    domain = random.randint(1, 200)
    env = ros_env(domain, log_dir / "roslog", args.threads)
    env["SEMDEPTH_CACHE"] = str(WORK / "cache")
    extra = ["-p", f"scale.mode:={mode}", "-p", "diagnostics_period:=0.2", "-p", f"num_threads:={args.threads}"]
    cmd = node_command(ckpt, args.backend, NS, k2b.TOPIC_IMAGE, k2b.TOPIC_CAMERA_INFO, k2b.TOPIC_ODOM,
                       ("depth",), extra)
    node = NodeProc(cmd, env, log_dir / f"node_{mode}.log")
    cli = Client(domain, NS, "/odo_bench_unused/image", "/odo_bench_unused/info", "/odo_bench_unused/odom",
                 outputs=("depth",))
    out = {"mode": mode}
    try:
        cli.spin_until(lambda: cli.node.count_publishers(f"{NS}/depth") > 0, args.start_timeout,
                       "the node to serve", node.alive)
        rp = subprocess.Popen([sys.executable, "-m", "semdepth_ros.replay", str(bag), "--rate", str(args.rate),
                               "--topics", k2b.TOPIC_IMAGE, k2b.TOPIC_CAMERA_INFO, k2b.TOPIC_ODOM,
                               "--wait-for", k2b.TOPIC_IMAGE, k2b.TOPIC_ODOM, "--start-delay", "1.0",
                               "--linger", "5"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        replay_timeout = 120 + len(stamps) * 0.1 / args.rate * 2
        t0 = time.monotonic()
        while rp.poll() is None:
            if time.monotonic() - t0 > replay_timeout:
                rp.kill()
                raise TimeoutError(f"replay did not finish within {replay_timeout:.0f}s")
            cli.spin_for(0.1)
        replay_out = rp.stdout.read()
        if rp.returncode != 0:
            raise RuntimeError(f"replay failed (rc {rp.returncode}):\n{replay_out[-2000:]}")
        out["replay"] = next((ln for ln in replay_out.splitlines() if ln.startswith("replay:")), "")
        last = int(stamps[-1])
        try:  # the last image may have been dropped by the node's one-slot mailbox: then settle
            cli.spin_until(lambda: last in cli.arrival["depth"], args.tail_wait, "depth of the last frame",
                           node.alive)
        except TimeoutError:
            pass
        cli.spin_for(1.0)
        diag = cli.fresh_diag(time.monotonic(), count=2)
        # only statuses issued after a processed frame (node versions before the scale.known fix
        # reported True until the first frame even in odometry mode)
        known_t = next((t for t, d in cli.diags if d.get("scale.known") == "True"
                        and int(d.get("frames_processed", 0)) > 0), None)
        index = {int(s): i for i, s in enumerate(stamps)}
        frames = []
        for msg in cli.got["depth"]:
            t = stamp_ns(msg.header)
            if t not in index:
                continue
            f = index[t]
            pred = C.image_msg_to_array(msg).astype(np.float32)
            if msg.encoding == "16UC1":
                pred = np.where(pred > 0, pred / 1000.0, np.nan).astype(np.float32)
            gt = read_depth_png(drive / "proj_depth" / "groundtruth" / "image_02" / f"{f:010d}.png")
            if gt.shape != pred.shape:
                raise RuntimeError(f"GT {gt.shape} vs depth {pred.shape} for frame {f}")
            ratio, n = frame_ratio(gt, pred)
            arrived = cli.arrival["depth"][t]
            frames.append({"frame": f, "ratio": ratio, "gt_pixels": n,
                           "scale_known": mode != "odometry" or bool(known_t is not None and arrived > known_t),
                           "pred_median_m": float(np.nanmedian(pred))})
        use = [r for r in frames if (r["scale_known"] or mode != "odometry") and np.isfinite(r["ratio"])]
        ratios = np.array([r["ratio"] for r in use])
        out.update({
            "frames_in_bag": len(stamps), "depth_received": len(frames), "frames_used": len(use),
            "median_ratio": float(np.median(ratios)) if len(ratios) else float("nan"),
            "ratio_p10": float(np.percentile(ratios, 10)) if len(ratios) else float("nan"),
            "ratio_p90": float(np.percentile(ratios, 90)) if len(ratios) else float("nan"),
            "scale_value": diag.get("scale.value"), "scale_known": diag.get("scale.known"),
            "scale_samples": diag.get("scale.samples"), "scale_confidence": diag.get("scale.confidence"),
            "frames_processed": int(diag.get("frames_processed", 0)), "frames_dropped": int(diag.get("frames_dropped", 0)),
            "node_backend": diag.get("backend"), "network_input": diag.get("network_input"),
            "diag_level": int.from_bytes(diag["_level"], "little") if isinstance(diag.get("_level"), bytes) else diag.get("_level"),
            "diag_message": diag.get("_message"), "per_frame": frames,
        })
    except Exception as exc:  # noqa: BLE001 - report the failure with the node's log
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["node_log_tail"] = node.log()[-3000:]
    finally:
        cli.close()
        node.stop()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a trained, NOT velocity-supervised checkpoint")
    src.add_argument("--untrained", action="store_true",
                     help="random mobilenetv2_sg_compact checkpoint (plumbing check; ratios are meaningless)")
    ap.add_argument("--quick", action="store_true", help="12 frames (default 40), writes odometry_scale_quick.json")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--seed", type=int, default=901, help="drive seed (pick one not used for training)")
    ap.add_argument("--rate", type=float, default=0.5, help="replay rate (the node's mailbox drops frames it "
                    "cannot keep up with; pairs stay valid up to scale.max_frame_gap = 1 s of bag time)")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["odometry", "none"], choices=("odometry", "none"))
    ap.add_argument("--start-timeout", type=float, default=600.0)
    ap.add_argument("--tail-wait", type=float, default=30.0)
    args = ap.parse_args(argv)
    frames = args.frames or (12 if args.quick else 40)
    if not args.quick and frames < 40:
        ap.error("the real run needs --frames >= 40 (use --quick for a short plumbing check)")

    from semdepth_core.data.synthetic import generate_drive
    from semdepth_ros import kitti_to_bag as k2b

    t_start = time.monotonic()
    if args.untrained:
        ckpt = build_checkpoint("mobilenetv2_sg_compact", WORK / "ckpt")
    else:
        ckpt = Path(args.checkpoint).resolve()
        if not ckpt.is_file():
            ap.error(f"checkpoint not found: {ckpt}")
    work = WORK / f"drive_s{args.seed}_f{frames}"
    drive = generate_drive(work / "raw", frames=frames, seed=args.seed, width=640, height=192)
    bag = work / "bag"
    if bag.exists():
        import shutil

        shutil.rmtree(bag)  # regenerated drive -> fresh bag
    counts = k2b.convert(drive, bag, storage="mcap", log=lambda m: print(m, flush=True))
    stamps = k2b.read_timestamps_ns(drive / "image_02" / "timestamps.txt")
    print(f"drive {drive} ({frames} frames) -> {bag}: {counts}", flush=True)
    log_dir = work / "logs"
    rows = []
    for mode in args.modes:
        print(f"--- scale.mode {mode}", flush=True)
        r = run_mode(mode, ckpt, bag, stamps, drive, args, log_dir)
        if "error" in r:
            print(f"    FAILED: {r['error']}\n{r.get('node_log_tail', '')}", flush=True)
        else:
            print(f"    {r['frames_used']}/{r['depth_received']} frames used, median GT/pred {r['median_ratio']:.4g}, "
                  f"scale {r['scale_value']}", flush=True)
        rows.append(r)
    table = [{"scale.mode": r["mode"], "depth_frames": r.get("depth_received", 0), "used": r.get("frames_used", 0),
              "median_gt/pred": r.get("median_ratio", float("nan")), "p10": r.get("ratio_p10", float("nan")),
              "p90": r.get("ratio_p90", float("nan")), "node_scale": r.get("scale_value", ""),
              "ok": "error" not in r} for r in rows]
    print()
    text = print_table(table)
    odo = next((r for r in rows if r["mode"] == "odometry" and "error" not in r), None)
    payload = {
        "checkpoint": str(ckpt), "untrained": bool(args.untrained), "frames": frames, "seed": args.seed,
        "resolution": "640x192", "rate": args.rate, "backend": args.backend,
        "target": "|median GT/pred - 1| <= 0.1 with scale.mode odometry",
        "target_met": (abs(odo["median_ratio"] - 1.0) <= 0.1) if odo and np.isfinite(odo["median_ratio"]) else False,
        "note": ("UNTRAINED checkpoint: pose translations are arbitrary, the ratios are meaningless; this run only "
                 "checks the plumbing") if args.untrained else "",
        "wall_s": time.monotonic() - t_start, "table": table, "table_text": text, "runs": rows,
    }
    path = write_result("odometry_scale", payload, quick=args.quick)
    print(f"\ntarget met: {payload['target_met']}{' (untrained: meaningless)' if args.untrained else ''}\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
