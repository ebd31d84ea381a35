"""What the GPU path needs, checked on the CPU: export copies the model, fp16 ONNX for strongly typed TensorRT,
one build per engine across processes, TensorRT's failures named in one line (fakes), ORT I/O binding."""

import importlib.util
import multiprocessing
import time

import numpy as np
import pytest
import torch

from muse_fast.errors import BackendUnavailable
from muse_fast.export.cache import cached_build
from muse_fast.export.tensorrt import bind_io, create_context, network_flags
from muse_fast.model.weights import load_weights

ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not ONNX, reason="onnx, onnxscript and onnxruntime are needed (pip install -e .[cpu])")


@needs_onnx
def test_export_leaves_the_callers_model_untouched_and_writes_fp16(tmp_path):
    """A CUDA engine's model must stay where it is (it moved to the CPU, crashing the CUDA benchmark)."""
    import onnx

    from muse_fast.export.onnx import export_model

    model, meta = load_weights()
    model.half().train()
    before = {k: (v.dtype, v.device, v.data_ptr()) for k, v in model.state_dict().items()}
    result = export_model(model, meta, "0" * 64, tmp_path / "m16.onnx", precision="fp16")
    assert {k: (v.dtype, v.device, v.data_ptr()) for k, v in model.state_dict().items()} == before
    assert model.training
    assert max(result.max_abs_diff.values()) < 0.1  # fp16 graph vs the fp32 model
    graph = onnx.load(str(tmp_path / "m16.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT16}
    kinds = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    floats = [i.data_type for i in graph.initializer if i.data_type in kinds]
    assert floats and set(floats) == {onnx.TensorProto.FLOAT16}


def _build_once(path, log, hold):
    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(hold)
        return b"engine"

    return cached_build(path, build)


def test_concurrent_builds_build_once(tmp_path):
    path, log = tmp_path / "engines" / "k.engine", tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_build_once, [(path, log, 1.0)] * 3)
    assert results == [b"engine"] * 3
    assert log.read_text() == "built\n" and path.read_bytes() == b"engine"
    # the engine and its checksum, nothing half-written beside them
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        "k.engine",
        "k.engine.sha256",
    ]


class _Flags:
    STRONGLY_TYPED = 0


class _Trt:
    NetworkDefinitionCreationFlag = _Flags


class _OldTrt:
    class NetworkDefinitionCreationFlag:
        pass


def test_networks_are_strongly_typed_where_tensorrt_has_the_flag():
    assert network_flags(_Trt) == (1, ["STRONGLY_TYPED"])
    assert network_flags(_OldTrt) == (0, [])


class _Context:
    def __init__(self, shape_ok=True, address_ok=True, out_shape=(2, 3, 56, 56)):
        self.shape_ok, self.address_ok, self.out_shape, self.addresses = shape_ok, address_ok, out_shape, {}

    def set_input_shape(self, name, shape):
        return self.shape_ok

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return self.address_ok

    def get_tensor_shape(self, name):
        return self.out_shape


def _bind(context):
    tiles = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    return bind_io(context, "tiles", tiles, ("centre",), {"centre": torch.float16}, (1, 16, 64))


@pytest.mark.parametrize(
    "context,match",
    [
        (_Context(shape_ok=False), r"rejected input shape \(2, 224, 224, 3\).*min/opt/max \(1, 16, 64\)"),
        (_Context(address_ok=False), "rejected the buffer of tensor 'tiles'"),
        (_Context(out_shape=(-1, 3, 56, 56)), "unresolved shape"),
    ],
)
def test_tensorrt_refusals_are_one_line(context, match):
    with pytest.raises(BackendUnavailable, match=match) as info:
        _bind(context)
    assert "\n" not in str(info.value)


def test_tensorrt_binding_and_missing_context():
    context = _Context()
    (out,) = _bind(context)
    assert out.shape == (2, 3, 56, 56) and out.dtype == torch.float16
    assert set(context.addresses) == {"tiles", "centre"}

    class Engine:
        def create_execution_context(self):
            return None

    with pytest.raises(BackendUnavailable, match="execution context"):
        create_context(Engine())


def test_cuda_provider_failure_is_an_error_for_cuda_and_a_warning_otherwise(caplog):
    from muse_fast.runtime.engines import check_cuda_provider

    check_cuda_provider(False, "CPUExecutionProvider", "cuda")  # not asked for: nothing to say
    check_cuda_provider(True, "CUDAExecutionProvider", "cuda")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        check_cuda_provider(True, "CPUExecutionProvider", "cuda")
    with caplog.at_level("WARNING"):
        check_cuda_provider(True, "CPUExecutionProvider", "cpu")
    assert "could not load its CUDA execution provider" in caplog.text


@needs_onnx
def test_io_binding_gives_the_session_outputs(tmp_path):
    """The binding the CUDA engine uses, run on the CPU device: outputs written into torch tensors, same values."""
    import onnxruntime as ort

    from muse_fast.export.onnx import INPUT_NAME, OUTPUT_NAMES, export_model
    from muse_fast.runtime.ort_binding import OrtCudaBinding

    model, meta = load_weights()
    export_model(model, meta, "0" * 64, tmp_path / "m.onnx", check=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    tiles = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    expected = session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles})
    got = OrtCudaBinding(session, INPUT_NAME, list(OUTPUT_NAMES), torch.device("cpu")).run(tiles)
    for e, g in zip(expected, got):
        assert isinstance(g, torch.Tensor) and np.array_equal(e, g.numpy())


def _ort_cuda_reason() -> str | None:
    if not ONNX:
        return "onnx, onnxscript and onnxruntime are needed"
    import onnxruntime as ort

    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        return "needs a CUDA GPU and onnxruntime-gpu (pip install -e .[gpu]; the [cpu] extra installs the CPU build)"
    return None


@pytest.mark.skipif(_ort_cuda_reason() is not None, reason=str(_ort_cuda_reason()))
def test_onnx_cuda_engine_keeps_outputs_on_the_gpu(tmp_path, monkeypatch):
    from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256
    from muse_fast.runtime.engines import EngineInputs, TorchEngine, create_engine

    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    model, meta = load_weights()
    engine = create_engine("onnx", EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), "cuda"))
    assert engine.provider == "CUDAExecutionProvider" and engine.binding is not None
    tiles = np.random.default_rng(0).integers(0, 255, (4, 224, 224, 3), dtype=np.uint8)
    got, ref = engine.run(tiles), TorchEngine(load_weights()[0], "cpu", "fp32").run(tiles)
    assert got.centre.is_cuda and got.fmap.is_cuda
    assert (got.centre.cpu() - ref.centre).abs().max() < 1e-2  # cuDNN/TF32 convolutions against fp32 CPU
