"""Defects an outside tester found in the resume, cohort and embeddings features, each pinned by a test."""

import pytest
import torch

from muse_fast.errors import BackendUnavailable, ConfigError


def test_an_unreachable_ray_head_is_one_line_not_a_hang(monkeypatch):
    from muse_fast.runtime.ray_cohort import check_reachable

    with pytest.raises(BackendUnavailable, match=r"no Ray head answers at 127\.0\.0\.1:1 .*ray start --head"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(BackendUnavailable, match="no Ray head answers at 127.0.0.1:1"):
        check_reachable("auto", timeout_s=2)
    monkeypatch.delenv("RAY_ADDRESS")
    check_reachable("auto")  # nothing to check: ray.init finds or starts the cluster
    check_reachable("ray://head:10001")  # Ray Client addresses are left to ray.init


def test_an_unusable_cache_folder_is_one_line(tmp_path, monkeypatch):
    from muse_fast.export.cache import build_lock, cache_dir, write_atomic

    blocker = tmp_path / "cachefile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MUSE_FAST_CACHE", str(blocker))
    with pytest.raises(ConfigError, match="cache folder .* cannot be used .*set MUSE_FAST_CACHE") as info:
        write_atomic(cache_dir() / "autotune" / "x.json", b"{}")
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(ConfigError, match="set MUSE_FAST_CACHE"):
        with build_lock(cache_dir() / "onnx" / "m.onnx"):
            pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("engine", ["onnx", "auto", "torch"])
def test_device_cuda_without_cuda_is_refused_by_every_engine(engine):
    from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256, load_weights
    from muse_fast.runtime.engines import EngineInputs, create_engine

    model, meta = load_weights()
    with pytest.raises(BackendUnavailable, match="--device cuda requested but CUDA is not available here"):
        create_engine(engine, EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), "cuda"))


def test_a_refused_rerun_names_fp32():
    from muse_fast.runtime.fingerprint import differences

    assert differences({"settings": {"a": 1}}, {"precision": "bf16", "settings": {"a": 1}}) == "precision fp32 -> bf16"
    assert differences({"settings": {"tta": True}}, {"settings": {}}) == "tta True -> False"
    assert differences({"settings": {}}, {"settings": {"embeddings": True}}) == "embeddings False -> True"
