"""PacConv2d vs nn.Conv2d: forward+backward time and peak memory at depth-decoder resolutions.

    python benchmarks/pac.py [--quick] [--batch N] [--reps N] [--threads 1,2] [--naive]

Shapes are the 3x3 decoder convolutions of a 640x192 input (channels @ W x H), guide D = 32
(GuidanceBranch default), sigma per layer (the default, the one the models use) plus one
per-filter row (context: per-filter sigma runs on the torch implementation, its speed is not a
target). Every shape is run with each thread count (torch.set_num_threads) in the same process.
`--naive` adds the unfold reference (`pac_conv2d_reference`) for context.

Targets (layer sigma rows): time_ratio = pac_ms / conv_ms <= 1.5 and mem_ratio = pac_peak_mb /
conv_peak_mb <= 2, at every shape and thread count. `native` says whether the fused CPU kernel
ran (`semdepth_core/nets/_native_pac.py`; SEMDEPTH_NATIVE_PAC=0 measures the torch fallback).

Time: median of `reps` forward+backward passes, the implementations interleaved rep by rep so
that load from other processes on a shared machine hits them alike (the 1-min load average is
recorded per thread count). Memory (CPU, no CUDA allocator statistics here): one forward+backward
under torch.profiler(profile_memory=True); the profiler's memory timeline
(`prof._memory_profile()`, the data behind `export_memory_timeline`) lists every allocation and
free, from which the live bytes are replayed in order. The fused kernel takes all its buffers
(per-thread tile scratch included) from torch, so they are counted. `peak_mb` = highest live
total, `extra_mb` = peak minus the tensors alive before the pass (input, guide, parameters);
gradients are cleared first, so they count. `saved_mb` = bytes kept for backward
(saved_tensors_hooks, storages deduplicated).
"""
from __future__ import annotations

import argparse
import sys
import os
import statistics
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m
from benchmarks.common import print_table, thread_list, write_result  # noqa: E402

import torch
from torch import nn

from semdepth_core.nets import _native_pac
from semdepth_core.nets.pac import PacConv2d
from semdepth_core.nets.pac_reference import pac_conv2d_reference

GUIDE_DIM = 32
FULL = [(128, 160, 48, "layer"), (64, 320, 96, "layer"), (32, 640, 192, "layer"), (16, 640, 192, "layer"),
        (64, 320, 96, "filter")]
QUICK = [(64, 160, 48, "layer"), (32, 320, 96, "layer"), (32, 320, 96, "filter")]
TIME_TARGET, MEM_TARGET = 1.5, 2.0


def _make(kind, c, x, g, mode):
    """Return (params, step) where step() runs one forward+backward of implementation `kind`."""
    torch.manual_seed(0)
    if kind == "conv":
        conv = nn.Conv2d(c, c, 3, padding=1)
        return list(conv.parameters()) + [x], lambda: conv(x).square().mean().backward()
    pac = PacConv2d(c, c, 3, padding=1, sigma_mode=mode, init_sigma=GUIDE_DIM ** 0.5)
    params = list(pac.parameters()) + [x, g]
    if kind == "pac":
        return params, lambda: pac(x, g).square().mean().backward()
    return params, lambda: pac_conv2d_reference(x, g, pac.weight, pac.bias, pac.sigma, 1, 1, 1).square().mean().backward()


def _clear(params):
    for p in params:
        p.grad = None


def _peak_memory(params, step):
    """(peak_mb, extra_mb) of one forward+backward from the profiler's allocation timeline."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    _clear(params)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    live = peak = pre = 0
    for _t, action, _key, size in prof._memory_profile().timeline:
        if action == Action.PREEXISTING:
            pre += size
            live += size
        elif action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2**20, (peak - pre) / 2**20


def _saved_memory(params, step):
    """MB of tensors saved for backward (unique storages)."""
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    _clear(params)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


def run(configs, batch, reps, naive, threads):
    """Time and memory rows for every shape at `threads` intra-op threads."""
    torch.set_num_threads(threads)
    rows = []
    for c, w, h, mode in configs:
        torch.manual_seed(0)
        x = torch.randn(batch, c, h, w, requires_grad=True)
        g = torch.randn(batch, GUIDE_DIM, h, w, requires_grad=True)
        kinds = ["conv", "pac"] + (["naive"] if naive else [])
        impl = {k: _make(k, c, x, g, mode) for k in kinds}
        times = {k: [] for k in kinds}
        for k in kinds:  # warm-up (builds the fused kernel on first use)
            impl[k][1]()
        for r in range(reps):
            for k in kinds:
                if k == "naive" and r >= max(1, reps // 3):
                    continue  # context only: fewer reps
                _clear(impl[k][0])
                t0 = time.perf_counter()
                impl[k][1]()
                times[k].append(time.perf_counter() - t0)
        mem = {k: _peak_memory(*impl[k]) for k in kinds}
        saved = {k: _saved_memory(*impl[k]) for k in kinds}
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        native = mode == "layer" and _native_pac.load() is not None
        row = {
            "threads": threads, "shape": f"{c}ch@{w}x{h}", "B": batch, "sigma": mode, "native": native,
            "conv_ms": ms["conv"], "pac_ms": ms["pac"], "time_ratio": ms["pac"] / ms["conv"],
            "conv_peak_mb": mem["conv"][0], "pac_peak_mb": mem["pac"][0], "mem_ratio": mem["pac"][0] / mem["conv"][0],
            "conv_extra_mb": mem["conv"][1], "pac_extra_mb": mem["pac"][1],
            "conv_saved_mb": saved["conv"], "pac_saved_mb": saved["pac"],
            "conv_ms_all": [1000 * t for t in times["conv"]], "pac_ms_all": [1000 * t for t in times["pac"]],
        }
        row["target_row"] = mode == "layer"
        row["time_ok"] = row["time_ratio"] <= TIME_TARGET
        row["mem_ok"] = row["mem_ratio"] <= MEM_TARGET
        if naive:
            row.update(naive_ms=ms["naive"], naive_peak_mb=mem["naive"][0], naive_saved_mb=saved["naive"])
        rows.append(row)
        print(f"  {threads} thr {row['shape']} {mode}: conv {ms['conv']:.1f} ms, pac {ms['pac']:.1f} ms "
              f"({row['time_ratio']:.2f}x), memory {row['mem_ratio']:.2f}x", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, few reps")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--naive", action="store_true", help="also time the unfold reference (slow)")
    ap.add_argument("--threads", type=thread_list, default=[1, 2], help="torch intra-op thread counts, e.g. 1,2")
    args = ap.parse_args(argv)
    if args.batch < 1 or (args.reps is not None and args.reps < 1):
        ap.error("--batch and --reps must be >= 1")
    reps = args.reps or (3 if args.quick else 11)
    rows, load = [], {}
    for n in args.threads:
        l0 = os.getloadavg()
        rows += run(QUICK if args.quick else FULL, args.batch, reps, args.naive, n)
        load[str(n)] = {"before": list(l0), "after": list(os.getloadavg())}
    cols = ["threads", "shape", "sigma", "native", "conv_ms", "pac_ms", "time_ratio", "conv_peak_mb", "pac_peak_mb",
            "mem_ratio", "conv_saved_mb", "pac_saved_mb", "time_ok", "mem_ok"]
    if args.naive:
        cols += ["naive_ms", "naive_peak_mb"]
    print_table(rows, cols)
    target_rows = [r for r in rows if r["target_row"]]
    targets = {f"time_ratio<={TIME_TARGET}": all(r["time_ok"] for r in target_rows),
               f"mem_ratio<={MEM_TARGET}": all(r["mem_ok"] for r in target_rows),
               "worst_time_ratio": max(r["time_ratio"] for r in target_rows),
               "worst_mem_ratio": max(r["mem_ratio"] for r in target_rows)}
    print(f"targets (layer sigma rows): {targets}")
    print("load average (1, 5, 15 min) per thread count: "
          + "; ".join(f"{k} thr {v['before'][0]:.1f} -> {v['after'][0]:.1f}" for k, v in load.items()))
    path = write_result("pac", {"rows": rows, "reps": reps, "threads": args.threads, "guide_dim": GUIDE_DIM,
                                "targets": {"time_ratio": TIME_TARGET, "mem_ratio": MEM_TARGET},
                                "targets_met": targets, "loadavg": load,
                                "native_available": _native_pac.load() is not None,
                                "memory_method": "torch.profiler memory timeline replay (CPU allocations)"},
                        quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
