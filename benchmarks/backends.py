"""Latency of the inference backends (torch eager, ONNX Runtime; TensorRT on a CUDA machine with
TensorRT) per model config, through the one `Predictor` interface.

Configs: resnet18 (no semantics), resnet18 guided by ESPNet through PAC, mobilenetv2 guided by
ESPNet (random weights: latency does not depend on them), and the shipped default weights
(`shipped_default`: MobileNetV2 + ESPNet at 3x input, unguided). Per config and size the table gives
torch / ONNX Runtime end-to-end time against the 1.3x target (same checkpoint, same run). Input: the real KITTI frame
(1242x375 RGB). Network sizes: "640x192" (the paper's MR setting) and "1242x375" = full KITTI
resolution, run at 1248x384 because the networks need multiples of 32.

Each cell: median (and min) over `--reps` timed `predict` calls after `--warmup` calls, split
into network time and end-to-end (pre + network + post). Writes
benchmarks/results/backends.json (backends_quick.json with --quick: 640x192 only, guided configs,
fewer repetitions) with machine info. The CPU default of `backend="auto"`
(semdepth_core/infer/predictor.py, CPU_DEFAULT_BACKEND / CPU_GUIDED_BACKEND) follows these rows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, print_table, write_result  # noqa: E402

CONFIGS = {
    "resnet18": {"depth_net": "resnet18"},
    "resnet18_guided_espnet": {"depth_net": "resnet18", "guidance": True, "semantic": {"enabled": True, "arch": "espnet"}},
    "mobilenetv2_guided_espnet": {"depth_net": "mobilenetv2", "guidance": True,
                                  "semantic": {"enabled": True, "arch": "espnet"}},
}
SIZES = {"640x192": (640, 192), "1242x375": (1248, 384), "416x128": (416, 128)}
SHIPPED = "shipped_default"  # the shipped weights (semdepth_ros/weights/default.ckpt), not a random config
TORCH_TARGET = 1.3  # torch within 1.3x of ONNX Runtime (issue 22)


def make_checkpoint(path: Path, model_cfg: dict) -> Path:
    import torch

    from semdepth_core.checkpoint import save_checkpoint
    from semdepth_core.config import config_from_dict, config_to_dict
    from semdepth_core.nets.model import build_models

    torch.manual_seed(0)
    cfg = config_from_dict({"model": model_cfg})
    depth, pose = build_models(cfg.model, num_context=len(cfg.data.context))
    save_checkpoint(path, {"config": config_to_dict(cfg), "depth_model": depth.state_dict(),
                           "pose_net": pose.state_dict()})
    return path


def kitti_frame():
    import cv2
    import numpy as np

    from semdepth_core.paths import kitti_raw_dir

    path = kitti_raw_dir() / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data" / "0000000000.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"note: {path} not readable; using a random 1242x375 frame")
        return np.random.default_rng(0).integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def time_predictor(pred, rgb, warmup: int, reps: int) -> dict:
    for _ in range(warmup):
        pred.predict(rgb)
    net, total = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = pred.predict(rgb)
        total.append((time.perf_counter() - t0) * 1e3)
        net.append(out.timings["network"])
    return {"network_ms_median": statistics.median(net), "network_ms_min": min(net),
            "total_ms_median": statistics.median(total), "total_ms_min": min(total), "reps": reps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="640x192, guided configs, 1 warm-up + 3 reps")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", nargs="*", choices=sorted(CONFIGS) + [SHIPPED])
    ap.add_argument("--sizes", nargs="*", choices=sorted(SIZES))
    ap.add_argument("--backends", nargs="*", default=None)
    args = ap.parse_args(argv)

    import torch

    from semdepth_core.infer import load_predictor, tensorrt_available

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)  # same core count for torch and ONNX Runtime (its default: all)
    configs = args.configs or (["mobilenetv2_guided_espnet", SHIPPED] if args.quick else list(CONFIGS) + [SHIPPED])
    sizes = args.sizes or (["640x192"] if args.quick else ["640x192", "1242x375"])
    warmup, reps = (1, 3) if args.quick else (args.warmup, args.reps)
    backends = args.backends or ["torch", "onnxruntime"]
    trt_ok, trt_reason = tensorrt_available()
    if trt_ok and "tensorrt" not in backends and args.backends is None:
        backends.append("tensorrt")
    rgb = kitti_frame()

    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="semdepth_bench_") as tmp:
        tmp = Path(tmp)
        for cname in configs:
            if cname == SHIPPED:
                from semdepth_ros.params import shipped_checkpoint

                ckpt = shipped_checkpoint()
            else:
                ckpt = make_checkpoint(tmp / f"{cname}.pt", CONFIGS[cname])
            for sname in sizes + (["416x128"] if cname == SHIPPED and "416x128" not in sizes else []):
                w, h = SIZES[sname]
                for backend in backends:
                    device = "cuda" if backend == "tensorrt" else "cpu"
                    t0 = time.perf_counter()
                    try:
                        pred = load_predictor(ckpt, backend=backend, device=device, height=h, width=w,
                                              engine_cache_dir=tmp / "cache")
                    except Exception as exc:  # e.g. out of memory at full resolution
                        skipped.append({"config": cname, "size": sname, "backend": backend, "reason": repr(exc)})
                        print(f"skip {cname} {sname} {backend}: {exc}")
                        continue
                    setup_s = time.perf_counter() - t0
                    res = time_predictor(pred, rgb, warmup, reps)
                    row = {"config": cname, "size": sname, "net_input": f"{w}x{h}", "backend": pred.backend_name,
                           **res, "setup_s": setup_s}
                    rows.append(row)
                    print(f"{cname:28s} {sname:9s} {pred.backend_name:12s} network {res['network_ms_median']:9.1f} ms"
                          f"  total {res['total_ms_median']:9.1f} ms  (setup {setup_s:.1f} s)", flush=True)
                    del pred

    print()
    print_table(rows, ["config", "size", "net_input", "backend", "network_ms_median", "total_ms_median",
                       "network_ms_min", "setup_s"])
    ratios = []
    for cname in configs:
        for sname in {r["size"] for r in rows if r["config"] == cname}:
            cells = {r["backend"]: r["total_ms_median"] for r in rows if r["config"] == cname and r["size"] == sname}
            if "torch" in cells and "onnxruntime" in cells:
                ratio = cells["torch"] / cells["onnxruntime"]
                ratios.append({"config": cname, "size": sname, "torch_ms": cells["torch"],
                               "onnxruntime_ms": cells["onnxruntime"], "torch_over_ort": ratio,
                               "target": TORCH_TARGET, "met": ratio <= TORCH_TARGET})
    if ratios:
        print()
        print_table(ratios)
    # CPU decision at 640x192: per guided config, which CPU backend is faster
    decision = {}
    for cname in ("resnet18_guided_espnet", "mobilenetv2_guided_espnet"):
        cells = {r["backend"]: r["total_ms_median"] for r in rows
                 if r["config"] == cname and r["size"] == "640x192" and r["backend"] in ("torch", "onnxruntime")}
        if len(cells) == 2:
            decision[cname] = {"faster": min(cells, key=cells.get), **{f"{k}_total_ms": v for k, v in cells.items()}}
    if decision:
        print("\nCPU backend decision at 640x192:", decision)
    path = write_result("backends", {"rows": rows, "skipped": skipped, "cpu_decision_640x192": decision,
                                     "torch_vs_onnxruntime": ratios,
                                     "tensorrt": {"available": trt_ok, "reason": trt_reason},
                                     "threads": threads, "warmup": warmup, "machine_extra": {
                                         "onnxruntime": __import__("onnxruntime").__version__}},
                        quick=args.quick)
    print(f"wrote {path}")
    _ = machine_info  # (machine info is embedded by write_result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
