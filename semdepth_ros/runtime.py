"""The node's ROS-free plumbing: latest-frame mailbox, rate-limited logging, stage timings, odometry helpers."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

class Mailbox:
    """One-slot hand-over between the subscription callback and the worker (latest wins)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._item = None
        self.dropped = 0
        self.put_count = 0

    def put(self, item) -> bool:
        """Store `item`; True when it replaced an unprocessed one (that one is dropped)."""
        with self._cv:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self.put_count += 1
            self._cv.notify()
            return replaced

    def get(self, timeout: float):
        """The latest item (and empty the slot), or None after `timeout` seconds."""
        with self._cv:
            if self._item is None:
                self._cv.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._cv:
            self._item = None


class RateLimitedLog:
    """Log each kind of problem at most once per `period`; repeats are counted and reported."""

    def __init__(self, emit: Callable[[str], None], period: float, clock=time.monotonic):
        self.emit, self.period, self.clock = emit, float(period), clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.last_message: dict[str, str] = {}
        self.last_time: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, text: str) -> bool:
        now = self.clock()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.last_message[kind] = text
            self.last_time[kind] = now
            last = self._last.get(kind)
            if last is not None and now - last < self.period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            n = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        self.emit(text + (f" [{n} more like this in the last {self.period:g}s]" if n else ""))
        return True

    def recent(self, within: float) -> dict[str, str]:
        now = self.clock()
        with self._lock:
            return {k: self.last_message[k] for k, t in self.last_time.items() if now - t <= within}


class StageTimes:
    """Rolling per-stage timings (ms)."""

    def __init__(self, n: int = 50):
        self._d: dict[str, deque] = {}
        self.n = n
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._d.setdefault(stage, deque(maxlen=self.n)).append(float(ms))

    def means(self) -> dict[str, float]:
        with self._lock:
            return {k: float(np.mean(v)) for k, v in self._d.items() if v}


def twist_speed(msg) -> float:
    """|v| of nav_msgs/Odometry twist.twist.linear (NaN propagates)."""
    v = msg.twist.twist.linear
    return float(math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z))


def nearest_speed(samples, t_ns: int, timeout_s: float) -> float | None:
    """Speed of the odometry sample nearest to t_ns within timeout_s; samples = [(stamp_ns, speed)]."""
    best = None
    for ts, sp in samples:
        dt = abs(ts - t_ns) * 1e-9
        if dt <= timeout_s and (best is None or dt < best[0]):
            best = (dt, sp)
    return None if best is None else best[1]




def release_memory() -> bool:
    """Give freed heap back to the OS after a model is dropped (lifecycle cleanup).

    glibc keeps freed blocks in its arenas; after a model and its inference session are freed, the next configure
    allocates anew and the process grows by the model's working set on every cycle although nothing leaks
    (measured: ~12 MB per configure/cleanup cycle with ONNX Runtime, flat with this). True when malloc_trim ran.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


JUMP_PERIODS = 20  # a stamp step this many publisher periods long starts a new stream


class InputRate:
    """The image stream as received against what its stamps say was sent: frames lost in transport show up.

    The publisher's period is a low percentile of the stamp steps (robust to the gaps losses leave); the frames it
    sent over the window are the stamp span divided by that period. Receive times give the received rate.
    """

    def __init__(self, n: int = 60, min_frames: int = 10):
        self._d: deque = deque(maxlen=n)  # (stamp_ns, receive time s)
        self.min_frames = min_frames
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, t_recv: float) -> None:
        with self._lock:
            if self._d and stamp_ns <= self._d[-1][0]:  # a restarted or replayed stream: start over
                self._d.clear()
            self._d.append((int(stamp_ns), float(t_recv)))

    def estimate(self) -> dict | None:
        """{'received_hz', 'publisher_hz', 'received_fraction'} over the window (None with too few frames)."""
        with self._lock:
            d = list(self._d)
        if len(d) < self.min_frames:
            return None
        stamps = np.array([s for s, _ in d], dtype=np.float64) * 1e-9
        t = np.array([r for _, r in d])
        period = float(np.percentile(np.diff(stamps), 20))
        # a jump in the stamps far beyond the period (a bag looping, a camera restarting, a test stepping its
        # clock) is a new stream, not lost frames: only the segment after the last jump counts
        jumps = np.flatnonzero(np.diff(stamps) > max(JUMP_PERIODS * period, 1e-9))
        if jumps.size:
            stamps, t = stamps[jumps[-1] + 1:], t[jumps[-1] + 1:]
            if len(stamps) < self.min_frames:
                return None
            period = float(np.percentile(np.diff(stamps), 20))
        if period <= 0 or t[-1] <= t[0]:
            return None
        sent = (stamps[-1] - stamps[0]) / period + 1.0
        return {"received_hz": (len(stamps) - 1) / (t[-1] - t[0]), "publisher_hz": 1.0 / period,
                "received_fraction": min(1.0, len(stamps) / sent)}
