"""FPN-ResNet semantic net (§4.2): output contract, weight loading through the config, learning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semdepth_core.config import SemanticConfig
from semdepth_core.nets.semantic import SemanticOutput, build_semantic_net
from semdepth_core.nets.semantic.fpn import FPN, FPNSemantic


@pytest.mark.parametrize("backbone,ch", [("resnet18", [64, 128, 128]), ("resnet50", [64, 256, 256])])
def test_output_contract(backbone, ch):
    torch.manual_seed(0)
    net = FPNSemantic(backbone, num_classes=20).eval()
    x = torch.rand(2, 3, 70, 100)  # not a multiple of 32: padded inside and cropped back
    with torch.no_grad():
        out = net(x)
        labels = net.predict(x)
    assert isinstance(out, SemanticOutput)
    assert out.logits.shape == (2, 20, 70, 100)
    assert net.feature_channels == ch and net.feature_strides == [2, 4, 8] and net.num_classes == 20
    assert [tuple(f.shape) for f in out.features] == [(2, ch[0], 35, 50), (2, ch[1], 18, 25), (2, ch[2], 9, 13)]
    assert torch.isfinite(out.logits).all()
    assert labels.shape == (2, 70, 100) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= set(range(19)) | {255}


def test_fpn_top_down_pathway_carries_coarse_information():
    """A change at the coarsest level reaches P2 through the top-down path (and only through it)."""
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32], 4)
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    p = fpn(feats)
    assert [tuple(t.shape) for t in p] == [(1, 4, 16, 16), (1, 4, 8, 8), (1, 4, 4, 4)]
    feats2 = [feats[0], feats[1], feats[2] + 1.0]
    p2 = fpn(feats2)
    assert (p2[0] - p[0]).abs().max() > 1e-4
    feats3 = [feats[0] + 1.0, feats[1], feats[2]]
    assert torch.allclose(fpn(feats3)[2], p[2])  # no bottom-up path inside the FPN itself


def test_build_from_config_and_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_semantic_net(SemanticConfig(arch="fpn_resnet18")).eval()
    assert isinstance(net, FPNSemantic) and net.backbone_name == "resnet18"
    path = tmp_path / "fpn.pth"
    torch.save({"semantic_net": net.state_dict()}, path)  # the train_semantic checkpoint layout
    torch.manual_seed(1)
    loaded = build_semantic_net(SemanticConfig(arch="fpn_resnet18", weights=str(path))).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x).logits, loaded(x).logits)
    with pytest.raises(ValueError, match="do not match FPNSemantic"):
        build_semantic_net(SemanticConfig(arch="fpn_resnet50", weights=str(path)))
    with pytest.raises(FileNotFoundError, match="not found"):
        build_semantic_net(SemanticConfig(arch="fpn_resnet18", pretrained_backbone=str(tmp_path / "none.pth")))
    with pytest.raises(ValueError, match="backbone"):
        FPNSemantic("resnet34")


def test_learns_a_simple_segmentation():
    """A few SGD steps fit a two-region image (sky above, road below): every part gets gradients."""
    torch.manual_seed(0)
    net = FPNSemantic("resnet18", num_classes=20)
    x = torch.rand(2, 3, 32, 32) * 0.2
    x[:, 2, :16] += 0.7  # bluish top half
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :16] = 10  # sky
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(10):
        out = net(x)
        loss = F.cross_entropy(out.logits, target, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert net.encoder.conv1.weight.grad.abs().sum() > 0 and net.head.classifier.weight.grad.abs().sum() > 0
    assert losses[-1] < 0.3 * losses[0], losses
    net.eval()
    acc = (net.predict(x) == target).float().mean()
    assert acc > 0.9, acc
