"""Replay a rosbag2 (mcap or sqlite3) with rclpy, optionally scoring the depth node against the
bag's Velodyne scans.

    python -m semdepth_ros.replay BAG [--rate R] [--loop] [--topics T ...] [--start-delay S]
                                      [--clock] [--evaluate [--namespace NS] [--depth-topic depth]
                                      [--eval-out FILE]]

Reading uses `rosbags` (no rosbag2_py here). Each message's CDR bytes are turned into the rclpy
message of the same type with `rclpy.serialization.deserialize_message` - exact, fast and it
validates the bytes, so a corrupted message is skipped with a warning instead of reaching
subscribers - and published with the bag's recorded QoS (so /tf_static keeps its transient-local
durability) and the original relative timing divided by --rate. Topics whose message package is
not importable in this Python (e.g. tf2_msgs here) are skipped with one warning each.

--evaluate: subscribes to the depth node's `depth` output (32FC1, metres; `/NS/depth` with
--namespace NS, or --depth-topic). For every depth image
it takes the bag's Velodyne cloud nearest in time (within --eval-tolerance), moves it into the
image's frame with the bag's /tf_static tree (kitti_to_bag stores velo_link -> ... ->
camera_color_left_optical), projects it through the bag's CameraInfo (rescaled to the depth
image size with the half-pixel rule) and accumulates KITTI metrics both median-scaled and
unscaled (Garg crop, 1e-3..80 m). A running line is logged per frame and a final summary line
printed; --eval-out writes the summary as JSON.

A missing, corrupted or truncated bag gives a clear error and exit status 2; never a hang.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semdepth_ros.conversions import stamp_ns
from semdepth_ros.evaluation import DepthEvaluator, summary_line


class ReplayError(RuntimeError):
    """The bag cannot be replayed (missing, corrupted, truncated, nothing to publish)."""


# --------------------------------------------------------------------------------------------- bag
def open_reader(path: str | Path):
    """An opened rosbags Reader, or ReplayError with the reason."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not p.exists():
        raise ReplayError(f"{p}: bag does not exist")
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise ReplayError(f"{p}: not a rosbag2 folder (metadata.yaml missing)")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, but sqlite/mcap/yaml errors also surface
        raise ReplayError(f"{p}: cannot open bag ({type(exc).__name__}: {exc})") from None
    return reader


def iter_messages(reader, connections):
    """reader.messages() with storage errors turned into ReplayError (truncated/corrupted files)."""
    count = 0
    it = reader.messages(connections=connections)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise ReplayError(f"{reader.path}: bag is corrupted or truncated after {count} messages "
                              f"({type(exc).__name__}: {exc})") from None
        count += 1
        yield item


def import_msg_class(msgtype: str):
    """'pkg/msg/Name' -> the rclpy message class; ImportError/AttributeError when not available."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # 'pkg/Name'
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ImportError(f"bad message type name {msgtype!r}")
    mod = importlib.import_module(f"{parts[0]}.{parts[1]}")
    return getattr(mod, parts[2])


def qos_from_bag(profiles):
    """rclpy QoSProfile from the bag's recorded offered QoS (defaults: reliable, volatile, depth 10)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    if profiles:
        p = profiles[0]
        if p.durability.name == "TRANSIENT_LOCAL":
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        if p.reliability.name == "BEST_EFFORT":
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if p.history.name == "KEEP_ALL":
            qos.history = HistoryPolicy.KEEP_ALL
        elif p.depth and p.depth > 0:
            qos.depth = int(p.depth)
    return qos


@dataclass
class TopicPlan:
    topic: str
    msgtype: str
    connections: list
    msg_class: type | None = None
    qos: object = None


def plan_topics(reader, wanted: list[str] | None, log) -> dict[str, TopicPlan]:
    """Topics to publish: those of the bag (or `wanted`) whose message class imports."""
    plans: dict[str, TopicPlan] = {}
    for conn in reader.connections:
        plans.setdefault(conn.topic, TopicPlan(conn.topic, conn.msgtype, [])).connections.append(conn)
    if wanted:
        unknown = [t for t in wanted if t not in plans]
        if unknown:
            raise ReplayError(f"{reader.path}: topic(s) {unknown} not in the bag (it has {sorted(plans)})")
        plans = {t: plans[t] for t in wanted}
    out = {}
    for topic, plan in plans.items():
        try:
            plan.msg_class = import_msg_class(plan.msgtype)
        except (ImportError, AttributeError) as exc:
            hint = ""
            if plan.msgtype.split("/")[0] == "tf2_msgs":
                hint = ("; tf2_msgs has no PyPI wheel, so the [ros] extra cannot bring it: use a ROS install "
                        "(`apt install ros-$ROS_DISTRO-tf2-msgs`, then `source /opt/ros/$ROS_DISTRO/setup.bash`). "
                        "--evaluate still reads the bag's /tf_static itself")
            log(f"warning: skipping {topic}: message type {plan.msgtype} is not importable here ({exc}){hint}")
            continue
        plan.qos = qos_from_bag(plan.connections[0].ext.offered_qos_profiles)
        out[topic] = plan
    if not out:
        raise ReplayError(f"{reader.path}: nothing to publish (no importable topics selected)")
    return out


# ------------------------------------------------------------------------------------------- tf
class TfTree:
    """Static transform tree: edges parent -> child carrying T_parent_child."""

    def __init__(self):
        self.parent: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, parent: str, child: str, T: np.ndarray) -> None:
        self.parent[child.lstrip("/")] = (parent.lstrip("/"), np.asarray(T, dtype=np.float64))

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        frame = frame.lstrip("/")
        T = np.eye(4)
        seen = set()
        while frame in self.parent:
            if frame in seen:
                raise ValueError(f"tf cycle at {frame!r}")
            seen.add(frame)
            p, T_pc = self.parent[frame]
            T = T_pc @ T
            frame = p
        return frame, T

    def lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source (maps points in `source` to `target`)."""
        r1, T_r_t = self._to_root(target)
        r2, T_r_s = self._to_root(source)
        if r1 != r2:
            raise LookupError(f"no static transform between {target!r} and {source!r} "
                              f"(roots {r1!r} and {r2!r}; known frames: {sorted(self.parent)})")
        return np.linalg.inv(T_r_t) @ T_r_s


def load_static_tf(reader) -> TfTree:
    """The bag's /tf_static transforms (deserialised with rosbags; tf2_msgs need not be importable)."""
    from semdepth_ros.kitti_to_bag import _typestore, matrix_from_quat

    tree = TfTree()
    conns = [c for c in reader.connections if c.topic == "/tf_static"]
    if not conns:
        return tree
    ts = _typestore()
    for conn, _, raw in iter_messages(reader, conns):
        msg = ts.deserialize_cdr(raw, conn.msgtype)
        for tr in msg.transforms:
            T = np.eye(4)
            q, t = tr.transform.rotation, tr.transform.translation
            T[:3, :3] = matrix_from_quat((q.x, q.y, q.z, q.w))
            T[:3, 3] = (t.x, t.y, t.z)
            tree.add(tr.header.frame_id, tr.child_frame_id, T)
    return tree


# ------------------------------------------------------------------------------------------ replay
def replay(args, log=print) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import deserialize_message

    if not args.rate > 0 or not math.isfinite(args.rate):
        raise ReplayError(f"--rate must be a positive number, got {args.rate}")
    reader = open_reader(args.bag)
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    try:
        plans = plan_topics(reader, args.topics, log)
        evaluator = None
        if args.evaluate:
            evaluator = DepthEvaluator(load_static_tf(reader), tolerance_s=args.eval_tolerance,
                                       garg_crop=not args.no_garg_crop)
        rclpy.init(args=None, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        node = Node("semdepth_replay")
        pubs = {t: node.create_publisher(p.msg_class, t, p.qos) for t, p in plans.items()}
        clock_pub = None
        if args.clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        received = {"depth": 0}
        if evaluator is not None:
            from sensor_msgs.msg import Image

            def on_depth(msg):
                received["depth"] += 1
                try:
                    rec = evaluator.evaluate(msg)
                except Exception as exc:  # noqa: BLE001 - a bad depth image must not end the replay
                    evaluator.failed += 1
                    log(f"eval: depth image skipped ({type(exc).__name__}: {exc})")
                    return
                if rec is None:
                    log(f"eval: no Velodyne cloud within {args.eval_tolerance}s of depth stamp {stamp_ns(msg.header)}")
                elif "error" not in rec:
                    n = len(evaluator.per_frame)
                    s = evaluator.acc_scaled.summary()
                    u = evaluator.acc_unscaled.summary()
                    log(f"eval frame {n}: abs_rel={rec['abs_rel']:.4f} a1={rec['a1']:.4f} "
                        f"(unscaled {rec['abs_rel_unscaled']:.4f}/{rec['a1_unscaled']:.4f}, ratio "
                        f"{rec['median_ratio']:.3f}) | running abs_rel={s['abs_rel']:.4f} a1={s['a1']:.4f} "
                        f"unscaled abs_rel={u['abs_rel']:.4f} a1={u['a1']:.4f}")

            depth_qos = qos_profile_sensor_data
            if args.depth_reliable:  # only matches a reliable depth publisher (qos_overrides on the node)
                from rclpy.qos import QoSProfile, ReliabilityPolicy

                depth_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            depth_topic = resolve_depth_topic(args.depth_topic, args.namespace)
            log(f"eval: scoring {depth_topic}")
            node.create_subscription(Image, depth_topic, on_depth, depth_qos)

        def wait_until(deadline: float) -> None:
            while not stop["flag"]:
                rem = deadline - time.monotonic()
                if rem <= 0:
                    return
                executor.spin_once(timeout_sec=min(rem, 0.05))

        if args.wait_for:
            missing = [t for t in args.wait_for if t not in pubs]
            if missing:
                raise ReplayError(f"--wait-for topic(s) {missing} are not published (publishing {sorted(pubs)})")
            deadline = time.monotonic() + args.wait_timeout
            while not stop["flag"] and any(pubs[t].get_subscription_count() == 0 for t in args.wait_for):
                if time.monotonic() > deadline:
                    raise ReplayError(f"no subscriber on {[t for t in args.wait_for if pubs[t].get_subscription_count() == 0]} "
                                      f"after {args.wait_timeout}s")
                executor.spin_once(timeout_sec=0.05)
        wait_until(time.monotonic() + max(0.0, args.start_delay))
        conns = [c for p in plans.values() for c in p.connections]
        feed_eval: set[int] = set()
        if evaluator is not None:  # the evaluator reads clouds/camera_info from the bag even if not published
            extra = [c for c in reader.connections
                     if c.msgtype in ("sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/CameraInfo")]
            feed_eval = {c.id for c in extra}
            conns = list({c.id: c for c in conns + extra}.values())
        published = bad = loops = 0
        warned_bad: set[str] = set()
        while not stop["flag"]:
            loops += 1
            wall0, t0 = None, None
            for conn, t, raw in iter_messages(reader, conns):
                if stop["flag"]:
                    break
                if wall0 is None:
                    wall0, t0 = time.monotonic(), t
                wait_until(wall0 + (t - t0) * 1e-9 / args.rate)
                plan = plans.get(conn.topic)
                cls = plan.msg_class if plan else import_msg_class(conn.msgtype)
                try:
                    msg = deserialize_message(bytes(raw), cls)
                except Exception as exc:  # noqa: BLE001
                    bad += 1
                    if conn.topic not in warned_bad:
                        warned_bad.add(conn.topic)
                        log(f"warning: {conn.topic}: undecodable message skipped ({exc}); further ones counted")
                    continue
                if evaluator is not None and conn.id in feed_eval:
                    if conn.msgtype.endswith("PointCloud2"):
                        evaluator.add_cloud(msg)
                    else:
                        evaluator.set_camera_info(msg)
                if plan is not None:
                    pubs[conn.topic].publish(msg)
                    published += 1
                    if args.verbose:
                        log(f"published {conn.topic} bag_t={(t - t0) * 1e-9:.6f} wall_t={time.monotonic() - wall0:.6f}")
                    if clock_pub is not None:
                        from rosgraph_msgs.msg import Clock

                        ck = Clock()
                        ck.clock.sec, ck.clock.nanosec = divmod(int(t), 1_000_000_000)
                        clock_pub.publish(ck)
            if not args.loop:
                break
        # reliable subscribers must get the last messages before we exit: a sample lost on a loaded
        # machine is only resent after the writer's next heartbeat (~3 s with Fast DDS)
        from rclpy.duration import Duration

        linger_end = time.monotonic() + max(0.0, args.linger)
        for pub in pubs.values():
            try:
                pub.wait_for_all_acked(Duration(seconds=max(0.0, linger_end - time.monotonic())))
            except Exception:  # noqa: BLE001 - best effort publishers / rmw without support
                pass
        log(f"replay: published {published} messages in {loops} pass(es) from {len(plans)} topics"
            + (f", {bad} undecodable skipped" if bad else ""))
        rc = 0
        if evaluator is not None:
            wait_until(time.monotonic() + max(0.0, args.eval_wait))  # outputs of the last frames
            s = evaluator.summary()
            s["depth_received"] = received["depth"]
            log(summary_line(s))
            if args.eval_out:
                out = Path(args.eval_out)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(out.suffix + ".tmp")
                tmp.write_text(json.dumps(s, indent=2))
                tmp.replace(out)
            if not s["frames"]:
                rc = 3
        node.destroy_node()
        return rc
    finally:
        reader.close()
        if rclpy_ok():
            rclpy.shutdown()


def resolve_depth_topic(topic: str, namespace: str = "") -> str:
    """The depth node's output topic: absolute as given, else under the node's namespace ('front' -> /front/depth)."""
    topic = topic.strip()
    if not topic:
        raise ReplayError("--depth-topic is empty")
    if topic.startswith("/"):
        return topic
    ns = "/" + namespace.strip().strip("/") if namespace.strip().strip("/") else ""
    return f"{ns}/{topic}"


def rclpy_ok() -> bool:
    try:
        import rclpy

        return rclpy.ok()
    except Exception:  # noqa: BLE001
        return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="semdepth_replay", description="Replay a rosbag2 with rclpy (optionally evaluate depth).")
    ap.add_argument("bag", help="rosbag2 folder (mcap or sqlite3)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    ap.add_argument("--loop", action="store_true", help="replay until interrupted")
    ap.add_argument("--topics", nargs="+", default=None, help="publish only these topics")
    ap.add_argument("--start-delay", type=float, default=1.0, help="seconds to wait before the first message "
                    "(lets subscribers discover the publishers)")
    ap.add_argument("--wait-for", nargs="+", default=None, metavar="TOPIC",
                    help="before playing, wait until each of these topics has a subscriber")
    ap.add_argument("--wait-timeout", type=float, default=30.0, help="give up waiting for subscribers after this (s)")
    ap.add_argument("--linger", type=float, default=5.0,
                    help="at the end, wait up to this long for reliable subscribers to acknowledge (s)")
    ap.add_argument("--verbose", action="store_true", help="log every publication with its bag and wall offsets")
    ap.add_argument("--clock", action="store_true", help="also publish /clock with the bag time (use_sim_time)")
    ap.add_argument("--evaluate", action="store_true", help="score the depth node's output against the Velodyne")
    ap.add_argument("--depth-topic", default="depth", help="depth topic to evaluate (default: depth); relative "
                    "names are taken under --namespace")
    ap.add_argument("--namespace", default="", help="namespace of the depth node (the launch file's namespace:=), "
                    "e.g. front: evaluates /front/depth")
    ap.add_argument("--depth-reliable", action="store_true",
                    help="subscribe to depth with reliable QoS (the node's depth publisher must be reliable too: "
                         "-p qos_overrides./depth.publisher.reliability:=reliable); best effort loses MB-sized images "
                         "under load")
    ap.add_argument("--eval-tolerance", type=float, default=0.05, help="max |stamp difference| depth<->cloud (s)")
    ap.add_argument("--eval-wait", type=float, default=5.0, help="seconds to wait for late depth images at the end")
    ap.add_argument("--eval-out", default="", help="write the evaluation summary as JSON here")
    ap.add_argument("--no-garg-crop", action="store_true", help="evaluate the whole image, not the Garg crop")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    try:
        return replay(args, log)
    except ReplayError as exc:
        print(f"semdepth_replay: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
