"""ONNX export, ONNX Runtime parity with PyTorch on real tiles, metadata, cache keys, engine registry."""

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch

from muse_fast.cli import main
from muse_fast.errors import BackendUnavailable, ConfigError
from muse_fast.export.cache import engine_cache_key, onnx_cache_key, record_checksum
from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256, load_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import ENGINES, EngineInputs, TorchEngine, create_engine
from muse_fast.runtime.predict import predict_image

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx, onnxscript and onnxruntime are needed (pip install -e .[cpu,dev])",
)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """The torch and onnx engines on the shipped weights, with the export cache in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS))
    yield TorchEngine(model, precision="fp32"), create_engine("onnx", inputs), meta
    mp.undo()


def test_onnx_engine_reports_its_provider(engines):
    _, onnx_engine, _ = engines
    assert onnx_engine.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert onnx_engine.session.get_providers()[0] == onnx_engine.provider


def test_dense_outputs_match_pytorch_on_real_tiles(engines, brca_dir):
    torch_engine, onnx_engine, meta = engines
    from muse_fast.train.data.brca import load_split

    images = load_split("test")[:2]
    tiles = np.stack([im.image[:224, :224] for im in images] + [im.image[-224:, -224:] for im in images])
    ref, got = torch_engine.run(tiles), onnx_engine.run(tiles)
    assert got.centre.shape == ref.centre.shape and got.fmap.shape == ref.fmap.shape
    # fp32 on both sides; observed max |diff| ~1e-5, bound set at 1e-3 for other CPUs / ORT versions
    assert (got.centre - ref.centre).abs().max() < 1e-3
    assert (got.fmap - ref.fmap).abs().max() < 1e-3


def test_same_nuclei_from_both_engines(engines, brca_dir):
    torch_engine, onnx_engine, meta = engines
    from muse_fast.train.data.brca import load_split

    image = load_split("test")[0].image
    a = predict_image(torch_engine, image, meta.tile_size, 32, DecodeConfig())
    b = predict_image(onnx_engine, image, meta.tile_size, 32, DecodeConfig())
    assert len(a) > 50 and len(a) == len(b)
    assert np.abs(a.xy - b.xy).max() < 0.5
    assert (a.class_id == b.class_id).all()


@pytest.mark.slow
def test_flipped_bytes_in_the_cached_onnx_are_exported_again_not_run(engines, brca_dir, caplog):
    """Flipped bytes in the cached ONNX file gave '0 nuclei', recorded as done."""
    from muse_fast.export.cache import cache_dir
    from muse_fast.train.data.brca import load_split

    _, onnx_engine, meta = engines
    sha = file_sha256(DEFAULT_WEIGHTS)
    path = cache_dir() / "onnx" / f"{meta.model}-{onnx_cache_key(sha, torch.__version__, meta.tile_size)}.onnx"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the weights: ONNX Runtime would load the file and run it
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    model, _ = load_weights()
    rebuilt = create_engine("onnx", EngineInputs(model, meta, sha))
    assert f"cached ONNX model {path}: it fails its checksum; rebuilding it" in caplog.text
    image = load_split("test")[0].image
    a = predict_image(onnx_engine, image, meta.tile_size, 32, DecodeConfig())
    b = predict_image(rebuilt, image, meta.tile_size, 32, DecodeConfig())
    assert len(a) > 50 and len(b) == len(a) and np.abs(a.xy - b.xy).max() < 1e-3


def test_export_cli_writes_metadata(tmp_path):
    from muse_fast.export.onnx import read_onnx_metadata

    out = tmp_path / "m.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    meta = read_onnx_metadata(out)
    _, wmeta = load_weights()
    assert meta["muse_fast.model"] == wmeta.model
    assert float(meta["muse_fast.mpp"]) == wmeta.mpp and int(meta["muse_fast.tile_size"]) == wmeta.tile_size
    assert meta["muse_fast.weights_sha256"] == file_sha256(DEFAULT_WEIGHTS)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    # TensorRT takes a uint8 input only when a Cast reads its values directly (Shape reads no values)
    import onnx

    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    readers = [n.op_type for n in graph.node if graph.input[0].name in n.input and n.op_type != "Shape"]
    assert readers == ["Cast"]


def test_export_of_bad_weights_exits_2(tmp_path, capsys):
    bad = tmp_path / "w.pt"
    bad.write_text("nope")
    assert main(["export", "--weights", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_corrupt_cached_onnx_is_removed_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, "0" * 64)
    key = onnx_cache_key(inputs.weights_sha256, torch.__version__, meta.tile_size)
    path = tmp_path / "onnx" / f"{meta.model}-{key}.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    record_checksum(path)  # it passes the cache's checksum, but ONNX Runtime cannot load it
    with pytest.raises(BackendUnavailable, match="run again"):
        create_engine("onnx", inputs)
    assert not path.exists()


def test_engine_cache_key_changes_with_every_input():
    base = dict(
        onnx_sha256="a" * 64,
        profile=(1, 16, 64),
        precision="fp16",
        builder_flags=["FP16"],
        trt_version="10.13.0",
        compute_capability="9.0",
        gpu_name="NVIDIA H200",
    )
    key = engine_cache_key(**base)
    changes = dict(
        onnx_sha256="b" * 64,
        profile=(1, 32, 64),
        precision="fp32",
        builder_flags=[],
        trt_version="10.14.0",
        compute_capability="8.0",
        gpu_name="NVIDIA H100 80GB HBM3",  # also 9.0: the name tells them apart
    )
    for field, value in changes.items():
        assert engine_cache_key(**{**base, field: value}) != key, field
    assert engine_cache_key(**base) == key
    assert onnx_cache_key("a", "2.13.0", 224) != onnx_cache_key("a", "2.13.0", 512)
    assert onnx_cache_key("a", "2.13.0", 224, "fp16") != onnx_cache_key("a", "2.13.0", 224)


def test_trt_and_unknown_engines_fail_clearly():
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, "0" * 64)
    with pytest.raises(ConfigError, match="choose one of"):
        create_engine("openvino", inputs)
    reason = ENGINES["trt"].unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here; its parity runs in benchmarks/gpu_check.sh")
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        create_engine("trt", inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trt_engine_matches_pytorch_fp16(engines, tmp_path, monkeypatch):
    if ENGINES["trt"].unavailable_reason():
        pytest.skip(ENGINES["trt"].unavailable_reason())
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    torch_engine, _, meta = engines
    model, _ = load_weights()
    trt_engine = create_engine("trt", EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), "cuda"))
    tiles = np.random.default_rng(0).integers(0, 255, (4, 224, 224, 3), dtype=np.uint8)
    ref, got = torch_engine.run(tiles), trt_engine.run(tiles)
    assert (got.centre.cpu() - ref.centre).abs().max() < 5e-2  # fp16 engine vs fp32 eager


def test_int8_is_refused_for_the_convolutional_default(engines):
    """Dynamic int8 quantizes Linear/MatMul layers only: 0.4% of muse_r18, so it would be fp32 under another name."""
    _, _, meta = engines
    model, _ = load_weights()
    with pytest.raises(
        ConfigError,
        match=r"quantize only 0\.4% of muse_r18's weights.*--precision fp32, or --engine torch --precision bf16",
    ):
        create_engine("onnx", EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), precision="int8"))


def test_int8_engine_stays_close_to_fp32_on_a_transformer(engines, brca_dir, tmp_path, monkeypatch):
    """Issue 18: dynamic int8 against the fp32 torch engine, on a network it applies to (a ViT: 65% Linear)."""
    from muse_fast.export.quantize import MIN_DYNAMIC_INT8_SHARE, dynamic_int8_share
    from muse_fast.model import create_model
    from muse_fast.model.weights import WeightsMeta
    from muse_fast.train.data.brca import load_split

    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = create_model("muse_vit_t16_stem", num_classes=3).eval()
    assert dynamic_int8_share(model) > MIN_DYNAMIC_INT8_SHARE
    meta = WeightsMeta("muse_vit_t16_stem", ("lymphocyte", "tumor", "stromal"), 0.5, 224, {})
    inputs = EngineInputs(model, meta, "vit-t16-random-seed0", precision="int8")
    int8, ref = create_engine("onnx", inputs), create_engine("torch", replace(inputs, precision="fp32"))
    assert int8.precision == "int8" and int8.device.type == "cpu"
    image = load_split("val")[0].image
    tiles = np.stack([image[:224, :224], image[-224:, -224:]])
    got, want = int8.run(tiles).fmap, ref.run(tiles).fmap  # point features (a fresh centre head is constant)
    error = ((got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-6)).median()
    assert 0 < error < 0.1, error  # quantized, and close
