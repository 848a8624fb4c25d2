"""Is int8 a lever for the node's rate? The shipped depth network quantised with ONNX Runtime (static, QDQ,
per-channel int8 weights, uint8 activations calibrated on the training drive's frames), against the fp32 graph
on the held-out real drive: speed of the depth graph alone and KITTI metrics against the LiDAR.

    python -m experiments.int8_depth [--quick]

Calibration: camera 2 and 3 frames of KITTI raw drive 0001 (a training drive of the shipped weights);
evaluation: drive 0023 (held out), through the same pre/post-processing as the product (`infer.processing`),
median-scaled and unscaled as in benchmarks/real_transfer.py. Results: experiments/results/int8_depth.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import print_table, write_result  # noqa: E402


def _timed_ms(session, feed, reps: int) -> float:
    session.run(None, feed)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 held-out frames, 3 timing repetitions")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from benchmarks.real_transfer import held_out_frames, kitti_root, score
    from semdepth_core.data.kitti import KittiDrive
    from semdepth_core.export.onnx_export import export_loaded
    from semdepth_core.infer import processing
    from semdepth_core.infer.loading import load_models
    from semdepth_ros.params import shipped_checkpoint

    models = load_models(shipped_checkpoint())
    frames = held_out_frames(kitti_root())[: 3 if args.quick else None]
    H, W = frames[0][1].shape[:2]
    size = processing.network_size_for((W, H), models.config.data.height * models.config.data.width)
    train = KittiDrive(kitti_root() / "2011_09_26" / "2011_09_26_drive_0001_sync", cams=(2, 3))
    calib = [processing.preprocess(train.load_image(f, c), size) for f in train.frames for c in (2, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "depth.onnx"
        export_loaded(models, fp32, size, pose=False, split_semantics=True)  # the depth graph alone
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre))

        class Frames(CalibrationDataReader):
            def __init__(self):
                self._it = iter([{"rgb": x} for x in calib])

            def get_next(self):
                return next(self._it, None)

        quantize_static(str(pre), str(int8), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions = {"fp32": ort.InferenceSession(str(fp32), opts), "int8": ort.InferenceSession(str(int8), opts)}
        rows, preds = [], {}
        feed = {"rgb": processing.preprocess(frames[0][1], size)}
        for name, s in sessions.items():
            preds[name] = [processing.postprocess(s.run(["inv_depth"], {"rgb": processing.preprocess(rgb, size)})[0],
                                                  None, (W, H), models.config.model.min_depth,
                                                  models.config.model.max_depth)[1] for _, rgb, _, _ in frames]
        ms = {name: [] for name in sessions}
        for _ in range(2):  # interleaved, so that load changes hit both alike
            for name, s in sessions.items():
                ms[name].append(_timed_ms(s, feed, 3 if args.quick else 15))
        for name in sessions:
            m = score(frames, preds[name])
            rows.append({"graph": name, "depth_net_ms": float(np.median(ms[name])), "abs_rel": m["scaled"]["abs_rel"],
                         "a1": m["scaled"]["a1"], "unscaled_abs_rel": m["unscaled"]["abs_rel"]})
    rows[1]["speedup"] = rows[0]["depth_net_ms"] / rows[1]["depth_net_ms"]
    text = print_table(rows)
    path = write_result("int8_depth", {"network_input": list(size), "frames": len(frames),
                                       "calibration_frames": len(calib), "threads": 2, "rows": rows,
                                       "table_text": text}, quick=args.quick)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
