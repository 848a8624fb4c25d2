"""The shipped default model's inference latency on a CUDA machine, against the GPU targets.

Model: semdepth_ros/weights/default.ckpt (or --checkpoint), loaded through
semdepth_core.infer.load_predictor. Sizes: 640x192 (the paper's setting, where the target is set)
and the checkpoint's own network size (`--quick`: 640x192 only). Input: one fixed pseudo-random
1242x375 RGB frame (seed 0; the networks have no data-dependent control flow).

Per size:
  * torch CUDA fp32 and fp16 (autocast) network forward: CUDA events, median over `--reps` calls
    after warm-up; plus the end-to-end `Predictor.predict` (resize, network, post-processing) in
    wall-clock ms, fp32;
  * the TensorRT FP16 engine, when TensorRT + pycuda import and see the GPU: wall-clock median of
    one runner call (input upload, enqueue, output download, one stream sync), else reported as
    unavailable with the reason;
  * when the model has PacConv2d layers: the FP16 engine with the fused PAC plugin against the
    engine built from the decomposed (standard-op) graph; a model without PAC layers reports this
    as not applicable (the kernel itself is measured by benchmarks/gpu_pac.py).
Targets (issue 22, for an H100-class card), each "met", "not met" or "not measured" (with why):
the FP16 engine <= 5 ms at 640x192; the PAC plugin >= 3x faster than the decomposed graph.

Run: `python -m benchmarks.gpu_node` (or `python benchmarks/gpu_node.py`); writes
benchmarks/results/gpu_node.json (gpu_node_quick.json with --quick). Without a CUDA device it
writes the JSON with "skipped": true and the reason; no numbers are made up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, print_table, time_cuda_ms, write_result  # noqa: E402

NAME = "gpu_node"
DEFAULT_CHECKPOINT = REPO / "semdepth_ros" / "weights" / "default.ckpt"
TARGET_SIZE = (640, 192)
FP16_ENGINE_TARGET_MS = 5.0
PLUGIN_SPEEDUP_TARGET = 3.0
FRAME_SIZE = (1242, 375)


def target_status(value: float | None, limit: float, kind: str) -> str:
    """"met" / "not met" for a measured value against `limit` ("max": value <= limit, "min": value >=
    limit), "not measured" when value is None."""
    if kind not in ("max", "min"):
        raise ValueError(f"target kind must be 'max' or 'min', got {kind!r}")
    if value is None:
        return "not measured"
    ok = value <= limit if kind == "max" else value >= limit
    return "met" if ok else "not met"


def sizes_to_run(net_size: tuple[int, int], quick: bool) -> list[tuple[str, tuple[int, int]]]:
    """[(label, (w, h))]: 640x192, then the checkpoint's own size when it differs (not with --quick)."""
    out = [(f"{TARGET_SIZE[0]}x{TARGET_SIZE[1]}", TARGET_SIZE)]
    if not quick and tuple(net_size) != TARGET_SIZE:
        out.append((f"{net_size[0]}x{net_size[1]} (checkpoint)", tuple(net_size)))
    return out


def build_targets(rows: list[dict], trt_reason: str | None, pac_reason: str | None) -> dict:
    """The two issue-22 targets from the measured rows (640x192 row), each with its status and why."""
    row = next((r for r in rows if r["size"] == f"{TARGET_SIZE[0]}x{TARGET_SIZE[1]}"), {})
    fp16 = row.get("trt_fp16_ms")
    speedup = row.get("plugin_speedup")
    t1 = {"target_ms": FP16_ENGINE_TARGET_MS, "measured_ms": fp16,
          "status": target_status(fp16, FP16_ENGINE_TARGET_MS, "max")}
    if fp16 is None:
        t1["reason"] = trt_reason or "not run"
    t2 = {"target": PLUGIN_SPEEDUP_TARGET, "measured": speedup,
          "status": target_status(speedup, PLUGIN_SPEEDUP_TARGET, "min")}
    if speedup is None:
        t2["reason"] = pac_reason or trt_reason or "not run"
    return {"trt_fp16_640x192_le_5ms": t1, "pac_plugin_ge_3x_decomposed": t2,
            "note": "targets set for an H100-class card"}


def _skip(reason: str, quick: bool) -> int:
    print(f"{NAME}: skipped: {reason}")
    targets = build_targets([], reason, reason)
    path = write_result(NAME, {"skipped": True, "reason": reason, "targets": targets}, quick=quick)
    print(f"wrote {path}")
    return 0


def _time_wall(fn, warmup: int, reps: int) -> float:
    """Median wall-clock milliseconds of `fn` (which synchronises itself) after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _frame():
    """The fixed pseudo-random HxWx3 uint8 RGB input frame."""
    import numpy as np

    w, h = FRAME_SIZE
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _trt_engine_ms(models, size, pac: str, cache: Path, x, warmup: int, reps: int) -> float:
    """Median wall ms of one FP16 engine call at `size` built from the `pac` ("custom-op"/"decomposed") graph."""
    from semdepth_core.infer.backends.onnxruntime_backend import cached_onnx_paths
    from semdepth_core.infer.backends.tensorrt_backend import TensorRTRunner

    path = cached_onnx_paths(models, size, cache, pac)
    runner = TensorRTRunner.create(models, size, onnx_path=path, cache_dir=cache, precision="fp16")
    try:
        return _time_wall(lambda: runner.run_depth(x), warmup, reps)
    finally:
        runner.depth.close()
        if runner.pose is not None:
            runner.pose.close()


def main(argv=None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="640x192 only, 10 reps")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="ONNX/engine cache (default: a temporary directory, so engines are built fresh)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")

    import torch

    if not torch.cuda.is_available():
        return _skip("no CUDA device visible to torch on this machine", args.quick)
    if not args.checkpoint.is_file():
        return _skip(f"checkpoint not found: {args.checkpoint}", args.quick)

    from semdepth_core.infer import load_predictor, tensorrt_available
    from semdepth_core.infer.loading import load_models
    from semdepth_core.infer.processing import preprocess
    from semdepth_core.nets.pac import PacConv2d

    reps = 10 if args.quick else args.reps
    warmup = 3 if args.quick else 10
    models = load_models(args.checkpoint, "cpu")
    cfg = models.config
    n_pac = sum(isinstance(m, PacConv2d) for m in models.depth_model.modules())
    trt_ok, trt_reason = tensorrt_available()
    trt_reason = None if trt_ok else f"TensorRT unavailable: {trt_reason}"
    pac_reason = None if n_pac else (f"not applicable: {args.checkpoint.name} has no PacConv2d layers "
                                     f"(model.guidance={cfg.model.guidance}); see benchmarks/gpu_pac.py "
                                     "for the kernel against the decomposed layer")
    rgb = _frame()
    rows, errors = [], []
    tmp = tempfile.TemporaryDirectory(prefix="semdepth_gpu_node_") if args.cache_dir is None else None
    cache = args.cache_dir or Path(tmp.name)
    try:
        for label, (w, h) in sizes_to_run((cfg.data.width, cfg.data.height), args.quick):
            pred = load_predictor(args.checkpoint, backend="torch", device="cuda", width=w, height=h)
            model = pred._runner.depth_model  # the CUDA TorchRunner's network
            x_np = preprocess(rgb, (w, h))
            xt = torch.from_numpy(x_np).cuda()

            @torch.inference_mode()
            def fwd32():
                model(xt)

            @torch.inference_mode()
            def fwd16():
                with torch.autocast("cuda", dtype=torch.float16):
                    model(xt)

            row = {"size": label, "torch_fp32_ms": time_cuda_ms(fwd32, warmup, reps),
                   "torch_fp16_ms": time_cuda_ms(fwd16, warmup, reps),
                   "predict_fp32_wall_ms": _time_wall(lambda: pred.predict(rgb), warmup, reps),
                   "trt_fp16_ms": None, "trt_fp16_decomposed_ms": None, "plugin_speedup": None}
            if trt_ok:
                try:
                    if n_pac:
                        row["trt_fp16_ms"] = _trt_engine_ms(models, (w, h), "custom-op", cache, x_np, warmup, reps)
                        row["trt_fp16_decomposed_ms"] = _trt_engine_ms(models, (w, h), "decomposed", cache, x_np,
                                                                       warmup, reps)
                        row["plugin_speedup"] = row["trt_fp16_decomposed_ms"] / row["trt_fp16_ms"]
                    else:
                        row["trt_fp16_ms"] = _trt_engine_ms(models, (w, h), "decomposed", cache, x_np, warmup, reps)
                except Exception as exc:  # a build/runtime failure is a result to report, not a crash
                    errors.append(f"{label}: TensorRT: {type(exc).__name__}: {exc}")
            rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print_table(rows)
    if errors:
        trt_reason = "; ".join(errors)
    targets = build_targets(rows, trt_reason, pac_reason)
    for name, t in targets.items():
        if isinstance(t, dict):
            print(f"{name}: {t['status']}" + (f" ({t['reason']})" if "reason" in t else ""))
    path = write_result(NAME, {"skipped": False, "gpu": torch.cuda.get_device_name(0),
                               "checkpoint": str(args.checkpoint), "pac_layers": n_pac, "reps": reps,
                               "rows": rows, "errors": errors, "targets": targets}, quick=args.quick)
    print(f"wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
