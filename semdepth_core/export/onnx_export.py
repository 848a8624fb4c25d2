"""Export a checkpoint to ONNX: one depth(+semantics) graph and a separate small pose graph.

Depth graph ("rgb" [1,3,H,W] float32 RGB in [0,1]; normalisation is inside the networks):
  * "inv_depth" [1,1,H,W] float32 -- scale 0 (full network resolution) of the decoder;
  * "labels"    [1,H,W]  uint8    -- argmax of the semantic logits (class indices 0..C-1; the
                                     shared postprocess maps the void class 19 to 255);
  * "logits"    [1,C,H,W] float32 -- only with logits=True.
The semantic network runs once inside DepthModel.forward and feeds both the guidance branches and
the labels, so the exported graph computes the semantic features once.

Pose graph ("tgt", "ctx0".."ctx{N-1}" [1,3,H,W]) -> "pose" [1,N,6] = (tx,ty,tz,rx,ry,rz) of T_ctx_tgt
per context frame (N = the pose net's num_context).
It is written beside the depth graph as `<stem>.pose.onnx`.

PAC layers (Eq. 4-5), `pac=`:
  * "decomposed": PacConv2d's export path is already standard ops (pad/slice/conv/exp/mul/add),
    runs in any ONNX runtime; this is what the onnxruntime backend uses.
  * "custom-op": each PacConv2d becomes one node `semdepth::PacConv2d` (domain "semdepth",
    version 1) with inputs (x, guide, weight, bias, log_sigma) and attributes kernel_size,
    dilation, sigma_mode, stride, padding -- for TensorRT with the fused CUDA plugin.
    Implemented with a torch.autograd.Function carrying a `symbolic` staticmethod under the
    TorchScript-based exporter (dynamo=False). Chosen over rewriting the decomposed ONNX graph
    because the layer boundary and its parameters are known exactly at trace time, whereas a
    graph rewrite would have to pattern-match the k*k unrolled slice/conv/exp subgraph, which is
    fragile to any change in PacConv2d's loop or to constant folding.

Files are written atomically (temp file + fsync + rename) with metadata (checkpoint sha256,
input size, PAC mode) in `metadata_props` so a stale graph can be detected.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from semdepth_core.checkpoint import atomic_write_bytes
from semdepth_core.nets.pac_torch import _out_size as _conv_out  # nn.Conv2d's output-size formula

PAC_MODES = ("decomposed", "custom-op")
CUSTOM_DOMAIN = "semdepth"
CUSTOM_OP = "PacConv2d"
OPSET = 17
META_PREFIX = "semdepth."


@dataclass
class ExportResult:
    depth_path: Path
    pose_path: Path | None
    outputs: list[str]
    pac: str
    num_pac_nodes: int


def pose_graph_path(depth_path: str | Path) -> Path:
    """Where the pose graph of a depth graph lives: model.onnx -> model.pose.onnx."""
    p = Path(depth_path)
    return p.with_name(p.stem + ".pose.onnx")


def semantic_graph_path(depth_path: str | Path) -> Path:
    """Where the separate semantic graph of a split export lives: model.onnx -> model.semantic.onnx."""
    p = Path(depth_path)
    return p.with_name(p.stem + ".semantic.onnx")


def can_split_semantics(config) -> bool:
    """True when the semantic net can run apart from the depth net: it exists and guides nothing."""
    return bool(config.model.semantic.enabled) and not bool(config.model.guidance)


# --------------------------------------------------------------------------- wrappers

class DepthGraph(nn.Module):
    """DepthModel -> (inv_depth scale 0, labels uint8 [, logits]); with_semantics=False: inv_depth only
    (an unguided model whose semantic net is exported as its own graph, `SemanticGraph`)."""

    def __init__(self, depth_model: nn.Module, logits: bool = False, with_semantics: bool = True):
        super().__init__()
        self.depth_model = depth_model
        self.logits = logits
        self.with_semantics = with_semantics

    def forward(self, rgb: torch.Tensor):
        out = self.depth_model(rgb, with_semantics=self.with_semantics)
        inv = out["inv_depths"][0]
        sem = out.get("sem_logits")
        if sem is None:
            return inv
        labels = torch.argmax(sem, dim=1).to(torch.uint8)
        return (inv, labels, sem) if self.logits else (inv, labels)


class SemanticGraph(nn.Module):
    """DepthModel's semantic net alone: rgb -> labels uint8 [1,H,W] (argmax at the depth input size)."""

    def __init__(self, depth_model: nn.Module):
        super().__init__()
        self.depth_model = depth_model

    def forward(self, rgb: torch.Tensor):
        return torch.argmax(self.depth_model.run_semantic(rgb).logits, dim=1).to(torch.uint8)


class PoseGraph(nn.Module):
    """PoseNet(tgt, [ctx0..ctxN-1]) -> [1,N,6] pose vectors of T_ctx_tgt."""

    def __init__(self, pose_net: nn.Module):
        super().__init__()
        self.pose_net = pose_net

    def forward(self, tgt: torch.Tensor, *ctxs: torch.Tensor) -> torch.Tensor:
        return self.pose_net(tgt, list(ctxs))


# ------------------------------------------------------------------- custom PAC op

class PacConv2dOp(torch.autograd.Function):
    """Eq. 4-5 whose ONNX symbolic is a single `semdepth::PacConv2d` node."""

    @staticmethod
    def forward(ctx, x, guide, weight, bias, log_sigma, kernel_size, stride, padding, dilation, sigma_mode):
        from semdepth_core.nets.pac_torch import pac_loop

        return pac_loop(x, guide, weight, bias, log_sigma, stride, padding, dilation)

    @staticmethod
    def symbolic(g, x, guide, weight, bias, log_sigma, kernel_size, stride, padding, dilation, sigma_mode):
        out = g.op(f"{CUSTOM_DOMAIN}::{CUSTOM_OP}", x, guide, weight, bias, log_sigma,
                   kernel_size_i=int(kernel_size), stride_i=int(stride), padding_i=int(padding),
                   dilation_i=int(dilation), sigma_mode_s=str(sigma_mode))
        xt = x.type()
        sizes = xt.varyingSizes() if hasattr(xt, "varyingSizes") else None
        wsizes = weight.type().varyingSizes() if hasattr(weight.type(), "varyingSizes") else None
        if sizes and wsizes and len(sizes) == 4 and None not in sizes[2:] and wsizes[0] is not None:
            ho = _conv_out(sizes[2], kernel_size, stride, padding, dilation)
            wo = _conv_out(sizes[3], kernel_size, stride, padding, dilation)
            out.setType(xt.with_sizes([sizes[0], wsizes[0], ho, wo]))
        else:
            out.setType(xt)
        return out


@contextlib.contextmanager
def pac_as_custom_op(model: nn.Module):
    """Temporarily route every PacConv2d in `model` through PacConv2dOp (restored on exit)."""
    from semdepth_core.nets.pac import PacConv2d

    patched = []
    for m in model.modules():
        if isinstance(m, PacConv2d):
            def fwd(x, guide, _m=m):
                bias = _m.bias if _m.bias is not None else torch.zeros(_m.out_ch, dtype=x.dtype, device=x.device)
                return PacConv2dOp.apply(x, guide, _m.weight, bias, _m.log_sigma, _m.kernel_size, _m.stride,
                                         _m.padding, _m.dilation, _m.sigma_mode)
            m.forward = fwd
            patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward  # back to the class method


# ------------------------------------------------------------------------- export

def _to_onnx_bytes(module: nn.Module, args: tuple, input_names, output_names, custom: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, do_constant_folding=True,
                          custom_opsets={CUSTOM_DOMAIN: 1} if custom else None,
                          autograd_inlining=not custom)
    return buf.getvalue()


def _finalise(data: bytes, meta: dict[str, str]):
    import onnx

    model = onnx.load_from_string(data)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, str(v)
    onnx.checker.check_model(model)
    return model


def _write_model(model, path: Path, sidecar: bool = False) -> None:
    data = model.SerializeToString()
    if sidecar:
        from semdepth_core.export.cache_integrity import record_integrity, sidecar_path

        sidecar_path(path).unlink(missing_ok=True)  # never leave an old record beside new bytes
        atomic_write_bytes(path, lambda f: f.write(data))
        record_integrity(path, data)
    else:
        atomic_write_bytes(path, lambda f: f.write(data))


def read_metadata(path_or_model) -> dict[str, str]:
    """The semdepth.* metadata of an exported graph (keys without the prefix)."""
    import onnx

    model = onnx.load(str(path_or_model), load_external_data=False) if isinstance(path_or_model, (str, Path)) \
        else path_or_model
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def export_loaded(models, out: str | Path, net_size: tuple[int, int], pac: str = "decomposed",
                  logits: bool = False, pose: bool = True, sidecar: bool = False,
                  split_semantics: bool = False) -> ExportResult:
    """Export already-loaded models (infer.loading.LoadedModels) at net_size=(W, H).

    sidecar: also write `<graph>.sha256` integrity records (export cache; see cache_integrity).
    split_semantics: for an unguided model with a semantic net, the depth graph outputs inv_depth only
    and the semantic net goes to its own graph (`semantic_graph_path`), so a caller can run them
    apart (the node's `semantics.rate`)."""
    if pac not in PAC_MODES:
        raise ValueError(f"pac must be one of {PAC_MODES}, got {pac!r}")
    if split_semantics and not can_split_semantics(models.config):
        raise ValueError("split_semantics needs a semantic net that guides nothing "
                         "(model.semantic.enabled: true, model.guidance: false)")
    w, h = net_size
    out = Path(out)
    depth_model = models.depth_model.cpu().eval()
    has_sem = bool(models.config.model.semantic.enabled) and not split_semantics
    outputs = ["inv_depth"] + (["labels"] + (["logits"] if logits else []) if has_sem else [])
    meta = {"checkpoint_sha256": models.checkpoint_sha256, "height": h, "width": w, "pac": pac,
            "outputs": ",".join(outputs), "min_depth": models.config.model.min_depth,
            "max_depth": models.config.model.max_depth, "semantics": "split" if split_semantics else "joint"}
    x = torch.rand(1, 3, h, w)
    graph = DepthGraph(depth_model, logits=logits, with_semantics=has_sem).eval()
    with torch.no_grad():
        if pac == "custom-op":
            with pac_as_custom_op(depth_model) as n_pac:
                data = _to_onnx_bytes(graph, (x,), ["rgb"], outputs, custom=True)
        else:
            from semdepth_core.nets.pac import PacConv2d

            n_pac = sum(isinstance(m, PacConv2d) for m in depth_model.modules())
            data = _to_onnx_bytes(graph, (x,), ["rgb"], outputs, custom=False)
    model = _finalise(data, {**meta, "graph": "depth"})
    if pac == "custom-op":
        found = sum(n.op_type == CUSTOM_OP and n.domain == CUSTOM_DOMAIN for n in model.graph.node)
        if found != n_pac:
            raise RuntimeError(f"custom-op export produced {found} {CUSTOM_DOMAIN}::{CUSTOM_OP} nodes for {n_pac} PAC layers")
    _write_model(model, out, sidecar)
    if split_semantics:
        with torch.no_grad():
            sdata = _to_onnx_bytes(SemanticGraph(depth_model).eval(), (x,), ["rgb"], ["labels"], custom=False)
        _write_model(_finalise(sdata, {**meta, "graph": "semantic", "outputs": "labels"}),
                     semantic_graph_path(out), sidecar)

    pose_path = None
    if pose and models.pose_net is not None:
        pose_path = pose_graph_path(out)
        pg = PoseGraph(models.pose_net.cpu().eval()).eval()
        n_ctx = int(getattr(models.pose_net, "num_context", 1))
        ctx_names = [f"ctx{i}" for i in range(n_ctx)]
        with torch.no_grad():
            pdata = _to_onnx_bytes(pg, (x, *[torch.rand(1, 3, h, w) for _ in ctx_names]), ["tgt", *ctx_names],
                                   ["pose"], custom=False)
        _write_model(_finalise(pdata, {**meta, "graph": "pose", "outputs": "pose"}), pose_path, sidecar)
    return ExportResult(out, pose_path, outputs, pac, n_pac)


def export_onnx(checkpoint: str | Path, out: str | Path, height: int | None = None, width: int | None = None,
                pac: str = "decomposed", logits: bool = False, pose: bool = True) -> ExportResult:
    """Rebuild the models from `checkpoint`'s config and export them (see the module docstring)."""
    from semdepth_core.infer.loading import load_models
    from semdepth_core.infer.processing import check_network_size

    models = load_models(checkpoint, "cpu")
    h = height if height is not None else models.config.data.height
    w = width if width is not None else models.config.data.width
    h, w = check_network_size(h, w)
    return export_loaded(models, out, (w, h), pac=pac, logits=logits, pose=pose)
