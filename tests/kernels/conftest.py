import importlib.util
import os

import pytest

ALL_IMPLS = ["reference", "numba", "triton", "native"]


def impl_or_skip(name: str) -> str:
    needs = {"numba": "numba", "triton": "triton"}.get(name)
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed (pip install -e .[dev])")
    if name == "native":
        from muse_fast.kernels.native import unavailable_reason

        if reason := unavailable_reason("cpu"):
            pytest.skip(f"native CPU library: {reason}")
    if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton runs compiled here (TRITON_INTERPRET=0): CPU-tensor tests skip; see test_cuda.py")
    return name


@pytest.fixture(params=ALL_IMPLS)
def impl(request) -> str:
    return impl_or_skip(request.param)


@pytest.fixture(params=["numba", "triton", "native"])
def fast_impl(request) -> str:
    return impl_or_skip(request.param)
