"""int8 ONNX models for ONNX Runtime on the CPU: dynamic (weights only) and static QDQ (calibrated activations).

Both start from the fp32 export (``export.onnx``). Dynamic quantization stores the MatMul weights as int8 and
quantizes activations per batch at run time, so it needs no calibration data. Static QDQ quantizes Conv and MatMul
inputs with ranges calibrated on representative tiles (e.g. BRCA-M2C train tiles); weights per channel.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from muse_fast.output.atomic import StagedFiles

from .onnx import INPUT_NAME

INT8_KINDS = ("dynamic", "static")


MIN_DYNAMIC_INT8_SHARE = 0.25  # below this, dynamic int8 leaves the network fp32 in all but name


def dynamic_int8_share(model) -> float:
    """The share of ``model``'s parameters that dynamic int8 quantizes: the Linear layers' (MatMul in ONNX).

    Convolutions stay fp32, so a convolutional network such as ``muse_r18`` (0.4%) gains nothing from it.
    """
    import torch

    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return linear / max(total, 1)


def check_dynamic_int8(model, name: str) -> None:
    """A one-line :class:`ConfigError` if dynamic int8 would quantize too little of ``model`` to be worth it."""
    from muse_fast.errors import ConfigError

    share = dynamic_int8_share(model)
    if share < MIN_DYNAMIC_INT8_SHARE:
        raise ConfigError(
            f"--precision int8 would quantize only {share:.1%} of {name}'s weights (dynamic int8 covers Linear/MatMul "
            "layers; its convolutions stay fp32), so it would run fp32 under another name, and static int8 of the "
            "convolutions, measured on the shipped muse_r18 weights, leaves 1.5-2.6% of the fp32 nuclei unmatched "
            "within 0.5 px (docs/results.md, int8); use --precision fp32, or --engine torch --precision bf16"
        )


def quantize_dynamic_int8(src: str | Path, out: str | Path) -> Path:
    """``src`` (fp32 ONNX) with int8 MatMul weights and run-time activation scales, written atomically to ``out``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    root, hint = logging.getLogger(), _NoPreprocessingHint()
    root.addFilter(hint)  # the quantizer's advice to pre-process is for static quantization; not ours to print
    try:
        with StagedFiles() as staged:
            tmp = staged.add(out)
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            staged.commit()
    finally:
        root.removeFilter(hint)
    return out


class _NoPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_static_int8(src: str | Path, out: str | Path, tiles: np.ndarray, batch: int = 8) -> Path:
    """``src`` as a QDQ int8 model calibrated (min/max) on ``tiles`` (``uint8 [N, T, T, 3]``), written to ``out``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(tiles[i : i + batch] for i in range(0, len(tiles), batch))

        def get_next(self) -> dict | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {INPUT_NAME: chunk}

    out = Path(out)
    with tempfile.TemporaryDirectory() as work, StagedFiles() as staged:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        tmp = staged.add(out)
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MatMul"],
        )
        staged.commit()
    return out
