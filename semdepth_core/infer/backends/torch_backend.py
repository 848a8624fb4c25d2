"""PyTorch eager backend (CPU or CUDA).

On the CPU the networks run in channels-last memory format: oneDNN's convolutions at the small,
dilated shapes of ESPNet are ~1.6x faster that way, which brings torch to within ~1.1x of ONNX
Runtime on the shipped model and ahead of it on guided ones (benchmarks/backends.py).
"""
from __future__ import annotations

import numpy as np
import torch


class TorchRunner:
    name = "torch"

    def __init__(self, depth_model: torch.nn.Module, pose_net: torch.nn.Module | None, device: str = "cpu",
                 has_semantics: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device")
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.depth_model = depth_model.to(self.device).eval().to(memory_format=self.memory_format)
        self.pose_net = (pose_net.to(self.device).eval().to(memory_format=self.memory_format)
                         if pose_net is not None else None)
        self.has_semantics = bool(has_semantics)  # model.semantic.enabled of the checkpoint config
        self.has_pose = self.pose_net is not None
        self.num_context = int(getattr(self.pose_net, "num_context", 1)) if self.pose_net is not None else 0

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t.contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def run_depth(self, x: np.ndarray):
        out = self.depth_model(self._tensor(x))
        inv = out["inv_depths"][0][0, 0].float().cpu().numpy()
        logits = out.get("sem_logits")
        labels = None
        if logits is not None:
            labels = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
        return inv, labels

    @torch.inference_mode()
    def run_depth_only(self, x: np.ndarray) -> np.ndarray:
        """Inverse depth [h,w] without running the semantic net (models it does not guide)."""
        out = self.depth_model(self._tensor(x), with_semantics=False)
        return out["inv_depths"][0][0, 0].float().cpu().numpy()

    @torch.inference_mode()
    def run_semantics(self, x: np.ndarray) -> np.ndarray:
        """Class indices [h,w] of the semantic net alone."""
        sem = self.depth_model.run_semantic(self._tensor(x))
        if sem is None:
            raise RuntimeError("the model has no semantic network")
        return sem.logits[0].argmax(0).to(torch.uint8).cpu().numpy()

    @torch.inference_mode()
    def run_pose(self, tgt: np.ndarray, ctxs: list[np.ndarray]) -> np.ndarray:
        if self.pose_net is None:
            raise RuntimeError("no pose network loaded")
        vec = self.pose_net(self._tensor(tgt), [self._tensor(c) for c in ctxs])  # [1,N,6]
        return vec[0].double().cpu().numpy()
