"""Fused export (``muse-fast export --fused-post``): the dense network, then the post-processing, in one ONNX graph.

After the dense outputs the graph takes the centre logit through a Sigmoid, then one custom node
``muse_fast::NucleiDecode`` (peaks, compaction, sub-cell positions and the point gather, see
``kernels/nuclei_decode.py``), then the point classifier (softmax, most likely class). Outputs, ``K`` rows per tile
(padding rows are zeros): ``xy [B, K, 2]``, ``scores [B, K]``, ``counts [B]``, ``overflow [B]``,
``class_id [B, K]`` (int32) and ``class_prob [B, K]``. ``K`` is ``max_points`` capped at the most peaks a map can
hold (peaks are more than ``min_distance`` apart), so ``overflow`` stays 0 at the default settings.

TensorRT implements the custom node with ``libmuse_trt_plugin.so`` (CMake, needs TensorRT's headers); ONNX Runtime
has no implementation of it, so the dense part is checked against PyTorch (as ``export_model`` does) and the whole
graph with ``onnx.checker``.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from muse_fast.errors import BackendUnavailable
from muse_fast.kernels import native
from muse_fast.kernels.nuclei_decode import DOMAIN, OP_TYPE, DecodeParams
from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256, load_weights
from muse_fast.output.atomic import StagedFiles
from muse_fast.post.decode import DecodeConfig

from .onnx import INPUT_NAME, OUTPUT_NAMES, dynamo_proto, export_model

CLASS_OUTPUTS = ("class_id", "class_prob")
FUSED_OUTPUTS = ("xy", "scores", "counts", "overflow", *CLASS_OUTPUTS)
STRIDE = 4  # the dense maps are at 1/4 of the input resolution
PREFIX = "post/"  # internal names of the post-processing part


@dataclass(frozen=True)
class FusedExport:
    path: Path
    params: DecodeParams


def decode_params(cfg: DecodeConfig, tile_size: int) -> DecodeParams:
    """The op's attributes for ``tile_size`` inputs; ``K`` never exceeds the peaks a map can hold."""
    side = math.ceil(tile_size / STRIDE / (cfg.min_distance + 1))
    return DecodeParams(cfg.threshold, cfg.min_distance, min(cfg.max_points, side * side), 0, STRIDE, (tile_size,) * 2)


class ClassHead(nn.Module):
    """``feats [B, K, D]`` -> ``(class_id int32 [B, K], class_prob [B, K])``, as the decoders classify."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, feats: torch.Tensor):
        probs = torch.softmax(self.classifier(feats).float(), dim=-1)
        prob, idx = probs.max(dim=-1)
        return idx.to(torch.int32), prob


def _rename_internal(graph, prefix: str) -> None:
    """Prefix every name of ``graph`` except its inputs and outputs (so two exported graphs can share one)."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    new = {name: prefix + name for name in names - keep if name}
    for node in graph.node:
        node.name = prefix + node.name if node.name else node.name
        node.input[:] = [new.get(x, x) for x in node.input]
        node.output[:] = [new.get(x, x) for x in node.output]
    for item in list(graph.initializer) + list(graph.value_info):
        item.name = new.get(item.name, item.name)


def tail_model(dense, classifier: nn.Module, p: DecodeParams):
    """``(centre, fmap)`` -> the fused outputs, with the dense model's IR version, opset and output types."""
    import onnx
    from onnx import TensorProto, helper

    outs = {v.name: v.type.tensor_type for v in dense.graph.output}
    batch = outs["centre"].shape.dim[0].dim_param or "batch"
    _, d, h, w = (x.dim_value for x in outs["fmap"].shape.dim)
    opset = next(o.version for o in dense.opset_import if o.domain in ("", "ai.onnx"))
    k = p.max_points
    head_module = ClassHead(copy.deepcopy(classifier)).float().eval()  # the caller's classifier stays as it is
    head = dynamo_proto(head_module, torch.randn(2, k, d), "feats", CLASS_OUTPUTS, opset)
    _rename_internal(head.graph, PREFIX + "head/")

    def const(name, values):
        value = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        return helper.make_node("Constant", [], [name], value=value)

    f32 = TensorProto.FLOAT
    nodes = [
        const("post/c0", [0]), const("post/c1", [1]), const("post/c3", [3]),
        helper.make_node("Cast", ["centre"], ["post/centre32"], to=f32),
        helper.make_node("Cast", ["fmap"], ["post/fmap32"], to=f32),
        helper.make_node("Slice", ["post/centre32", "post/c0", "post/c1", "post/c1"], ["post/logit"]),
        helper.make_node("Slice", ["post/centre32", "post/c1", "post/c3", "post/c1"], ["post/offsets"]),
        helper.make_node("Sigmoid", ["post/logit"], ["post/heat4"]),
        helper.make_node("Squeeze", ["post/heat4", "post/c1"], ["post/heat"]),
        helper.make_node(
            OP_TYPE,
            ["post/heat", "post/offsets", "post/fmap32"],
            ["xy", "scores", "counts", "overflow", "feats"],
            name="post/nuclei_decode",
            domain=DOMAIN,
            threshold=float(p.threshold),
            min_distance=int(p.min_distance),
            max_points=int(k),
            exclude_border=int(p.exclude_border),
            stride=int(p.stride),
            input_h=int(p.input_hw[0]),
            input_w=int(p.input_hw[1]),
        ),
    ]  # fmt: skip
    info = helper.make_tensor_value_info
    decoded = [("xy", f32, [batch, k, 2]), ("scores", f32, [batch, k]), ("counts", TensorProto.INT32, [batch])]
    decoded += [("overflow", TensorProto.INT32, [batch])]
    outputs = [info(n, t, s) for n, t, s in decoded]
    outputs += [info(v.name, v.type.tensor_type.elem_type, [batch, k]) for v in head.graph.output]
    inputs = [info(n, outs[n].elem_type, [batch, c, h, w]) for n, c in (("centre", 3), ("fmap", d))]
    graph = helper.make_graph(
        nodes + list(head.graph.node),
        "muse_fast_post",
        inputs,
        outputs,
        initializer=list(head.graph.initializer),
        value_info=[info("feats", f32, [batch, k, d])],
    )
    opsets = [o for o in head.opset_import if o.domain != DOMAIN] + [helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=dense.ir_version, functions=head.functions)
    onnx.checker.check_model(model)
    return model


def fuse(dense, classifier: nn.Module, p: DecodeParams):
    """The dense model with the post-processing appended (one graph: tiles -> nuclei), checked by onnx.checker."""
    import onnx

    fused = onnx.compose.merge_models(dense, tail_model(dense, classifier, p), io_map=[(n, n) for n in OUTPUT_NAMES])
    opsets = {o.domain: o.version for o in fused.opset_import}  # merge_models lists the shared domain twice
    del fused.opset_import[:]
    fused.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in opsets.items())
    del fused.metadata_props[:]
    fused.metadata_props.extend(dense.metadata_props)
    entry = fused.metadata_props.add()
    entry.key, entry.value = "muse_fast.fused_post", json.dumps({**p._asdict(), "op": f"{DOMAIN}::{OP_TYPE}"})
    onnx.checker.check_model(fused, full_check=True)
    return fused


def export_fused(
    weights: str | Path | None, out: str | Path, precision: str = "fp32", cfg: DecodeConfig | None = None
) -> FusedExport:
    """Export ``weights`` (default: shipped) with ``--fused-post`` to ``out`` (the dense part checked as usual)."""
    import onnx

    model, meta = load_weights(weights)
    sha = file_sha256(weights if weights is not None else DEFAULT_WEIGHTS)
    p = decode_params(cfg or DecodeConfig(), meta.tile_size)
    with tempfile.TemporaryDirectory() as tmp:
        dense = onnx.load(str(export_model(model, meta, sha, Path(tmp) / "dense.onnx", precision=precision).path))
    fused = fuse(dense, model.classifier, p)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with StagedFiles() as staged:
        onnx.save(fused, str(staged.add(out)))
        staged.commit()
    return FusedExport(out, p)


def fused_engine_unavailable_reason() -> str | None:
    """Why a fused TensorRT engine cannot be built here (TensorRT, a GPU, the plugin library), or None."""
    from .tensorrt import tensorrt_unavailable_reason

    if reason := tensorrt_unavailable_reason():
        return f"{reason} (`--format onnx --fused-post` writes the fused ONNX without it)"
    if native.library_path("trt") is None:
        return native.not_built_reason("trt")
    return None


def build_fused_engine(weights: str | Path | None, out: str | Path, spec) -> Path:
    """``--format trt --fused-post``: the fused ONNX (next to ``out``), then a TensorRT engine with the plugin.

    TensorRT and the plugin library are checked first, so that without them nothing is exported or written.
    """
    from .cache import write_atomic
    from .tensorrt import build_engine

    if reason := fused_engine_unavailable_reason():
        raise BackendUnavailable(f"cannot build a --fused-post engine: {reason}")
    load_plugin()
    out = Path(out)
    result = export_fused(weights, out.with_suffix(".onnx"), spec.precision)
    size = result.params.input_hw
    write_atomic(out, build_engine(result.path, spec, INPUT_NAME, (size[0], size[1], 3)))
    return out


def load_plugin() -> None:
    """Register the NucleiDecode plugin with TensorRT's plugin registry (before parsing a fused ONNX)."""
    import tensorrt as trt

    path = native.library_path("trt")
    if path is None or not trt.get_plugin_registry().load_library(str(path)):
        why = native.not_built_reason("trt") if path is None else f"TensorRT cannot load {path}; rebuild it"
        raise BackendUnavailable(why)


__all__ = ["FUSED_OUTPUTS", "FusedExport", "build_fused_engine", "decode_params", "export_fused", "fuse", "tail_model"]
