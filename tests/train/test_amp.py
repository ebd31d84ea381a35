"""Training's mixed-precision switch: what it accepts, and that bf16 autocast really computes in bf16 on the CPU."""

import pytest
import torch

from muse_fast.errors import ConfigError
from muse_fast.train.amp import autocast, check_amp


@pytest.mark.parametrize(
    "amp, device, message",
    [("fp16", "cpu", "CUDA only"), ("bf8", "cpu", "unknown --amp 'bf8'"), ("half", "cuda", "unknown")],
)
def test_bad_amp_is_refused_in_one_line(amp, device, message):
    with pytest.raises(ConfigError, match=message):
        check_amp(amp, device)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_good_amp_is_accepted(amp):
    check_amp(amp, "cpu")


@pytest.mark.parametrize("amp, dtype", [("none", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_sets_the_compute_dtype(amp, dtype):
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast(amp, torch.device("cpu")):
        out = conv(torch.rand(1, 3, 8, 8))
    assert out.dtype == dtype and conv.weight.dtype == torch.float32
