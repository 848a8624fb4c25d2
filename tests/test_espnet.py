"""ESPNet (p=2, q=8): strict loading of the Cityscapes weights and accuracy on a real val frame."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semdepth_core.config import SemanticConfig
from semdepth_core.data.labels import IGNORE, color_to_train_ids
from semdepth_core.nets.semantic import SemanticNet, SemanticOutput, build_semantic_net
from semdepth_core.nets.semantic.espnet import ESPNet


@pytest.fixture(scope="module")
def weights(shared_data):
    p = shared_data / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"
    if not p.is_file():
        pytest.fail(f"ESPNet weights missing: {p}")
    return p


@pytest.fixture(scope="module")
def espnet(weights):
    return build_semantic_net(SemanticConfig(enabled=True, arch="espnet", weights=str(weights))).eval()


def test_state_dict_names_match_the_weights_file_exactly(weights):
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    net = ESPNet()
    assert len(sd) == 189
    ours = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(ours) == set(sd)
    for k, v in ours.items():
        assert v.shape == sd[k].shape, k
    net.load_state_dict(sd, strict=True)


def test_cityscapes_frame_pixel_accuracy(espnet, shared_data):
    d = shared_data / "cityscapes_samples"
    rgb = cv2.imread(str(d / "frankfurt_000001_058914_leftImg8bit.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    gt_rgb = cv2.imread(str(d / "frankfurt_000001_058914_gtFine_color.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    gt = color_to_train_ids(gt_rgb)  # [1024,2048]
    small = cv2.resize(rgb, (1024, 512), interpolation=cv2.INTER_AREA)  # as trained
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = espnet(x)
    assert isinstance(out, SemanticOutput)
    assert out.logits.shape == (1, 20, 512, 1024)
    assert [tuple(f.shape) for f in out.features] == [(1, 19, 256, 512), (1, 131, 128, 256), (1, 256, 64, 128)]
    assert espnet.feature_channels == [19, 131, 256] and espnet.feature_strides == [2, 4, 8]
    logits = F.interpolate(out.logits, size=gt.shape, mode="bilinear", align_corners=False)
    pred = logits.argmax(1)[0].numpy()
    valid = gt != IGNORE
    acc = (pred[valid] == gt[valid]).mean()
    assert acc >= 0.93, f"pixel accuracy {acc:.4f}"
    # road and sky dominate this frame and must be recognised
    for cls in (0, 10):
        m = gt == cls
        if m.sum() > 10000:
            assert (pred[m] == cls).mean() > 0.9, cls


def test_arbitrary_size_predict_and_ignore_mapping(espnet):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 61, 90)  # not a multiple of 8: padded inside, cropped back
    with torch.no_grad():
        out = espnet(x)
        labels = espnet.predict(x)
    assert out.logits.shape == (2, 20, 61, 90)
    assert [tuple(f.shape[-2:]) for f in out.features] == [(31, 45), (16, 23), (8, 12)]
    assert labels.shape == (2, 61, 90)
    raw = out.logits.argmax(1)
    assert torch.equal(labels[raw < 19], raw[raw < 19])
    assert bool((labels[raw == 19] == 255).all())
    with pytest.raises(ValueError, match="B,3,H,W"):
        espnet(torch.rand(3, 32, 32))


def test_predict_maps_ignore_class_to_255():
    class Fixed(SemanticNet):
        num_classes, feature_channels = 20, [1, 1, 1]

        def forward(self, rgb01):
            logits = torch.zeros(1, 20, 1, 3)
            logits[0, 19, 0, 0] = 1.0  # "ignore" wins
            logits[0, 13, 0, 1] = 1.0  # car
            logits[0, 0, 0, 2] = 1.0  # road
            return SemanticOutput(logits, [])

    assert Fixed().predict(torch.rand(1, 3, 1, 3)).tolist() == [[[255, 13, 0]]]


def test_build_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="semantic net weights not found"):
        build_semantic_net(SemanticConfig(arch="espnet", weights=str(tmp_path / "missing.pth")))
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="do not match ESPNet"):
        build_semantic_net(SemanticConfig(arch="espnet", weights=str(bad)))
    net = build_semantic_net(SemanticConfig(arch="espnet"))  # random init (ablation "I"/untrained)
    assert isinstance(net, ESPNet) and net.num_classes == 20
