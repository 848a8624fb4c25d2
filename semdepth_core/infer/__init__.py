"""Inference for every backend behind one interface (see docs/architecture.md, `infer/`).

    from semdepth_core.infer import load_predictor
    pred = load_predictor("ckpt.pt", backend="auto")      # torch | onnxruntime | tensorrt
    out = pred.predict(rgb_uint8)                          # out.depth [H,W], out.labels [H,W]
    T_prev_cur = pred.relative_pose(prev_rgb, rgb)         # 4x4 float64
"""
from semdepth_core.infer.predictor import (  # noqa: F401
    BACKENDS,
    Prediction,
    Predictor,
    load_predictor,
    resolve_backend,
    tensorrt_available,
)
from semdepth_core.infer.scale import ScaleEstimator, odometry_scale  # noqa: F401
