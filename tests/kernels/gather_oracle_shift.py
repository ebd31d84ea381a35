"""A wrong gather for tests: the reference with every point moved one input pixel right (see test_kernel_edges)."""

import torch

from muse_fast.kernels.point_gather.reference import gather_points as _reference


def gather_points(fmap, xy, input_hw, counts=None, out_dtype=None):
    return _reference(fmap, xy + torch.tensor([1.0, 0.0], dtype=xy.dtype), input_hw, counts, out_dtype)
