"""The embedded default weights: documented, reproducible recipe; committed file of that architecture."""
from __future__ import annotations

import torch

from semdepth_core.checkpoint import load_checkpoint
from semdepth_core.config import config_from_dict, load_config
from semdepth_core.infer.loading import load_models
from semdepth_core.paths import REPO_ROOT
from training.make_default import DEFAULT_OUT, DEPTH_CONFIG, SEMANTIC_CONFIG, make_default


def _arch(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_recipe_is_documented():
    assert DEPTH_CONFIG.is_file() and SEMANTIC_CONFIG.is_file()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "python -m training.make_default" in readme
    cfg = load_config(DEPTH_CONFIG)
    assert cfg.model.guidance and cfg.model.semantic.enabled and cfg.loss.velocity_weight > 0
    assert "cityscapes" not in cfg.model.semantic.weights.lower()  # the project's own semantic net


def test_committed_default_is_small_and_loads():
    assert DEFAULT_OUT.is_file(), "semdepth_ros/weights/default.ckpt must be committed"
    assert DEFAULT_OUT.stat().st_size < 5000 * 1024
    ckpt = load_checkpoint(DEFAULT_OUT)
    prov = ckpt["provenance"]
    assert prov["recipe"] == "python -m training.make_default" and prov["depth_steps"] > 100
    models = load_models(DEFAULT_OUT)
    assert models.config.model.guidance and models.pose_net is not None
    out = models.depth_model(torch.rand(1, 3, models.config.data.height, models.config.data.width))
    assert out["sem_logits"] is not None and torch.isfinite(out["inv_depths"][0]).all()


def test_quick_recipe_reproduces_the_architecture(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "default.ckpt"
        info = make_default(out, quick=True, work_dir=str(tmp_path / "runs"))
    finally:
        torch.set_num_threads(threads)
    assert info["size_kib"] < 5000
    new = load_checkpoint(out)
    load_models(out)  # loads through the one inference path
    doc = load_config(DEPTH_CONFIG).model
    got = config_from_dict(new["config"]).model
    for field in ("depth_net", "mobilenet_last_block", "decoder_channels", "pose_width", "guidance", "pose_encoder"):
        assert getattr(got, field) == getattr(doc, field), field
    assert got.semantic.arch == doc.semantic.arch
    if DEFAULT_OUT.is_file():
        committed = load_checkpoint(DEFAULT_OUT)
        assert _arch(new["depth_model"]) == _arch(committed["depth_model"])
        assert _arch(new["pose_net"]) == _arch(committed["pose_net"])
