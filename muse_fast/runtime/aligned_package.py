"""An AOTInductor package loaded with its frozen weights on 64-byte boundaries.

At load, AOTInductor (torch 2.13, CPU) copies a package's frozen weights into one block from ``std::malloc``, which
glibc aligns to 16 bytes only; every weight sits at the block's offset modulo 64 (weights are 64-byte multiples apart).
oneDNN's AMX convolutions read a misaligned weight row as two cache lines: on a 2-core AMX Xeon the compiled
``muse_r18`` ran 121-130 tiles/s in the loads whose block was at 16, 32 or 48 modulo 64 and 191-211 in those at 0,
sixteen loads in two processes (docs/results.md). Which one a load got depended on the heap's state, so the speed
looked bimodal between runs and even between loads in one process.

:class:`AlignedRunner` loads the package's shared library itself and hands the runner a 64-byte-aligned copy (from
torch's allocator) of each weight that is not on a 64-byte boundary, as user-managed constants. The runner computes
the same outputs from the same bytes. :func:`torch._inductor.aoti_load_package` is the reference path.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import torch

ALIGNMENT = 64  # bytes: a cache line, an AMX tile row


def data_ptr(tensor: torch.Tensor) -> int:
    """The address of a tensor's first byte, also for oneDNN (``mkldnn``) tensors."""
    return torch.ops.mkldnn.data_ptr(tensor) if tensor.is_mkldnn else tensor.data_ptr()


class AlignedRunner:
    """The network in an AOTInductor ``.pt2`` package (CPU), called like the reference runner: ``runner(x)``."""

    def __init__(self, path: Path, align: bool = True) -> None:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".wrapper.so")]
            if len(names) != 1:
                raise ValueError(f"expected one compiled library in {path}, found {len(names)}")
            with tempfile.TemporaryDirectory(prefix="muse-fast-aoti-") as tmp:
                library = archive.extract(names[0], tmp)
                self.container = torch._C._aoti.AOTIModelContainerRunnerCpu(library, 1)  # mapped: the file can go
        self.copies: dict[str, torch.Tensor] = self.align() if align else {}

    def constants(self) -> dict[str, torch.Tensor]:
        """The frozen weights the runner uses now, by their names in the compiled code."""
        extracted = self.container.extract_constants_map(False)  # keyed by the original names
        names = self.container.get_constant_names_to_original_fqns()
        return {name: extracted[fqn] for name, fqn in names.items() if fqn in extracted}

    def misaligned(self) -> list[str]:
        """Names of the weights not on a 64-byte boundary."""
        return [name for name, t in self.constants().items() if data_ptr(t) % ALIGNMENT]

    def align(self) -> dict[str, torch.Tensor]:
        """Give the runner an aligned copy of each misaligned weight; the copies (kept alive here) by name."""
        copies = {name: t.clone() for name, t in self.constants().items() if data_ptr(t) % ALIGNMENT}
        still = [name for name, t in copies.items() if data_ptr(t) % ALIGNMENT]
        if still:  # torch's CPU allocator aligns to 64 bytes; anything else is a new allocator
            raise RuntimeError(f"copies of {len(still)} weights are not 64-byte aligned either")
        if copies:
            self.container.update_constant_buffer(copies, False, False, True)  # active buffer, user-managed
        return copies

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.container.run([x]))
