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

It runs the network through AOTInductor's C interface (``ctypes``), which releases the GIL for the call: torch's own
runner holds it, so the tile reader (a Python thread) could not run while the network did and read each batch in the
gap between two network calls instead (docs/results.md).
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import zipfile
from pathlib import Path

import torch

ALIGNMENT = 64  # bytes: a cache line, an AMX tile row


def data_ptr(tensor: torch.Tensor) -> int:
    """The address of a tensor's first byte, also for oneDNN (``mkldnn``) tensors."""
    return torch.ops.mkldnn.data_ptr(tensor) if tensor.is_mkldnn else tensor.data_ptr()


class _Entry(ctypes.Structure):
    """``AOTInductorConstantMapEntry``: a constant's name and tensor handle."""

    _fields_ = [("name", ctypes.c_char_p), ("handle", ctypes.c_void_p)]


_VOIDP = ctypes.c_void_p
_SIZE = ctypes.c_size_t
_SIGNATURES = {  # torch/csrc/inductor/aoti_runtime/interface.h (torch 2.13); every function returns an error code
    "AOTInductorModelContainerCreateWithDevice": [ctypes.POINTER(_VOIDP), _SIZE, ctypes.c_char_p, ctypes.c_char_p],
    "AOTInductorModelContainerDelete": [_VOIDP],
    "AOTInductorModelContainerGetNumOutputs": [_VOIDP, ctypes.POINTER(_SIZE)],
    "AOTInductorModelContainerGetNumConstants": [_VOIDP, ctypes.POINTER(_SIZE)],
    "AOTInductorModelContainerGetConstantName": [_VOIDP, _SIZE, ctypes.POINTER(ctypes.c_char_p)],
    "AOTInductorModelContainerGetConstantOriginalFQN": [_VOIDP, _SIZE, ctypes.POINTER(ctypes.c_char_p)],
    "AOTInductorModelContainerExtractConstantsMapEntries": [
        _VOIDP,
        ctypes.POINTER(ctypes.POINTER(_Entry)),
        ctypes.POINTER(_SIZE),
        ctypes.c_bool,
    ],
    "AOTInductorModelContainerUpdateUserManagedConstantBufferPairs": [
        _VOIDP,
        ctypes.POINTER(_Entry),
        _SIZE,
        ctypes.c_bool,
        ctypes.c_bool,
    ],
    "AOTInductorModelContainerRun": [_VOIDP, _VOIDP, _SIZE, _VOIDP, _SIZE, _VOIDP, _VOIDP],
    "AOTInductorGetLastError": [ctypes.POINTER(ctypes.c_char_p)],
}
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype, _capsule_new.argtypes = ctypes.py_object, [_VOIDP, ctypes.c_char_p, _VOIDP]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = _VOIDP, [ctypes.py_object, ctypes.c_char_p]


def _torch_shim() -> ctypes.CDLL:
    """torch's C shim for tensor handles (``aoti_torch_*`` in libtorch_cpu)."""
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    lib.aoti_torch_new_tensor_handle.argtypes = [_VOIDP, ctypes.POINTER(_VOIDP)]
    lib.aoti_torch_delete_tensor_object.argtypes = [_VOIDP]
    return lib


def _new_handle(tensor: torch.Tensor) -> int:
    """A new tensor handle (a heap ``at::Tensor`` sharing ``tensor``'s storage) that the caller owns."""
    return _capsule_pointer(torch._C._aoti.unsafe_alloc_void_ptr_from_tensor(tensor), None)


def _steal(handle: int) -> torch.Tensor:
    """The tensor behind an owned handle; the handle is freed with it."""
    return torch._C._aoti.alloc_tensor_by_stealing_from_void_ptr(_capsule_new(handle, None, None))


class AlignedRunner:
    """The network in an AOTInductor ``.pt2`` package (CPU), called like the reference runner: ``runner(x)``."""

    def __init__(self, path: Path, align: bool = True) -> None:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".wrapper.so")]
            if len(names) != 1:
                raise ValueError(f"expected one compiled library in {path}, found {len(names)}")
            with tempfile.TemporaryDirectory(prefix="muse-fast-aoti-") as tmp:
                self.lib = ctypes.CDLL(archive.extract(names[0], tmp))  # mapped: the file can go
        for name, argtypes in _SIGNATURES.items():
            getattr(self.lib, name).argtypes, getattr(self.lib, name).restype = argtypes, ctypes.c_int
        self.shim = _torch_shim()
        self.handle, self.owned = _VOIDP(), []  # the container; tensor handles it borrows from us
        self._check("AOTInductorModelContainerCreateWithDevice", ctypes.byref(self.handle), 1, b"cpu", None)
        self.outputs = self._size("AOTInductorModelContainerGetNumOutputs")
        self.names = {self._constant_text("OriginalFQN", i): self._constant_text("Name", i) for i in range(self._size(
            "AOTInductorModelContainerGetNumConstants"))}  # fmt: skip
        self.copies: dict[str, torch.Tensor] = self.align() if align else {}

    def _check(self, function: str, *args) -> None:
        if (code := getattr(self.lib, function)(*args)) != 0:
            message = ctypes.c_char_p()
            self.lib.AOTInductorGetLastError(ctypes.byref(message))
            why = (message.value or b"").decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"{function} failed (code {code}{': ' + why[-1] if why else ''})")

    def _size(self, function: str) -> int:
        value = _SIZE()
        self._check(function, self.handle, ctypes.byref(value))
        return value.value

    def _constant_text(self, what: str, index: int) -> str:
        value = ctypes.c_char_p()
        self._check(f"AOTInductorModelContainerGetConstant{what}", self.handle, index, ctypes.byref(value))
        return value.value.decode()

    def constants(self) -> dict[str, torch.Tensor]:
        """The frozen weights the runner uses now (tensors sharing their memory), by their names in the compiled
        code."""
        entries, count = ctypes.POINTER(_Entry)(), _SIZE()
        self._check("AOTInductorModelContainerExtractConstantsMapEntries", self.handle, ctypes.byref(entries),
                    ctypes.byref(count), False)  # fmt: skip
        found = {}
        for i in range(count.value):  # keyed by the original names; the entries are the container's
            fqn, borrowed, owned = entries[i].name.decode(), entries[i].handle, _VOIDP()
            if fqn in self.names:
                if self.shim.aoti_torch_new_tensor_handle(borrowed, ctypes.byref(owned)) != 0:
                    raise RuntimeError(f"cannot read the compiled network's weight {fqn}")
                found[self.names[fqn]] = _steal(owned.value)
        return found

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
            pairs = (_Entry * len(copies))()
            for pair, (name, tensor) in zip(pairs, copies.items()):
                handle = _new_handle(tensor)
                self.owned.append(handle)
                pair.name, pair.handle = name.encode(), handle
            # active buffer, not a full update: the aligned weights keep the container's own copies
            self._check("AOTInductorModelContainerUpdateUserManagedConstantBufferPairs", self.handle, pairs,
                        len(copies), False, False)  # fmt: skip
        return copies

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = (_VOIDP * 1)(_new_handle(x))  # stolen by the run
        outputs = (_VOIDP * self.outputs)()  # handles we then own
        self._check("AOTInductorModelContainerRun", self.handle, inputs, 1, outputs, self.outputs, None, None)
        return tuple(_steal(h) for h in outputs)

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self.lib.AOTInductorModelContainerDelete(handle)
            self.handle = None
        for owned in getattr(self, "owned", ()):
            self.shim.aoti_torch_delete_tensor_object(owned)
        self.owned = []
