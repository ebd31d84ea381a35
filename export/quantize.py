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
