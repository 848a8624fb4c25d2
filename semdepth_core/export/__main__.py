"""Export CLI.

    python -m semdepth_core.export onnx --checkpoint CKPT --out model.onnx [--height H --width W]
        [--pac decomposed|custom-op] [--logits] [--no-pose]
    python -m semdepth_core.export tensorrt --build-only --onnx model.onnx [--fp16 | --int8 --calib-dir DIR]
        [--cache-dir DIR] [--force]
    python -m semdepth_core.export tensorrt --checkpoint CKPT [--height H --width W] [--fp16] [--cache-dir DIR]
        (exports the custom-op graph into the cache dir, then builds)
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m semdepth_core.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    o = sub.add_parser("onnx", help="export the depth(+semantics) graph and the pose graph to ONNX")
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--out", required=True, help="depth graph path; the pose graph goes to <stem>.pose.onnx")
    o.add_argument("--height", type=int)
    o.add_argument("--width", type=int)
    o.add_argument("--pac", choices=("decomposed", "custom-op"), default="decomposed")
    o.add_argument("--logits", action="store_true", help="also output the semantic logits")
    o.add_argument("--no-pose", action="store_true", help="do not export the pose graph")

    t = sub.add_parser("tensorrt", help="build (and cache) TensorRT engines")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", help="an exported graph (custom-op PAC for the fused plugin)")
    src.add_argument("--checkpoint")
    t.add_argument("--height", type=int)
    t.add_argument("--width", type=int)
    t.add_argument("--build-only", action="store_true", help="only build and cache the engine(s)")
    prec = t.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true")
    prec.add_argument("--int8", action="store_true")
    t.add_argument("--calib-dir", help="INT8 calibration images")
    t.add_argument("--cache-dir", help="engine + timing cache directory")
    t.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from semdepth_core.checkpoint import CheckpointError

    try:
        if args.cmd == "onnx":
            from semdepth_core.export.onnx_export import export_onnx

            res = export_onnx(args.checkpoint, args.out, height=args.height, width=args.width, pac=args.pac,
                              logits=args.logits, pose=not args.no_pose)
            print(f"wrote {res.depth_path} (outputs: {', '.join(res.outputs)}; PAC {res.pac}, "
                  f"{res.num_pac_nodes} layers)")
            if res.pose_path:
                print(f"wrote {res.pose_path}")
            return 0

        from semdepth_core.export.onnx_export import export_onnx, pose_graph_path
        from semdepth_core.export.tensorrt import build_engine, default_cache_dir

        precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
        cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        if args.onnx:
            onnx_path = Path(args.onnx)
            if not onnx_path.is_file():
                print(f"error: ONNX graph not found: {onnx_path}", file=sys.stderr)
                return 2
        else:
            onnx_path = cache / "onnx" / (Path(args.checkpoint).stem + "_custom-op.onnx")
            export_onnx(args.checkpoint, onnx_path, height=args.height, width=args.width, pac="custom-op")
        paths = [onnx_path] + ([pose_graph_path(onnx_path)] if pose_graph_path(onnx_path).is_file() else [])
        for p in paths:
            engine = build_engine(p, precision, cache, calib_dir=args.calib_dir, force=args.force)
            print(f"engine {engine} ({precision}) for {p}")
        if not args.build_only:
            print("engines are cached; load them with semdepth_core.infer.load_predictor(..., backend='tensorrt')")
        return 0
    except (CheckpointError, FileNotFoundError, ValueError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
