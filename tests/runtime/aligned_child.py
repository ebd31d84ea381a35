"""Child process for tests/runtime/test_aligned_package.py: loads a compiled package without aligning it until a
load leaves its weights misaligned (a few bytes of the heap taken before each try shift where glibc puts the weight
block), then aligns that runner, and prints JSON with what it found and whether the outputs before and after equal
inductor's own loader's.

    python aligned_child.py PACKAGE.pt2 BATCH TILE
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np
import torch

from muse_fast.runtime.aligned_package import AlignedRunner

TRIES = 16


def main(path: str, batch: int, tile: int) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    kept, runner, tries = [], None, 0
    for tries in range(1, TRIES + 1):
        kept.append(libc.malloc(8192 + 16 * tries))  # never freed: the heap's top moves by 16-byte steps
        runner = AlignedRunner(path, align=False)
        kept.append(runner)
        if runner.misaligned():
            break
    reference = torch._inductor.aoti_load_package(path)
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (batch, tile, tile, 3), dtype=np.uint8))
    want = reference(x)
    found = {"tries": tries, "constants": len(runner.constants()), "misaligned_as_loaded": len(runner.misaligned())}
    found["equal_as_loaded"] = [torch.equal(a, b) for a, b in zip(runner(x), want)]
    found["copies"] = len(runner.align())
    found["misaligned_aligned"] = len(runner.misaligned())
    found["equal_aligned"] = [torch.equal(a, b) for a, b in zip(runner(x), want)]
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
