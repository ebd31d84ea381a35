"""Child process for tests/runtime/test_memory.py: tunes malloc as an engine does, then prints JSON with the minor
page faults of re-allocating a 64 MB buffer and the torch engine's outputs on two tiles of an image.

    python malloc_child.py IMAGE.png OUT.npz   (MUSE_FAST_MALLOC=system keeps glibc's defaults)
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np
import torch
from PIL import Image

from muse_fast.model.weights import load_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.memory import keep_large_buffers


def faults_per_buffer(rounds: int = 4) -> float:
    torch.empty(16 << 20).fill_(1.0)  # once before counting: the heap may grow the first time
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(rounds):
        torch.empty(16 << 20).fill_(float(i))  # 64 MB, freed at once
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / rounds


def main() -> None:
    torch.set_num_threads(1)
    model, meta = load_weights()
    engine = create_engine("torch", EngineInputs(model, meta, "0" * 64, "cpu", batch_size=2, precision="fp32"))
    image = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
    size = meta.tile_size
    tiles = np.stack([image[:size, :size], image[-size:, -size:]])
    runs = [engine.run(tiles) for _ in range(2)]  # the second run gets the first one's freed memory
    first, second = runs
    np.savez(sys.argv[2], centre=second.centre.numpy(), fmap=second.fmap.float().numpy())
    same = torch.equal(first.centre, second.centre) and torch.equal(first.fmap, second.fmap)
    print(
        json.dumps(
            {
                "state": keep_large_buffers(),
                "faults_per_64mb_buffer": faults_per_buffer(),
                "repeat_equal": bool(same),
            }
        )
    )


if __name__ == "__main__":
    main()
