"""Native point gather (``csrc/``, loaded by ``kernels/native.py``), forward and backward, CPU or CUDA tensors.

The feature map (fp32, or bf16 on the CPU) is read through its strides (contiguous or channels-last, no copy),
accumulated in fp32 and returned in the dtype asked for (default: the map's); the backward pass scatters into a
zeroed fp32 buffer (atomics on the GPU).
"""

from __future__ import annotations

import torch

from .. import native


def _counts(xy: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor | None:
    if counts is None:
        return None
    # clamped to K like the reference's mask: a larger count must never index past the point arrays
    return counts.to(device=xy.device, dtype=torch.int32).clamp(0, xy.shape[1]).contiguous()


def _run(name: str, tensor: torch.Tensor, *args) -> None:
    lib = native.library(tensor.device.type)
    if tensor.is_cuda:
        with torch.cuda.device(tensor.device):
            native.call(lib, f"{name}_cuda", *args, native.stream_of(tensor))
    else:
        native.call(lib, f"{name}_cpu", *args)


class _NativeGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, xy, input_hw, counts, out_dtype):
        b, c, h, w = fmap.shape
        bf16 = fmap.dtype == torch.bfloat16 and not fmap.is_cuda  # read as it is: no fp32 copy of the map
        x = fmap.detach() if bf16 else fmap.detach().float()
        xy32 = xy.detach().to(device=fmap.device, dtype=torch.float32).contiguous()
        n = _counts(xy32, counts)
        k = xy.shape[1]
        out = torch.empty(b, k, c, dtype=torch.float32, device=fmap.device)
        strides = torch.tensor(x.stride(), dtype=torch.int64)  # read on the host
        if out.numel():
            name = "muse_gather_bf16" if bf16 else "muse_gather"
            _run(name, x, native.ptr(x), native.ptr(strides), b, c, h, w, native.ptr(xy32), k, native.ptr(n),
                 float(input_hw[0]), float(input_hw[1]), native.ptr(out))  # fmt: skip
        ctx.save_for_backward(xy32, n)
        ctx.meta = (tuple(fmap.shape), fmap.dtype, input_hw)
        return out.to(out_dtype or fmap.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xy32, n = ctx.saved_tensors
        (b, c, h, w), dtype, input_hw = ctx.meta
        grad = torch.zeros(b, c, h, w, dtype=torch.float32, device=grad_out.device)
        g = grad_out.detach().float().contiguous()
        if g.numel():
            _run("muse_gather_backward", g, native.ptr(g), b, c, h, w, native.ptr(xy32), xy32.shape[1],
                 native.ptr(n), float(input_hw[0]), float(input_hw[1]), native.ptr(grad))  # fmt: skip
        return grad.to(dtype), None, None, None, None


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Native version of :func:`kernels.point_gather.reference.gather_points`; differentiable in ``fmap``."""
    return _NativeGather.apply(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts, out_dtype)
