"""depth_node image-in -> points-out latency and FPS at 640x192, per backend and model config.

    python -m benchmarks.node_latency [--quick] [--frames N] [--warmup W] [--threads T]
                                      [--checkpoint LABEL=PATH ...] [--image-size WxH] [--name NAME]
                                      [--backends torch onnxruntime] [--models resnet18 ...]
                                      [--transports raw compressed]

For every (backend, model) the real `depth_node` process is started exactly as in production
(`python -m semdepth_ros.node --ros-args --params-file config/depth.yaml ...`, network input
640x192, scale.mode none) on real DDS (localhost only, a random ROS domain). This process
publishes 640x192 rgb8 images + CameraInfo one at a time: publish, wait for the `points` output
carrying that stamp, publish the next (the node can always keep up, nothing is dropped).

Per frame: end-to-end latency = wall time from `publish()` of the image to the `points` message
arriving here (both measured with time.monotonic in this process). FPS = frames / wall time of
the measured loop. The node's own /diagnostics give the per-stage means (time_ms.network =
the networks alone, time_ms.total = decode -> publish inside the node); the means over exactly the
measured frames are recovered from the rolling means before and after (see `_stage_means`).

Share of time outside the networks (target <= 10 %):
    outside_e2e  = 1 - network_ms / mean end-to-end latency   (includes DDS transport both ways)
    outside_node = 1 - network_ms / time_ms.total             (decode, pre/post-processing, cloud, publish)

--checkpoint LABEL=PATH measures given checkpoints instead (e.g. the shipped default against an earlier
one), each at its own input-size policy, on whole 1242x375 KITTI frames unless --image-size says otherwise.

Models (randomly initialised; weights do not change the cost): resnet18, resnet18_sg (ESPNet +
PAC guidance), mobilenetv2_sg, mobilenetv2_sg_compact (no MobileNetV2 1280-ch head, narrow decoder, half-
width pose net; MobileNetV2 up to its 320-ch block 17). Checkpoints and the ONNX export cache live in runs/bench/node_latency/ so reruns
skip the export (its one-off cost shows up as the node's start-up time).

--transports raw compressed: also feed the node sensor_msgs/CompressedImage (JPEG, quality 90, as
compressed_image_transport sends it) with `image_transport:=compressed`; the node's `time_ms.decode` is then the
JPEG decode (for raw images it is the Image -> RGB conversion), reported as decode_ms.

--quick: 2 runs (mobilenetv2_sg_compact on torch and on onnxruntime), 1 warm-up + 5 frames.
Results: benchmarks/results/node_latency[_quick].json.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, machine_info, print_table, write_result  # noqa: F401

WORK = REPO / "runs" / "bench" / "node_latency"
MODELS = {
    "resnet18": ("training/configs/synthetic_resnet18.yaml", []),
    "resnet18_sg": ("training/configs/synthetic_resnet18_sg.yaml", []),
    "mobilenetv2_sg": ("training/configs/synthetic_mobilenetv2_sg.yaml", []),
    "mobilenetv2_sg_compact": ("training/configs/synthetic_mobilenetv2_sg.yaml",
                               ["model.mobilenet_last_block=17", "model.decoder_channels=[16,24,32,48,64]",
                                "model.pose_width=0.5"]),
}
BACKENDS = ("torch", "onnxruntime")
WIDTH, HEIGHT = 640, 192
NS = "/bench"
IMG, INFO, ODOM = "/bench_cam/image_raw", "/bench_cam/camera_info", "/bench_cam/odom"
FRAME = "camera_color_left_optical"
STAGE_WINDOW = 50  # semdepth_ros.node.StageTimes keeps the last 50 samples per stage


# ------------------------------------------------------------------------------------ checkpoints
def build_checkpoint(model: str, out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised checkpoint of `model` (cached: rebuilt only when missing)."""
    import torch

    path = out_dir / f"{model}.pt"
    if path.is_file():
        from semdepth_core.config import ConfigError, config_from_dict

        try:  # reuse only while the config schema still accepts it
            config_from_dict(torch.load(path, map_location="cpu", weights_only=True)["config"])
            return path
        except (ConfigError, KeyError, RuntimeError, ValueError):
            path.unlink()

    from semdepth_core.checkpoint import save_checkpoint
    from semdepth_core.config import config_to_dict, load_config
    from semdepth_core.nets.model import build_models

    cfg_path, extra = MODELS[model]
    cfg = load_config(REPO / cfg_path, ["model.semantic.weights=", "model.pretrained=", *extra])
    torch.manual_seed(seed)
    d, p = build_models(cfg.model, len(cfg.data.context))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"config": config_to_dict(cfg), "depth_model": d.state_dict(), "pose_net": p.state_dict()})
    return path


# ----------------------------------------------------------------------------------- processes
def ros_env(domain: int, log_dir: Path, threads: int | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(domain), ROS_LOG_DIR=str(log_dir), PYTHONUNBUFFERED="1",
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def node_command(checkpoint: Path, backend: str, ns: str, image: str, info: str, odom: str,
                 reliable_outputs=("points",), extra=(), transport: str = "raw") -> list[str]:
    image_topic = image + "/compressed" if transport == "compressed" else image
    cmd = [sys.executable, "-m", "semdepth_ros.node", "--ros-args", "--params-file", str(REPO / "config/depth.yaml"),
           "-r", f"__ns:={ns}", "-p", f"checkpoint:={checkpoint}", "-p", f"backend:={backend}",
           "-r", f"image:={image}", "-r", f"camera_info:={info}", "-r", f"odom:={odom}",
           "-p", f"image_transport:={transport}",
           "-p", f"qos_overrides.{image_topic}.subscription.reliability:=reliable",
           "-p", f"qos_overrides.{info}.subscription.reliability:=reliable",
           "-p", f"qos_overrides.{odom}.subscription.reliability:=reliable"]
    for t in reliable_outputs:
        cmd += ["-p", f"qos_overrides.{ns.rstrip('/')}/{t}.publisher.reliability:=reliable"]
    return cmd + list(extra)


class NodeProc:
    """The depth_node process with its log in a file; stop() = SIGINT, then kill after a timeout."""

    def __init__(self, cmd: list[str], env: dict, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class Client:
    """This side of the node: image/CameraInfo/odometry publishers (reliable), output recorders."""

    def __init__(self, domain: int, ns: str, image: str, info: str, odom: str, outputs=("points",)):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.rclpy = rclpy
        self.ns = ns.rstrip("/")
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node(f"bench_client_{os.getpid()}", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_img = self.node.create_publisher(Image, image, rel)
        self.pub_compressed = self.node.create_publisher(CompressedImage, image + "/compressed", rel)
        self.pub_info = self.node.create_publisher(CameraInfo, info, rel)
        self.pub_odom = self.node.create_publisher(Odometry, odom, rel)
        types = {"points": PointCloud2, "depth": Image, "semantic": Image, "depth/camera_info": CameraInfo}
        self.got: dict[str, list] = {k: [] for k in outputs}
        self.arrival: dict[str, dict[int, float]] = {k: {} for k in outputs}
        for name in outputs:
            self.node.create_subscription(types[name], f"{self.ns}/{name}",
                                          lambda m, k=name: self._record(k, m), rel)
        self.diags: list[tuple[float, dict]] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _record(self, key, msg):
        t = time.monotonic()
        self.got[key].append(msg)
        self.arrival[key].setdefault(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, t)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.startswith("depth_node"):
                d = {kv.key: kv.value for kv in st.values}
                d["_level"], d["_message"] = st.level, st.message
                self.diags.append((time.monotonic(), d))

    def spin_until(self, cond, timeout: float, what: str = "condition", alive=None):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            if alive is not None and not alive():
                raise RuntimeError(f"node exited while waiting for {what}")
            if self.diags and self.diags[-1][1].get("_level") in (b"\x02", 2):  # ERROR: e.g. model load failed
                raise RuntimeError(f"node reports ERROR while waiting for {what}: {self.diags[-1][1]['_message']}")
            self.ex.spin_once(timeout_sec=0.02)
        if not cond():
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def spin_for_cond(self, cond, seconds: float, alive=None) -> bool:
        """Spin until cond() holds (True) or `seconds` pass (False)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cond():
                return True
            if alive is not None and not alive():
                raise RuntimeError("the node process exited")
            self.ex.spin_once(timeout_sec=0.05)
        return bool(cond())

    def spin_for(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=min(0.02, max(0.0, end - time.monotonic())))

    def wait_serving(self, output: str, timeout: float, alive=None, transport: str = "raw"):
        pub = self.pub_compressed if transport == "compressed" else self.pub_img
        self.spin_until(lambda: pub.get_subscription_count() > 0
                        and self.node.count_publishers(f"{self.ns}/{output}") > 0
                        and self.pub_info.get_subscription_count() > 0, timeout, "the node to serve", alive)

    def header(self, t_ns: int):
        from std_msgs.msg import Header

        h = Header(frame_id=FRAME)
        h.stamp.sec, h.stamp.nanosec = divmod(int(t_ns), 1_000_000_000)
        return h

    def latest_diag(self) -> dict:
        return self.diags[-1][1] if self.diags else {}

    def fresh_diag(self, after: float, timeout: float = 10.0, count: int = 1) -> dict:
        """A /diagnostics status received at least `count` messages after monotonic time `after`."""
        self.spin_until(lambda: sum(1 for t, _ in self.diags if t > after) >= count, timeout, "fresh diagnostics")
        return self.diags[-1][1]

    def close(self):
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def sample_image(width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """A real KITTI frame cropped to width x height when the shared data is there, else a synthetic one."""
    try:
        from semdepth_core.data import kitti
        from semdepth_core.paths import kitti_raw_dir

        drive = kitti.KittiDrive(kitti_raw_dir() / "2011_09_26" / "2011_09_26_drive_0001_sync")
        img = drive.load_image(drive.frames[0])
        K = drive.calib.K(2).copy()
        if width > img.shape[1] or height > img.shape[0]:
            raise ValueError(f"{width}x{height} is larger than the KITTI frame")
        y0, x0 = max(0, img.shape[0] - height - 20), (img.shape[1] - width) // 2
        K[0, 2] -= x0
        K[1, 2] -= y0
        return np.ascontiguousarray(img[y0:y0 + height, x0:x0 + width]), K
    except Exception:  # noqa: BLE001 - no shared data: a textured synthetic image
        rng = np.random.default_rng(0)
        img = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        K = np.array([[0.58 * width * 1.0, 0, width / 2 - 0.5], [0, 1.92 * height * 1.0, height / 2 - 0.5], [0, 0, 1]])
        return img, K


# ----------------------------------------------------------------------------------- measuring
def _stage_means(before: dict, after: dict, window: int = STAGE_WINDOW) -> tuple[dict, str]:
    """Per-stage mean (ms) over exactly the frames processed between two diagnostics snapshots.

    The node reports rolling means over its last `window` samples. With n_after <= window both
    means cover every frame, so sum_after - sum_before is the measured frames' sum; with
    n_after - n_before >= window the final window holds measured frames only.
    """
    nb, na = int(before.get("frames_processed", 0)), int(after["frames_processed"])
    stages = sorted(k[8:] for k in after if k.startswith("time_ms."))
    out = {}
    if na <= window:
        how = "exact"
        for s in stages:
            sa = float(after[f"time_ms.{s}"]) * na
            sb = float(before.get(f"time_ms.{s}", 0.0)) * nb
            out[s] = (sa - sb) / max(1, na - nb)
    else:
        how = "exact" if na - nb >= window else "approx (window includes warm-up frames)"
        out = {s: float(after[f"time_ms.{s}"]) for s in stages}
    return out, how


@contextlib.contextmanager
def node_run(row: dict, checkpoint: Path, backend: str, threads: int, log_dir: Path, log_name: str,
             params=(), transport: str = "raw"):
    """The node process (`params`: extra K:=V parameters) and a client on a random ROS domain, for one run.

    Yields (node, client). An exception inside is recorded in `row` (error, node log tail) so the other runs
    still go; the client and the node are stopped either way."""
    domain = random.randint(1, 200)
    env = ros_env(domain, log_dir / "roslog", threads)
    env["SEMDEPTH_CACHE"] = str(WORK / "cache")
    extra = [a for kv in ("diagnostics_period:=0.25", f"num_threads:={threads}", *params) for a in ("-p", kv)]
    node = NodeProc(node_command(checkpoint, backend, NS, IMG, INFO, ODOM, ("points",), extra, transport), env,
                    log_dir / f"{log_name}.log")
    cli = Client(domain, NS, IMG, INFO, ODOM, outputs=("points",))
    try:
        yield node, cli
    except Exception as exc:  # noqa: BLE001 - one failing config is reported, the others still run
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["node_log_tail"] = node.log()[-2000:]
    finally:
        cli.close()
        node.stop()


def run_config(model: str, backend: str, frames: int, warmup: int, threads: int, ckpt_dir: Path,
               log_dir: Path, start_timeout: float, frame_timeout: float, checkpoint: Path | None = None,
               image_size: tuple[int, int] = (WIDTH, HEIGHT), transport: str = "raw") -> dict:
    """One (model, backend) run. `checkpoint`: a given checkpoint at its own input-size policy (else a random
    one of MODELS[model] at a fixed 640x192 network input); `image_size`: the published frames' (W, H)."""
    from semdepth_ros import conversions as C

    ckpt = checkpoint if checkpoint is not None else build_checkpoint(model, ckpt_dir)
    extra = [] if checkpoint is not None else [f"input_height:={HEIGHT}", f"input_width:={WIDTH}"]
    rgb, K = sample_image(*image_size)
    W_img, H_img = image_size
    row = {"model": model, "backend": backend, "image": f"{W_img}x{H_img}", "transport": transport}
    with node_run(row, ckpt, backend, threads, log_dir, f"node_{model}_{backend}_{transport}", extra,
                  transport) as (node, cli):
        t_start = time.monotonic()
        cli.wait_serving("points", start_timeout, node.alive, transport)
        row["startup_s"] = time.monotonic() - t_start
        lat = []
        snapshot = {}
        t_loop = None
        base = 1_700_000_000 * 1_000_000_000
        for i in range(warmup + frames):
            if i == warmup:  # diagnostics after the warm-up frames, before the measured ones
                snapshot = cli.fresh_diag(time.monotonic(), count=2)
                assert int(snapshot["frames_processed"]) >= warmup, snapshot  # resent warm-up frames count too
                t_loop = time.monotonic()
            t_ns = base + i * 100_000_000
            hdr = cli.header(t_ns)
            cli.pub_info.publish(C.make_camera_info(hdr, K, W_img, H_img))
            if transport == "compressed":
                msg, pub = C.rgb_to_compressed_image_msg(rgb, hdr, fmt="jpeg", quality=90), cli.pub_compressed
            else:
                msg, pub = C.rgb_to_image_msg(rgb, hdr), cli.pub_img
            row["message_bytes"] = len(msg.data)
            t_pub = time.monotonic()
            pub.publish(msg)
            if i < warmup:  # discovery: the node may match the CameraInfo after the first image; resend until served
                deadline = time.monotonic() + frame_timeout
                while not cli.spin_for_cond(lambda: t_ns in cli.arrival["points"], 2.0, node.alive):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"timed out after {frame_timeout}s waiting for points for warm-up frame {i}")
                    cli.pub_info.publish(C.make_camera_info(hdr, K, W_img, H_img))
                    pub.publish(msg)
                continue
            cli.spin_until(lambda: t_ns in cli.arrival["points"], frame_timeout, f"points for frame {i}", node.alive)
            if i >= warmup:
                lat.append((cli.arrival["points"][t_ns] - t_pub) * 1e3)
        t_end = time.monotonic()
        after = cli.fresh_diag(t_end, count=2)
        stages, how = _stage_means(snapshot, after)
        lat = np.array(lat)
        e2e = float(lat.mean())
        net = stages.get("network", float("nan"))
        total = stages.get("total", float("nan"))
        pts = cli.got["points"][-1]
        row.update({
            "frames": frames, "fps": frames / (t_end - t_loop),
            "e2e_ms_mean": e2e, "e2e_ms_median": float(np.median(lat)), "e2e_ms_p90": float(np.percentile(lat, 90)),
            "e2e_ms_min": float(lat.min()), "e2e_ms_max": float(lat.max()),
            "network_ms": net, "node_total_ms": total, "decode_ms": stages.get("decode", float("nan")), "node_latency_ms": stages.get("latency", float("nan")),
            "outside_e2e": 1.0 - net / e2e, "outside_node": 1.0 - net / total,
            "stages_ms": stages, "stage_means": how,
            "frames_dropped": int(after["frames_dropped"]), "frames_processed": int(after["frames_processed"]),
            "backend_reported": after.get("backend"), "network_input": after.get("network_input"),
            "cloud": f"{pts.width}x{pts.height}", "latencies_ms": lat.tolist(),
        })
    return row


# ------------------------------------------------------------------------------ camera-rate mode
def sgemm_gflops(threads: int, n: int = 1024, reps: int = 10) -> float:
    """Measured fp32 matrix-multiply rate of this machine at `threads` threads (GFLOP/s, best of reps)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.rand(n, n), torch.rand(n, n)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    finally:
        torch.set_num_threads(old)
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def network_gflop(checkpoint: Path, image_size: tuple[int, int]) -> dict:
    """FLOPs (GFLOP, multiply-add = 2) of one frame's depth net and semantic net at the node's input size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from semdepth_core.infer import load_predictor

    pred = load_predictor(checkpoint, backend="torch")
    w, h = pred.net_size_for(image_size)
    model = pred._runner.depth_model
    x = torch.rand(1, 3, h, w)
    out = {"network_input": f"{w}x{h}"}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            model(x, with_semantics=False)
        out["depth_gflop"] = fc.get_total_flops() / 1e9
        if model.semantic is not None:
            with FlopCounterMode(display=False) as fc:
                model.run_semantic(x)
            out["semantic_gflop"] = fc.get_total_flops() / 1e9
    return out


def run_stream(label: str, checkpoint: Path, backend: str, rate: float, seconds: float, threads: int,
               image_size: tuple[int, int], log_dir: Path, start_timeout: float, node_params=(),
               profile: str | None = None) -> dict:
    """Camera-rate run: frames published at `rate` Hz for `seconds` without waiting for the node (as a camera
    driver does); output rate = points messages received / seconds, latency per served frame, stage means
    from /diagnostics."""
    from semdepth_ros import conversions as C

    if profile:  # both processes: this one publishes the frames, the node inherits the environment
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    tag = "_".join([label, backend] + [kv.replace(":=", "-") for kv in node_params])
    rgb, K = sample_image(*image_size)
    W_img, H_img = image_size
    row = {"model": label, "backend": backend, "image": f"{W_img}x{H_img}", "rate_hz": rate, "seconds": seconds,
           "node_params": list(node_params), "fastdds_profile": profile or ""}
    with node_run(row, checkpoint, backend, threads, log_dir, f"stream_{tag}", node_params) as (node, cli):
        t_start = time.monotonic()
        cli.wait_serving("points", start_timeout, node.alive)
        row["startup_s"] = time.monotonic() - t_start
        base = 1_700_000_000 * 1_000_000_000
        msg = C.rgb_to_image_msg(rgb, cli.header(base))  # built once: a driver's cost is not the node's
        info = C.make_camera_info(cli.header(base), K, W_img, H_img)
        for i in range(3):  # warm-up, one at a time (discovery, first inference)
            t_ns = base + i * 1_000_000
            msg.header, info.header = cli.header(t_ns), cli.header(t_ns)
            deadline = time.monotonic() + start_timeout
            while not cli.spin_for_cond(lambda: t_ns in cli.arrival["points"], 2.0, node.alive):
                if time.monotonic() > deadline:
                    raise TimeoutError("no points for the warm-up frames")
                cli.pub_info.publish(info)
                cli.pub_img.publish(msg)
        cli.spin_for(2.0)  # the semantic thread's first result, settling
        snapshot = cli.fresh_diag(time.monotonic(), count=2)
        sent = {}
        period = 1.0 / rate
        t0 = time.monotonic()
        n = int(round(seconds * rate))
        for i in range(n):
            t_ns = base + 10_000_000_000 + i * int(period * 1e9)
            msg.header, info.header = cli.header(t_ns), cli.header(t_ns)
            sent[t_ns] = time.monotonic()
            cli.pub_info.publish(info)
            cli.pub_img.publish(msg)
            next_t = t0 + (i + 1) * period
            while time.monotonic() < next_t:
                cli.ex.spin_once(timeout_sec=max(0.0, min(0.005, next_t - time.monotonic())))
        t_end = time.monotonic()
        cli.spin_for(1.5)  # frames still in flight
        after = cli.fresh_diag(time.monotonic(), count=2)
        got = {t: cli.arrival["points"][t] for t in sent if t in cli.arrival["points"]}
        lat = np.array([(got[t] - sent[t]) * 1e3 for t in got]) if got else np.array([np.nan])
        stages, how = _stage_means(snapshot, after)
        row.update({
            "frames_sent": n, "send_hz": n / (t_end - t0), "frames_served": len(got),
            "served_fraction": len(got) / n, "output_hz": len(got) / (t_end - t0),
            "e2e_ms_median": float(np.median(lat)), "e2e_ms_p90": float(np.percentile(lat, 90)),
            "stages_ms": stages, "stage_means": how,
            "semantics_mode": after.get("semantics.mode"), "semantics_rate_hz": after.get("semantics.rate_hz"),
            "label_age_ms": after.get("semantics.label_age_ms"), "network_input": after.get("network_input"),
            "frames_dropped_in_node": int(after["frames_dropped"]) - int(snapshot.get("frames_dropped", 0)),
        })
    return row


def main_stream(args, given: dict, image_size) -> int:
    """--rate mode: each checkpoint x backend x node setting at camera rate; breakdown and FLOP bound."""
    profile = None if args.fastdds_profile == "" else str(Path(args.fastdds_profile or
                                                               REPO / "config" / "fastdds_large_images.xml"))
    gflops = sgemm_gflops(args.threads)
    settings = [tuple(s.split(",")) if s else () for s in (args.node_settings or [""])]
    log_dir = WORK / "logs"
    rows, t0 = [], time.monotonic()
    flops = {label: network_gflop(path, image_size) for label, path in given.items()}
    for label, path in given.items():
        for backend in args.backends or BACKENDS:
            for params in settings:
                print(f"--- {label} / {backend} / {' '.join(params) or 'defaults'} at {args.rate} Hz", flush=True)
                row = run_stream(label, path, backend, args.rate, args.seconds, args.threads, image_size, log_dir,
                                 args.start_timeout, params, profile)
                f = flops[label]
                row.update(f)
                net_gflop = f["depth_gflop"] + f.get("semantic_gflop", 0.0)
                row["sgemm_bound_ms"] = {"depth": 1e3 * f["depth_gflop"] / gflops,
                                         "semantics": 1e3 * f.get("semantic_gflop", 0.0) / gflops,
                                         "both": 1e3 * net_gflop / gflops}
                if "error" in row:
                    print(f"    FAILED: {row['error']}\n{row.get('node_log_tail', '')}", flush=True)
                else:
                    print(f"    {row['output_hz']:.1f} Hz out of {row['send_hz']:.1f} sent, e2e median "
                          f"{row['e2e_ms_median']:.0f} ms", flush=True)
                rows.append(row)
    keys = ("decode", "preprocess", "network", "postprocess", "semantics", "cloud", "publish", "total")
    table = []
    for r in rows:
        st = r.get("stages_ms", {})
        t = {"model": r["model"], "backend": r["backend"], "params": " ".join(r["node_params"]) or "defaults",
             "sent_hz": r.get("send_hz", float("nan")), "out_hz": r.get("output_hz", float("nan")),
             "e2e_med": r.get("e2e_ms_median", float("nan"))}
        t.update({f"{k}_ms": st.get(k, float("nan")) for k in keys})
        t["depth_bound_ms"] = r["sgemm_bound_ms"]["depth"]
        t["sem_bound_ms"] = r["sgemm_bound_ms"]["semantics"]
        t["ok"] = "error" not in r
        table.append(t)
    print()
    text = print_table(table)
    payload = {
        "mode": "camera rate", "rate_hz": args.rate, "seconds": args.seconds, "threads": args.threads,
        "resolution": f"{image_size[0]}x{image_size[1]}", "checkpoints": {k: str(v) for k, v in given.items()},
        "sgemm_gflops": gflops, "fastdds_profile": profile or "",
        "protocol": "frames published at rate_hz for `seconds` (reliable, the image message built once), as a camera "
                    "driver does; out_hz = points messages received per second; stage means from the node's "
                    "/diagnostics (ms per frame; semantics per semantic frame; publish includes cloud); "
                    "*_bound_ms = FLOPs / measured SGEMM rate at `threads` threads",
        "target_hz": 20.0,
        "target_met": {f"{r['model']}/{r['backend']}/{' '.join(r['node_params']) or 'defaults'}":
                       r.get("output_hz", 0.0) >= 20.0 for r in rows},
        "wall_s": time.monotonic() - t0, "table": table, "runs": rows, "table_text": text,
    }
    path = write_result(args.name, payload, quick=args.quick)
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 runs, 1 warm-up + 5 frames")
    ap.add_argument("--frames", type=int, default=None, help="measured frames per run (default 20, quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up frames per run (default 2, quick 1)")
    ap.add_argument("--threads", type=int, default=2, help="node num_threads (torch and onnxruntime)")
    ap.add_argument("--backends", nargs="+", default=None, choices=BACKENDS)
    ap.add_argument("--models", nargs="+", default=None, choices=list(MODELS))
    ap.add_argument("--start-timeout", type=float, default=600.0, help="node start-up limit incl. ONNX export (s)")
    ap.add_argument("--frame-timeout", type=float, default=120.0)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=PATH",
                    help="measure this checkpoint (its own input-size policy) instead of the random models; repeatable")
    ap.add_argument("--image-size", help="published frame size WxH (default 640x192; 1242x375 with --checkpoint)")
    ap.add_argument("--transports", nargs="+", default=["raw"], choices=("raw", "compressed"),
                    help="image input: raw Image and/or CompressedImage (JPEG) with image_transport:=compressed")
    ap.add_argument("--name", default=None, help="result name (benchmarks/results/NAME.json; default node_latency, "
                                                 "node_rate with --rate)")
    ap.add_argument("--rate", type=float, default=None,
                    help="camera-rate mode: publish at this rate (Hz) without waiting and measure the output rate "
                         "(default checkpoint: the shipped weights at 1242x375)")
    ap.add_argument("--seconds", type=float, default=None, help="camera-rate mode: seconds of frames (default 20, quick 5)")
    ap.add_argument("--node-settings", nargs="+", default=None, metavar="K:=V[,K:=V]",
                    help="camera-rate mode: node parameter sets to compare, e.g. semantics.rate:=0.0 (default: defaults)")
    ap.add_argument("--fastdds-profile", default=None,
                    help="camera-rate mode: FASTDDS_DEFAULT_PROFILES_FILE for both sides (default: the shipped "
                         "config/fastdds_large_images.xml, as the launch file does; '' for none)")
    args = ap.parse_args(argv)
    frames = args.frames or (5 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    given = {}
    for text in args.checkpoint:
        label, sep, path = text.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--checkpoint {text!r}: expected LABEL=PATH of an existing checkpoint")
        given[label] = Path(path).resolve()
    if args.rate is not None:
        if args.rate <= 0:
            ap.error("--rate must be > 0")
        if not given:
            from semdepth_ros.params import shipped_checkpoint

            given["default"] = shipped_checkpoint()
        args.seconds = args.seconds or (5.0 if args.quick else 20.0)
        args.name = args.name or "node_rate"
        size = tuple(int(v) for v in args.image_size.lower().split("x")) if args.image_size else (1242, 375)
        if args.backends is None:
            args.backends = ["onnxruntime"]
        return main_stream(args, given, size)
    args.name = args.name or "node_latency"
    image_size = tuple(int(v) for v in args.image_size.lower().split("x")) if args.image_size else \
        ((1242, 375) if given else (WIDTH, HEIGHT))
    if given:
        runs = [(m, b) for m in given for b in (args.backends or BACKENDS)]
    elif args.quick and not (args.backends or args.models):
        runs = [("mobilenetv2_sg_compact", "torch"), ("mobilenetv2_sg_compact", "onnxruntime")]
    else:
        runs = [(m, b) for m in (args.models or list(MODELS)) for b in (args.backends or BACKENDS)]
    runs = [(m, b, t) for m, b in runs for t in args.transports]
    log_dir = WORK / "logs"
    rows = []
    t0 = time.monotonic()
    for model, backend, transport in runs:
        print(f"--- {model} / {backend} / {transport}", flush=True)
        row = run_config(model, backend, frames, warmup, args.threads, WORK / "ckpt", log_dir,
                         args.start_timeout, args.frame_timeout, given.get(model), image_size, transport)
        if "error" in row:
            print(f"    FAILED: {row['error']}\n{row.get('node_log_tail', '')}", flush=True)
        else:
            print(f"    e2e {row['e2e_ms_mean']:.1f} ms, network {row['network_ms']:.1f} ms, "
                  f"outside {100 * row['outside_e2e']:.1f} %, {row['fps']:.2f} FPS", flush=True)
        rows.append(row)
    table = [{"model": r["model"], "backend": r["backend"], "image": r.get("image", ""),
              "transport": r.get("transport", "raw"), "kB": r.get("message_bytes", 0) / 1e3,
              "decode_ms": r.get("decode_ms", float("nan")), "fps": r.get("fps", float("nan")),
              "e2e_ms": r.get("e2e_ms_mean", float("nan")), "e2e_p90": r.get("e2e_ms_p90", float("nan")),
              "net_ms": r.get("network_ms", float("nan")), "node_total_ms": r.get("node_total_ms", float("nan")),
              "outside_e2e_%": 100 * r.get("outside_e2e", float("nan")),
              "outside_node_%": 100 * r.get("outside_node", float("nan")),
              "startup_s": r.get("startup_s", float("nan")), "ok": "error" not in r} for r in rows]
    print()
    text = print_table(table)
    ok = [r for r in rows if "error" not in r]
    payload = {
        "resolution": f"{image_size[0]}x{image_size[1]}", "frames": frames,
        "checkpoints": {k: str(v) for k, v in given.items()}, "warmup": warmup, "threads": args.threads,
        "protocol": "one frame at a time over real DDS (reliable), latency = publish -> points received; "
                    "network_ms = node's time_ms.network mean over the measured frames",
        "target_outside_share": 0.10,
        "target_met": {f"{r['model']}/{r['backend']}/{r['transport']}": r["outside_e2e"] <= 0.10 for r in ok},
        "wall_s": time.monotonic() - t0, "table": table, "runs": rows, "table_text": text,
    }
    path = write_result(args.name, payload, quick=args.quick)
    print(f"\nwrote {path}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
