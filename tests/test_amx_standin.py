"""benchmarks/amx_standin.py's replay engine: each batch's real outputs once, then the same values (fresh copies, as a
network writes them) after the stand-in's own work, without calling the real network again."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from muse_fast.model.registry import DenseOutputs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "amx_standin.py"


def _module():
    spec = importlib.util.spec_from_file_location("amx_standin_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class CountingEngine:
    """A network whose outputs depend on the pixels, counting its calls."""

    name, device, precision = "fake", torch.device("cpu"), "bf16"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, tiles: np.ndarray) -> DenseOutputs:
        self.calls += 1
        mean = torch.from_numpy(tiles.astype(np.float32)).mean(dim=(1, 2, 3))
        return DenseOutputs(mean[:, None, None, None].expand(-1, 3, 4, 4).clone(), torch.rand(len(tiles), 8, 4, 4))

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return feats[:, :3]


def test_each_batch_runs_the_network_once_then_replays_it_after_the_burn():
    standin = _module()
    real, burned = CountingEngine(), []
    engine = standin.ReplayEngine(real, burn=lambda tiles: burned.append(tiles.shape))
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    first_a, first_b = engine.run(a), engine.run(b)
    assert real.calls == 2 and burned == [] and engine.calls == []  # recorded, not replayed
    again_a, again_b = engine.run(a), engine.run(b)
    assert real.calls == 2 and burned == [a.shape, b.shape] and len(engine.calls) == 2
    for first, again in ((first_a, again_a), (first_b, again_b)):
        assert torch.equal(first.centre, again.centre) and torch.equal(first.fmap, again.fmap)
        assert again.fmap.data_ptr() != first.fmap.data_ptr()  # a fresh copy each call, as a network writes one
    assert not torch.equal(again_a.centre, again_b.centre)  # each batch its own outputs
    short = engine.run(a[:5])  # another shape is another batch
    assert real.calls == 3 and short.centre.shape[0] == 5


def test_without_a_burn_the_outputs_come_back_at_once():
    standin = _module()
    real = CountingEngine()
    engine = standin.ReplayEngine(real)
    tiles = np.full((4, 32, 32, 3), 200, np.uint8)
    engine.run(tiles)
    out = engine.run(tiles)
    assert real.calls == 1 and len(engine.calls) == 1 and torch.all(out.centre == 200)
    assert engine.classify(torch.ones(2, 8)).shape == (2, 3)
