"""semantic.input_scale: the frozen semantic net sees a resized input; shapes and freezing unchanged."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from semdepth_core.config import load_config
from semdepth_core.data.labels import ID
from semdepth_core.nets.model import build_models


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_scaled_semantic_keeps_shapes_and_stays_frozen():
    cfg = load_config(None, ["model.depth_net=mobilenetv2", "model.guidance=true", "model.semantic.enabled=true",
                             "model.semantic.input_scale=2.0"])
    depth, _ = build_models(cfg.model, 2)
    depth.train()
    out = depth(torch.rand(1, 3, 64, 192))
    assert [tuple(o.shape[-2:]) for o in out["inv_depths"]] == [(64, 192), (32, 96), (16, 48), (8, 24)]
    assert out["sem_logits"].shape == (1, 20, 64, 192)
    out["inv_depths"][0].mean().backward()
    assert all(p.grad is None for p in depth.semantic.parameters())
    assert any(p.grad is not None for p in depth.decoder.parameters())


def test_espnet_on_kitti_needs_the_scale(kitti_drive_dir, shared_data):
    """On real KITTI at 640x192 the Cityscapes ESPNet finds road and cars only when it sees ~2x the input."""
    weights = shared_data / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"
    rgb = cv2.cvtColor(cv2.imread(str(kitti_drive_dir / "image_02" / "data" / "0000000000.png")), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(rgb, (640, 192), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None].float() / 255
    fractions = {}
    for scale in (1.0, 2.0):
        cfg = load_config(None, ["model.depth_net=mobilenetv2", "model.semantic.enabled=true",
                                 f"model.semantic.weights={weights}", f"model.semantic.input_scale={scale}"])
        depth, _ = build_models(cfg.model, 2)
        with torch.no_grad():
            labels = depth.eval()(x)["sem_logits"].argmax(1)[0].numpy()
        fractions[scale] = {c: float(np.mean(labels == ID[c])) for c in ("road", "car")}
    assert fractions[2.0]["road"] > 0.15 and fractions[2.0]["car"] > 0.005
    assert fractions[2.0]["road"] > 3 * fractions[1.0]["road"]
