"""ONNX export of the dense network (uint8 NHWC tiles -> centre map, feature map) with a dynamic batch.

The graph takes tiles exactly as the runtime holds them (``uint8 [B, T, T, 3]``), so engines copy a quarter of the
bytes of a float input; normalisation happens inside. The point classifier is not in the graph: it is a tiny MLP on
point features and runs after the point gather (it stays in the weights file). Export uses the reference ops, then
``onnx.checker`` and an onnxruntime parity check run as part of the export. Metadata (model, mpp, tile size,
classes, weights hash) is stored in the model's ``metadata_props``.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muse_fast.errors import BackendUnavailable, WeightsError
from muse_fast.model.registry import MuseNet
from muse_fast.model.weights import DEFAULT_WEIGHTS, WeightsMeta, file_sha256, load_weights
from muse_fast.output.atomic import StagedFiles

INPUT_NAME = "tiles"
OUTPUT_NAMES = ("centre", "fmap")
PARITY_ATOL = 1e-3  # fp32 ORT vs eager PyTorch on the dense outputs (observed ~1e-5; see tests)
PARITY_ATOL_FP16 = 0.1  # fp16 graph vs fp32 PyTorch (observed ~1e-2): 11 significant bits through ~20 layers


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}  # fp16: for strongly typed TensorRT builds


class DenseGraph(nn.Module):
    """``uint8 [B, T, T, 3]`` -> ``(centre [B,3,T/4,T/4], fmap [B,D,T/4,T/4])`` in the model's dtype."""

    def __init__(self, model: MuseNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, tiles: torch.Tensor):
        # cast first: TensorRT allows a uint8 input only when a Cast consumes it directly
        out = self.model(tiles.to(self.dtype).permute(0, 3, 1, 2))
        return out.centre, out.fmap


def graph_of(model: MuseNet, precision: str = "fp32") -> DenseGraph:
    """An eval-mode CPU copy of ``model`` in ``precision``; the caller's model (device, dtype, mode) stays as is."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown ONNX precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return DenseGraph(copy.deepcopy(model).to(device="cpu", dtype=dtype), dtype).eval()


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    meta: WeightsMeta
    weights_sha256: str
    max_abs_diff: dict[str, float]


def onnx_metadata(meta: WeightsMeta, weights_sha256: str) -> dict[str, str]:
    return {
        "muse_fast.model": meta.model,
        "muse_fast.mpp": str(meta.mpp),
        "muse_fast.tile_size": str(meta.tile_size),
        "muse_fast.classes": json.dumps(list(meta.classes)),
        "muse_fast.weights_sha256": weights_sha256,
    }


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BackendUnavailable(f"ONNX export needs '{module}'; pip install onnx onnxscript onnxruntime")


def export_onnx(
    weights: str | Path | None, out: str | Path, parity_batch: int = 2, check: bool = True, precision: str = "fp32"
) -> OnnxExport:
    """Export ``weights`` (default: shipped) to ``out``, then check it (onnx.checker, onnxruntime parity)."""
    model, meta = load_weights(weights)
    sha = file_sha256(weights if weights is not None else DEFAULT_WEIGHTS)
    return export_model(model, meta, sha, out, parity_batch, check, precision)


def export_model(
    model: MuseNet,
    meta: WeightsMeta,
    weights_sha256: str,
    out: str | Path,
    parity_batch: int = 2,
    check: bool = True,
    precision: str = "fp32",
) -> OnnxExport:
    """Export an in-memory model (see :func:`export_onnx`) from a copy: ``model`` itself is not changed.

    ``precision="fp16"`` writes an fp16 graph (fp16 weights and outputs) for strongly typed TensorRT builds; its
    onnxruntime parity check compares with the fp32 model at :data:`PARITY_ATOL_FP16`.
    """
    for module in ("onnx", "onnxscript"):
        _require(module)
    import onnx

    sha = weights_sha256
    graph = graph_of(model, precision)
    size = meta.tile_size
    example = torch.randint(
        0, 256, (parity_batch, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proto = dynamo_proto(graph, example, INPUT_NAME, OUTPUT_NAMES)
    for key, value in onnx_metadata(meta, sha).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with StagedFiles() as staged:  # the file appears under ``out`` only once it passed the checks
        tmp = staged.add(out)
        onnx.save(proto, str(tmp))
        diffs = {}
        if check:
            onnx.checker.check_model(str(tmp), full_check=True)
            diffs = onnxruntime_parity(tmp, graph if precision == "fp32" else graph_of(model), example)
            atol = PARITY_ATOL if precision == "fp32" else PARITY_ATOL_FP16
            bad = {k: v for k, v in diffs.items() if v > atol}
            if bad:
                raise WeightsError(f"ONNX export does not match PyTorch (max |diff| {bad}); report this model")
        staged.commit()
    return OnnxExport(out, meta, sha, diffs)


# torch's exporter logs "torchvision is not installed. Skipping torchvision::nms" (and roi_align, roi_pool,
# deform_conv2d) on every export without torchvision: our graphs use none of those ops, so the lines are only noise
TORCH_ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def _not_torchvision_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("torchvision is not installed. Skipping torchvision::")


def dynamo_proto(module: nn.Module, example: torch.Tensor, input_name: str, output_names, opset: int | None = None):
    """``module`` on ``example`` through the dynamo exporter as a ModelProto, with a dynamic batch (1-1024)."""
    registration_log = logging.getLogger(TORCH_ONNX_REGISTRATION_LOGGER)
    registration_log.addFilter(_not_torchvision_noise)
    try:
        return _dynamo_proto(module, example, input_name, output_names, opset)
    finally:
        registration_log.removeFilter(_not_torchvision_noise)


def _dynamo_proto(module: nn.Module, example: torch.Tensor, input_name: str, output_names, opset: int | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            external_data=False,
            verbose=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes={input_name: {0: torch.export.Dim("batch", min=1, max=1024)}},
        )
    return program.model_proto


def onnxruntime_parity(path: str | Path, graph: DenseGraph, tiles: torch.Tensor) -> dict[str, float]:
    """Max |ORT - PyTorch| per output on ``tiles`` (CPU execution provider, fp32)."""
    _require("onnxruntime")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles.numpy()})
    with torch.no_grad():
        ref = graph(tiles)
    return {name: float(np.abs(g.astype(np.float32) - r.numpy()).max()) for name, g, r in zip(OUTPUT_NAMES, got, ref)}
