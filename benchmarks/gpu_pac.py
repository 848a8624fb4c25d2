"""Fused CUDA PAC kernel vs the decomposed torch PacConv2d, on a CUDA machine.

The fused kernel (semdepth_core/export/cuda/pac_kernel.cu) runs exactly as the TensorRT plugin
runs it: nvcc builds it into the cached shared library (semdepth_core/export/cuda_build.py) and
its C host launcher is called through ctypes with raw device pointers and a raw CUDA stream
(here torch CUDA tensors' pointers and torch's current stream). Neither TensorRT nor pycuda is
needed; nvcc is (or $SEMDEPTH_PAC_LIBRARY naming a library prebuilt for this GPU).

For each shape (decoder-like PAC layers at 640x192 network input) and dtype (fp32, fp16):
  * correctness vs torch PacConv2d in fp32: max relative error <= 1e-4 (fp32), <= 1e-2 (fp16);
  * latency: CUDA-event timing, median over `--reps` calls after warm-up, of the fused kernel and
    of the decomposed PacConv2d forward (torch eager, half tensors for fp16);
  * target (issue 22, H100-class card): the fused kernel >= 3x faster than the decomposed layer.
Run: `python -m benchmarks.gpu_pac` (or `python benchmarks/gpu_pac.py`); writes
benchmarks/results/gpu_pac.json (gpu_pac_quick.json with --quick: two shapes, 10 reps). On a
machine without CUDA (or where the kernel library cannot be built) it prints why and writes the
JSON with "skipped": true and the reason; no numbers are made up.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, time_cuda_ms, write_result  # noqa: E402

NAME = "gpu_pac"
SPEEDUP_TARGET = 3.0  # fused kernel vs decomposed PacConv2d (issue 22)

# (name, B, Cin, Cout, D guide channels, H, W, dilation) -- PAC layers of the decoder at 640x192
SHAPES = [
    ("dec_s16", 1, 256, 256, 32, 12, 40, 1),
    ("dec_s8", 1, 128, 128, 32, 24, 80, 1),
    ("dec_s4", 1, 64, 64, 16, 48, 160, 1),
    ("dec_s2", 1, 32, 32, 16, 96, 320, 1),
]


def speedup_status(speedups: list[float], target: float = SPEEDUP_TARGET) -> str:
    """"met" when every measured speedup reaches `target`, "not met" otherwise, "not measured" if none."""
    if not speedups:
        return "not measured"
    return "met" if min(speedups) >= target else "not met"


def _skip(reason: str, quick: bool) -> int:
    print(f"{NAME}: skipped: {reason}")
    targets = {"fused_speedup_ge_3x": {"target": SPEEDUP_TARGET, "status": "not measured", "reason": reason}}
    path = write_result(NAME, {"skipped": True, "reason": reason, "targets": targets}, quick=quick)
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two shapes, 10 reps")
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")

    import torch

    if not torch.cuda.is_available():
        return _skip("no CUDA device visible to torch on this machine", args.quick)
    from semdepth_core.export.pac_plugin import PacLibraryError, launch_pac, pac_library
    from semdepth_core.nets.pac import PacConv2d

    major, minor = torch.cuda.get_device_capability(0)
    arch = f"sm_{major}{minor}"
    try:
        pac_library(arch)  # nvcc build (or cache hit), outside the timings
    except PacLibraryError as exc:
        return _skip(f"the fused kernel's library cannot be built or loaded for {arch}: {exc}", args.quick)

    reps = 10 if args.quick else args.reps
    shapes = SHAPES[:2] if args.quick else SHAPES
    rows, failures = [], []
    torch.manual_seed(0)
    for name, B, Cin, Cout, D, H, W, dil in shapes:
        layer = PacConv2d(Cin, Cout, 3, padding=dil, dilation=dil).cuda().eval()
        x = torch.randn(B, Cin, H, W, device="cuda")
        g = torch.randn(B, D, H, W, device="cuda") * 0.3
        with torch.no_grad():
            ref = layer(x, g)
        for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 1e-2)):
            xs = [t.to(dtype).contiguous() for t in (x, g, layer.weight.detach(), layer.bias.detach(),
                                                     layer.log_sigma.detach())]
            out = torch.empty(ref.shape, dtype=dtype, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            dname = "float16" if dtype == torch.float16 else "float32"

            def fused():
                launch_pac(*(t.data_ptr() for t in xs), out.data_ptr(), B=B, Cin=Cin, H=H, W=W, D=D, Cout=Cout,
                           k=3, stride=1, padding=dil, dilation=dil, sigma_per_filter=False, dtype=dname,
                           stream=stream)

            fused()
            torch.cuda.synchronize()
            err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
            layer_d = PacConv2d(Cin, Cout, 3, padding=dil, dilation=dil).cuda().eval().to(dtype)
            layer_d.load_state_dict(layer.state_dict())
            xd, gd = x.to(dtype), g.to(dtype)

            def decomposed():
                with torch.no_grad():
                    layer_d(xd, gd)

            t_fused = time_cuda_ms(fused, 5, reps)
            t_dec = time_cuda_ms(decomposed, 5, reps)
            ok = err <= tol
            if not ok:
                failures.append(f"{name} {dname}: rel err {err:.2e} > {tol}")
            rows.append({"layer": name, "dtype": dname, "shape": f"{B}x{Cin}x{H}x{W}->{Cout} D={D}",
                         "max_rel_err": err, "tol": tol, "ok": ok, "fused_ms": t_fused, "decomposed_ms": t_dec,
                         "speedup": t_dec / t_fused})
    print_table(rows)
    speedups = [r["speedup"] for r in rows]
    targets = {"fused_speedup_ge_3x": {"target": SPEEDUP_TARGET, "status": speedup_status(speedups),
                                       "min_speedup": min(speedups), "gpu_class_note": "target set for an "
                                       "H100-class card"}}
    print(f"fused >= {SPEEDUP_TARGET}x decomposed on every layer: {targets['fused_speedup_ge_3x']['status']} "
          f"(min {min(speedups):.2f}x)")
    path = write_result(NAME, {"skipped": False, "gpu": torch.cuda.get_device_name(0), "arch": arch,
                               "launch": "nvcc-built library via ctypes, torch CUDA pointers and stream",
                               "rows": rows, "failures": failures, "reps": reps, "targets": targets},
                        quick=args.quick)
    print(f"wrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
