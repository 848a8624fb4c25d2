"""Camera-sized images between two processes over Fast DDS: delivery and latency per image QoS and transport profile.

    python -m benchmarks.image_qos [--quick] [--seconds S] [--sizes 1242x375 1920x1080] [--rates 10 30]
                                   [--settings best_effort reliable ...] [--profile PATH] [--name NAME]

Every cell starts two separate Python processes (this script with --role sub and --role pub) on real
DDS: rclpy, RMW rmw_fastrtps_cpp, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS domain of its own.
The publisher waits until it sees the subscriber (get_subscription_count), settles 0.5 s, then publishes
rgb8 sensor_msgs/Image frames (one pre-built message; header.stamp = wall clock right before publish(),
header.frame_id = sequence number) at a fixed rate for S seconds and lingers 1.5 s (reliable repairs).
The subscriber records, per received frame, its sequence number and the wall clock in the callback.

Transport settings (both processes use the same one; keep last 5 everywhere, as ROS sensor-data QoS):
    best_effort            best-effort QoS, Fast DDS defaults (no XML profile)
    reliable               reliable QoS, Fast DDS defaults
    best_effort+profile    best-effort QoS, FASTDDS_DEFAULT_PROFILES_FILE=<profile> in both processes
                           (FASTRTPS_DEFAULT_PROFILES_FILE where Fast DDS 2.x is installed)
    reliable+profile       reliable QoS, the profile in both processes
    extra (not in the default set): best_available[+profile] (publisher reliable, subscriber BEST_AVAILABLE),
    best_effort+profile_sub / reliable+profile_sub (the profile in the subscriber only: a camera driver
    started without it).
--discovery SUBNET runs both processes with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET instead (with LOCALHOST,
rmw_fastrtps appends its own default SHM and UDP transports to the profile's).

Per cell: sent Hz and received Hz (frames / publishing window), received fraction (distinct frames
received / sent), latency mean / p95 / max (stamp -> subscriber callback, same machine clock, ms), and CPU
of each process over the publishing window (process CPU time of all its threads / wall time, % of one core;
the subscriber samples its CPU time against CLOCK_MONOTONIC, shared by both processes).
Each worker also reports the Fast DDS shared-memory segments it has mapped (/proc/self/maps); with the
profile the tool fails loudly unless a segment of the profile's segment_size is mapped in both processes
and neither printed an XML parser error, so a profile that is not loaded cannot pass as "no effect".

--quick: 1242x375 at 10 Hz, 3 s per cell (results/image_qos_quick.json). Full: all sizes and rates, 8 s per
cell (results/image_qos.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, print_table, write_result  # noqa: E402

PROFILE = REPO / "config" / "fastdds_large_images.xml"
WORK = REPO / "runs" / "bench" / "image_qos"
TOPIC = "/image_qos_bench/image"
SIZES = ((1242, 375), (1920, 1080))
RATES = (10.0, 30.0)
SETTINGS = ("best_effort", "reliable", "best_effort+profile", "reliable+profile")
EXTRA_SETTINGS = ("best_available", "best_available+profile", "best_effort+profile_sub", "reliable+profile_sub")
DEPTH = 5
# Fast DDS 3.x reads the first, 2.x the second
PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
XML_ERROR = re.compile(r"XMLPARSER|XMLPROFILES|XMLParser|Error.*(profile|XML)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ workers
def _qos(reliability: str):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE,
           "best_available": ReliabilityPolicy.BEST_AVAILABLE}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def shm_segments() -> dict[str, int]:
    """Fast DDS shared-memory data segments mapped by this process: {file name: size in bytes}."""
    sizes: dict[str, int] = {}
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return sizes
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not parts[5].startswith("/dev/shm/"):
            continue
        name = os.path.basename(parts[5])
        if not name.startswith(("fastdds_", "fastrtps_")) or "port" in name or name.endswith("_el"):
            continue
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        sizes[name] = sizes.get(name, 0) + hi - lo
    return sizes


def _worker_node(role: str):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node(f"image_qos_{role}_{os.getpid()}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    return rclpy, ctx, node, ex


def run_pub(args) -> dict:
    import numpy as np
    from sensor_msgs.msg import Image

    from semdepth_ros.conversions import rgb_to_image_msg

    rclpy, ctx, node, ex = _worker_node("pub")
    pub = node.create_publisher(Image, TOPIC, _qos(args.reliability))
    out = {"role": "pub", "shm_segments": shm_segments()}
    try:
        deadline = time.monotonic() + args.match_timeout
        while pub.get_subscription_count() < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber matched within {args.match_timeout} s")
            ex.spin_once(timeout_sec=0.05)
        t_match = time.monotonic()
        while time.monotonic() < t_match + args.settle:
            ex.spin_once(timeout_sec=0.05)
        rng = np.random.default_rng(0)
        msg = rgb_to_image_msg(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
        n = max(1, int(round(args.seconds * args.rate)))
        period = 1.0 / args.rate
        late = 0
        cpu0, t0 = time.process_time(), time.monotonic()
        for i in range(n):
            target = t0 + i * period
            now = time.monotonic()
            if now < target:
                time.sleep(target - now)
            elif now > target + period:
                late += 1
            msg.header.frame_id = str(i)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
            pub.publish(msg)
        t1, cpu1 = time.monotonic(), time.process_time()
        window = (t1 - t0) + period  # the last frame owns one period too
        out.update(sent=n, t0=t0, t1=t0 + window, window_s=window, sent_hz=n / window, late_frames=late,
                   cpu_pct=100.0 * (cpu1 - cpu0) / window, bytes_per_frame=len(msg.data),
                   shm_segments=shm_segments())
        end = time.monotonic() + args.linger
        while time.monotonic() < end:  # keep the writer alive for reliable repairs
            ex.spin_once(timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return out


def run_sub(args) -> dict:
    from sensor_msgs.msg import Image

    rclpy, ctx, node, ex = _worker_node("sub")
    recv: dict[int, tuple[int, int]] = {}  # seq -> (stamp ns, receive ns)
    state = {"bad": 0}
    cpu = []  # (monotonic s, process CPU s): the driver reads the CPU over the publisher's window from it

    def on_image(msg):
        t = time.time_ns()
        try:
            seq = int(msg.header.frame_id)
        except ValueError:
            state["bad"] += 1
            return
        if len(msg.data) != msg.height * msg.step:
            state["bad"] += 1
            return
        recv.setdefault(seq, (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, t))

    node.create_subscription(Image, TOPIC, on_image, _qos(args.reliability))
    stop = Path(args.stop_file)
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop.exists() and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
            cpu.append((time.monotonic(), time.process_time()))
    finally:
        segs = shm_segments()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return {"role": "sub", "received": sorted(recv.items()), "bad_messages": state["bad"], "cpu_samples": cpu,
            "shm_segments": segs, "timed_out": not stop.exists()}


def cpu_between(samples: list, t0: float, t1: float) -> float:
    """% of one core used between monotonic t0 and t1, from (t, cpu) samples (linear between samples)."""
    if len(samples) < 2 or t1 <= t0 or samples[0][0] > t0 or samples[-1][0] < t1:
        return float("nan")

    def at(t):
        for (ta, ca), (tb, cb) in zip(samples, samples[1:]):
            if ta <= t <= tb:
                return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
        return float("nan")

    return 100.0 * (at(t1) - at(t0)) / (t1 - t0)


# ------------------------------------------------------------------------------------------ driver
def profile_segment_size(profile: Path) -> int | None:
    """The SHM segment_size the profile asks for (None: no SHM transport in it). Raises on a malformed file."""
    root = ET.parse(profile).getroot()

    def local(el):
        return el.tag.split("}")[-1]

    used = {t.text.strip() for el in root.iter() if local(el) == "userTransports"
            for t in el if local(t) == "transport_id" and t.text}
    for desc in root.iter():
        if local(desc) != "transport_descriptor":
            continue
        fields = {local(c): (c.text or "").strip() for c in desc}
        if fields.get("type") == "SHM" and fields.get("transport_id") in used:
            return int(fields.get("segment_size") or 512 * 1024)
    return None


def profile_env_vars() -> tuple[str, ...]:
    """The profile variable(s) the installed Fast DDS reads: FASTDDS_DEFAULT_PROFILES_FILE for 3.x (ROS 2 Kilted:
    rmw_fastrtps warns that FASTRTPS_DEFAULT_PROFILES_FILE is deprecated), FASTRTPS_DEFAULT_PROFILES_FILE for 2.x
    (Humble, Jazzy); both when both or neither library is found."""
    ament = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    dirs = [Path(sys.prefix) / "lib"] + [Path(p) / "lib" for p in ament if p]
    v3 = any(d.is_dir() and any(d.glob("libfastdds.so*")) for d in dirs)
    v2 = any(d.is_dir() and any(d.glob("libfastrtps.so*")) for d in dirs)
    return PROFILE_ENV[:1] if v3 and not v2 else PROFILE_ENV[1:] if v2 and not v3 else PROFILE_ENV


def ros_env(domain: int, log_dir: Path, profile: Path | None, discovery: str = "LOCALHOST") -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_AUTOMATIC_DISCOVERY_RANGE=discovery,
               ROS_DOMAIN_ID=str(domain), RMW_IMPLEMENTATION="rmw_fastrtps_cpp", ROS_LOG_DIR=str(log_dir),
               PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0", SKIP_DEFAULT_XML_FILE="1")
    for k in (*PROFILE_ENV, "RMW_FASTRTPS_USE_QOS_FROM_XML", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_STATIC_PEERS"):
        env.pop(k, None)
    if profile is not None:
        for k in profile_env_vars():
            env[k] = str(profile)
    return env


def parse_setting(setting: str) -> tuple[str, str, str]:
    """setting -> (publisher reliability, subscriber reliability, profile on: none|both|sub)."""
    qos, _, prof = setting.partition("+")
    if qos == "best_available":
        return "reliable", "best_available", {"": "none", "profile": "both", "profile_sub": "sub"}[prof]
    return qos, qos, {"": "none", "profile": "both", "profile_sub": "sub"}[prof]


def _check_worker(name: str, proc: subprocess.CompletedProcess | subprocess.Popen, log: Path, out: Path,
                  want_segment: int | None) -> dict:
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")) if log.exists() else ""
    bad = [ln for ln in text.splitlines() if XML_ERROR.search(ln)]
    if bad:
        raise RuntimeError(f"{name}: Fast DDS reported an XML/profile problem:\n" + "\n".join(bad[:10]))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{text[-3000:]}")
    res = json.loads(out.read_text())
    if want_segment is not None and not any(s >= want_segment for s in res["shm_segments"].values()):
        raise RuntimeError(f"{name}: the profile asks for a {want_segment} B shared-memory segment but the process "
                           f"maps {res['shm_segments'] or 'none'}: the profile was not applied")
    return res


def run_cell(width: int, height: int, rate: float, setting: str, seconds: float, domain: int, profile: Path,
             log_dir: Path, timeout: float = 60.0, discovery: str = "LOCALHOST") -> dict:
    """One pub/sub pair in two fresh processes; returns the table row (raises when the run itself failed)."""
    pub_rel, sub_rel, prof_on = parse_setting(setting)
    tag = f"{width}x{height}_{rate:g}hz_{setting.replace('+', '_')}_d{domain}"
    cell_dir = log_dir / tag
    shutil.rmtree(cell_dir, ignore_errors=True)
    cell_dir.mkdir(parents=True)
    want = profile_segment_size(profile) if prof_on != "none" else None
    env_sub = ros_env(domain, cell_dir / "roslog", profile if prof_on in ("both", "sub") else None, discovery)
    env_pub = ros_env(domain, cell_dir / "roslog", profile if prof_on == "both" else None, discovery)
    me = [sys.executable, str(Path(__file__).resolve())]
    stop = cell_dir / "stop"
    sub_out, pub_out = cell_dir / "sub.json", cell_dir / "pub.json"
    sub_log, pub_log = cell_dir / "sub.log", cell_dir / "pub.log"
    with open(sub_log, "w") as sl, open(pub_log, "w") as pl:
        sub = subprocess.Popen(me + ["--role", "sub", "--reliability", sub_rel, "--out", str(sub_out),
                                     "--stop-file", str(stop), "--max-seconds", str(timeout + seconds)],
                               cwd=REPO, env=env_sub, stdout=sl, stderr=subprocess.STDOUT)
        try:
            pub = subprocess.run(me + ["--role", "pub", "--reliability", pub_rel, "--out", str(pub_out),
                                       "--width", str(width), "--height", str(height), "--rate", str(rate),
                                       "--seconds", str(seconds)],
                                 cwd=REPO, env=env_pub, stdout=pl, stderr=subprocess.STDOUT, timeout=timeout + seconds)
            stop.touch()
            sub.wait(timeout=30)
        finally:
            stop.touch()
            if sub.poll() is None:
                sub.kill()
                sub.wait()
    p = _check_worker("publisher", pub, pub_log, pub_out, want if prof_on == "both" else None)
    s = _check_worker("subscriber", sub, sub_log, sub_out, want)
    got = {int(seq): tuple(v) for seq, v in s["received"] if 0 <= int(seq) < p["sent"]}
    lat = sorted((r - st) / 1e6 for st, r in got.values())
    n = len(got)

    def pct(q):
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    return {"image": f"{width}x{height}", "rate_hz": rate, "setting": setting, "pub_qos": pub_rel, "sub_qos": sub_rel,
            "profile": prof_on, "sent": p["sent"], "received": n, "sent_hz": p["sent_hz"],
            "recv_hz": n / p["window_s"], "recv_frac": n / p["sent"],
            "lat_ms_mean": sum(lat) / n if n else float("nan"), "lat_ms_p95": pct(0.95),
            "lat_ms_max": lat[-1] if lat else float("nan"), "pub_cpu_pct": p["cpu_pct"],
            "sub_cpu_pct": cpu_between(s["cpu_samples"], p["t0"], p["t1"]),
            "late_frames": p["late_frames"], "bytes_per_frame": p["bytes_per_frame"], "domain": domain,
            "pub_shm_segments": p["shm_segments"], "sub_shm_segments": s["shm_segments"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1242x375 at 10 Hz, 3 s per cell")
    ap.add_argument("--seconds", type=float, default=None, help="publishing time per cell (default 8, quick 3)")
    ap.add_argument("--sizes", nargs="+", default=None, help="WxH ... (default 1242x375 1920x1080)")
    ap.add_argument("--rates", nargs="+", type=float, default=None, help="Hz ... (default 10 30)")
    ap.add_argument("--settings", nargs="+", default=None, choices=SETTINGS + EXTRA_SETTINGS)
    ap.add_argument("--profile", type=Path, default=PROFILE, help="Fast DDS XML profile for the +profile settings")
    ap.add_argument("--name", default="image_qos", help="result name (benchmarks/results/NAME.json)")
    ap.add_argument("--discovery", default="LOCALHOST", choices=("LOCALHOST", "SUBNET"),
                    help="ROS_AUTOMATIC_DISCOVERY_RANGE of both processes (LOCALHOST: rmw_fastrtps adds its own "
                         "default SHM + UDP transports after the profile's; SUBNET: the profile's transports alone)")
    # worker side
    ap.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    ap.add_argument("--reliability", default="best_effort", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=1242, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, default=375, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--match-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    ap.add_argument("--settle", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--linger", type=float, default=1.5, help=argparse.SUPPRESS)
    ap.add_argument("--stop-file", help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=120.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role:
        res = run_pub(args) if args.role == "pub" else run_sub(args)
        Path(args.out).write_text(json.dumps(res))
        return 0

    seconds = args.seconds or (3.0 if args.quick else 8.0)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] if args.sizes else \
        ([SIZES[0]] if args.quick else list(SIZES))
    rates = args.rates or ([RATES[0]] if args.quick else list(RATES))
    settings = args.settings or list(SETTINGS)
    profile = args.profile.resolve()
    segment = profile_segment_size(profile)  # malformed XML fails here, before any run
    base = random.randint(1, 100)
    rows, t0 = [], time.monotonic()
    for i, (size, rate, setting) in enumerate((z, r, s) for z in sizes for r in rates for s in settings):
        domain = 1 + (base + i) % 200
        print(f"--- {size[0]}x{size[1]} @ {rate:g} Hz, {setting} (domain {domain})", flush=True)
        try:
            row = run_cell(size[0], size[1], rate, setting, seconds, domain, profile, WORK / "logs",
                           discovery=args.discovery)
            print(f"    sent {row['sent_hz']:.1f} Hz, received {row['recv_hz']:.1f} Hz "
                  f"({100 * row['recv_frac']:.0f} %), latency {row['lat_ms_mean']:.1f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported; a profile that does not load fails the whole run below
            row = {"image": f"{size[0]}x{size[1]}", "rate_hz": rate, "setting": setting,
                   "error": f"{type(exc).__name__}: {exc}"}
            print(f"    FAILED: {row['error']}", flush=True)
        rows.append(row)
    cols = ["image", "rate_hz", "setting", "sent_hz", "recv_hz", "recv_frac", "lat_ms_mean", "lat_ms_p95",
            "pub_cpu_pct", "sub_cpu_pct"]
    table = [{c: r.get(c, float("nan")) for c in cols} | {"ok": "error" not in r} for r in rows]
    print()
    text = print_table(table)
    payload = {
        "seconds_per_cell": seconds, "depth": DEPTH, "topic": TOPIC, "rmw": "rmw_fastrtps_cpp",
        "discovery_range": args.discovery,
        "profile": str(profile.relative_to(REPO) if profile.is_relative_to(REPO) else profile),
        "profile_segment_size": segment, "profile_env": list(profile_env_vars()),
        "net.core.rmem_max": _sysctl("net.core.rmem_max"), "net.core.wmem_max": _sysctl("net.core.wmem_max"),
        "protocol": "two processes on one host, LOCALHOST discovery, own ROS domain per cell; publisher waits for the "
                    "subscriber, settles 0.5 s, publishes rgb8 frames at a fixed rate; recv_frac = distinct frames "
                    "received / sent; latency = header.stamp (wall clock before publish) -> subscriber callback; "
                    "cpu = process CPU time over the active window, % of one core",
        "wall_s": time.monotonic() - t0, "table": table, "runs": rows, "table_text": text,
    }
    path = write_result(args.name, payload, quick=args.quick)
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


def _sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    sys.exit(main())
