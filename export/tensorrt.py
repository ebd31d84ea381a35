"""TensorRT engine building and execution (TensorRT 10 named-tensor APIs; device buffers are torch tensors).

Build: ONNX -> engine with one explicit min/opt/max batch profile, fp16 (or fp32), a persistent timing cache, and an
engine cache keyed on the ONNX bytes, profile, precision, builder flags, TensorRT version and GPU compute capability
(:func:`export.cache.engine_cache_key`). Engines are written to a temporary name and renamed. A cached engine that
fails to deserialize (corrupt, other TensorRT build) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from muse_fast.errors import BackendUnavailable, WeightsError

from .cache import cache_dir, engine_cache_key, write_atomic

log = logging.getLogger(__name__)
WORKSPACE_BYTES = 4 << 30


def tensorrt_unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or a missing shared library
        return f"TensorRT cannot be imported ({type(exc).__name__}); pip install -e .[trt] on a CUDA machine"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU"
    return None


@dataclass(frozen=True)
class BuildSpec:
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    precision: str = "fp16"  # or "fp32"

    @property
    def profile(self) -> tuple[int, int, int]:
        return (self.min_batch, self.opt_batch, self.max_batch)


def _trt():
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(reason)
    import tensorrt as trt

    return trt


def engine_path_for(onnx_path: Path, spec: BuildSpec) -> tuple[Path, str]:
    trt = _trt()
    onnx_sha = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    cc = ".".join(map(str, torch.cuda.get_device_capability()))
    flags = ["FP16"] if spec.precision == "fp16" else []
    key = engine_cache_key(onnx_sha, spec.profile, spec.precision, flags, trt.__version__, cc)
    return cache_dir() / "engines" / f"{key}.engine", cc


def build_engine(onnx_path: Path, spec: BuildSpec, input_name: str, tile_shape: tuple[int, int, int]) -> bytes:
    """Serialize an engine for ``onnx_path`` with one optimization profile over the batch dimension."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WeightsError(f"TensorRT cannot parse {onnx_path}: {errors}; re-export with muse-fast export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    timing_path = cache_dir() / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=True)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(b, *tile_shape) for b in spec.profile])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTRunner:
    """Deserialize (or build and cache) an engine; ``run`` takes and returns CUDA torch tensors on the torch stream."""

    def __init__(
        self,
        onnx_path: Path,
        spec: BuildSpec,
        input_name: str,
        output_names: tuple[str, ...],
        tile_shape: tuple[int, int, int],
    ) -> None:
        trt = _trt()
        self.input_name, self.output_names, self.spec = input_name, output_names, spec
        path, _ = engine_path_for(onnx_path, spec)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = None
        if path.exists():
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                log.warning("cached TensorRT engine %s is unusable; rebuilding it", path)
        if engine is None:
            log.info(
                "building TensorRT engine (%s, batch %s); this takes a few minutes once", spec.precision, spec.profile
            )
            data = build_engine(onnx_path, spec, input_name, tile_shape)
            write_atomic(path, data)
            engine = runtime.deserialize_cuda_engine(data)
        self.engine = engine
        self.context = engine.create_execution_context()
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in output_names}

    def run(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if tiles.shape[0] > self.spec.max_batch:
            parts = [self.run(chunk) for chunk in tiles.split(self.spec.max_batch)]
            return tuple(torch.cat(p) for p in zip(*parts))
        tiles = tiles.contiguous()
        self.context.set_input_shape(self.input_name, tuple(tiles.shape))
        self.context.set_tensor_address(self.input_name, tiles.data_ptr())
        outputs = []
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=tiles.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise BackendUnavailable("TensorRT execution failed (see the TensorRT log)")
        return tuple(outputs)


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.uint8: torch.uint8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]
