"""An ONNX export (the first ``--engine onnx`` or ``auto`` run) prints no torch lines about torchvision ops."""

import importlib.util
import logging

import pytest
import torch
from torch import nn

pytest.importorskip("onnxscript", reason="onnx and onnxscript are needed (pip install -e .[cpu])")

from muse_fast.export.onnx import TORCH_ONNX_REGISTRATION_LOGGER, _dynamo_proto, dynamo_proto  # noqa: E402


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.conv(tiles)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _torchvision_lines(export) -> list[str]:
    log = logging.getLogger(TORCH_ONNX_REGISTRATION_LOGGER)
    records = Records()
    log.addHandler(records)
    try:
        export(Tiny(), torch.zeros(2, 3, 16, 16), "tiles", ["out"])
    finally:
        log.removeHandler(records)
    return [m for m in records.messages if "torchvision" in m]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_export_drops_the_torchvision_lines_that_torch_logs():
    assert len(_torchvision_lines(_dynamo_proto)) == 4  # nms, roi_align, roi_pool, deform_conv2d: what a user saw
    assert _torchvision_lines(dynamo_proto) == []
    assert not logging.getLogger(TORCH_ONNX_REGISTRATION_LOGGER).filters  # the filter is removed afterwards
