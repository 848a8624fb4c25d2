"""Inference backends: each provides a runner (`run_depth`, `run_pose`) for `infer.Predictor`."""
