"""TensorRT engine building and execution (TensorRT 10 named-tensor APIs; device buffers are torch tensors).

Build: ONNX -> engine with one explicit min/opt/max batch profile, a strongly typed network (the ONNX file's dtypes
set the precision: an fp16 export for ``fp16``; works on TensorRT 10.x and 11), a persistent timing cache, and an
engine cache keyed on the ONNX bytes, profile, precision, network flags, TensorRT version, GPU compute capability and
GPU name (:func:`export.cache.engine_cache_key`). One process builds while others wait on a file lock; engines are
written to a temporary name and renamed. A cached engine that fails to deserialize is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from muse_fast.errors import BackendUnavailable, WeightsError

from .cache import cache_dir, cached_build, engine_cache_key, read_regular, write_atomic

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


def network_flags(trt) -> tuple[int, list[str]]:
    """``create_network`` flags: strongly typed where the enum has it (TensorRT 10.x opt-in, 11 always on).

    Precision then comes from the ONNX file itself (an fp16 export for ``fp16``), never from ``BuilderFlag.FP16``,
    which TensorRT deprecated in 10.12 and removed in 11.
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return (0, []) if flag is None else (1 << int(flag), ["STRONGLY_TYPED"])


def engine_path_for(onnx_path: Path, spec: BuildSpec) -> Path:
    trt = _trt()
    onnx_sha = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    cc = ".".join(map(str, torch.cuda.get_device_capability()))
    _, flags = network_flags(trt)
    key = engine_cache_key(
        onnx_sha, spec.profile, spec.precision, flags, trt.__version__, cc, torch.cuda.get_device_name()
    )
    return cache_dir() / "engines" / f"{key}.engine"


def build_engine(onnx_path: Path, spec: BuildSpec, input_name: str, tile_shape: tuple[int, int, int]) -> bytes:
    """Serialize an engine for ``onnx_path`` (its dtypes set the precision) with one batch optimization profile."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt)[0])
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WeightsError(f"TensorRT cannot parse {onnx_path}: {errors}; re-export with muse-fast export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    timing_path = cache_dir() / "timing.cache"
    timing = config.create_timing_cache(read_regular(timing_path) or b"")  # never a FIFO's or device's bytes
    config.set_timing_cache(timing, ignore_mismatch=True)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(b, *tile_shape) for b in spec.profile])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def create_context(engine):
    """An execution context, or one line saying why there is none (TensorRT returns None, e.g. out of memory)."""
    context = engine.create_execution_context()
    if context is None:
        raise BackendUnavailable(
            "TensorRT could not create an execution context (usually too little free GPU memory for the engine's "
            "workspace); free GPU memory or lower --batch-size"
        )
    return context


def bind_io(context, input_name: str, tiles: torch.Tensor, output_names, dtypes: dict, profile) -> list[torch.Tensor]:
    """Set the input shape and every tensor address; outputs are allocated on the current torch stream."""
    if not context.set_input_shape(input_name, tuple(tiles.shape)):
        raise BackendUnavailable(
            f"TensorRT rejected input shape {tuple(tiles.shape)} for '{input_name}' (engine batch profile "
            f"min/opt/max {profile}); rebuild the engine with a batch size inside the profile"
        )
    _address(context, input_name, tiles)
    outputs = []
    for name in output_names:
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BackendUnavailable(f"TensorRT output '{name}' has an unresolved shape {shape}; re-export the model")
        out = torch.empty(shape, dtype=dtypes[name], device=tiles.device)
        _address(context, name, out)
        outputs.append(out)
    return outputs


def _address(context, name: str, tensor: torch.Tensor) -> None:
    if not context.set_tensor_address(name, tensor.data_ptr()):
        raise BackendUnavailable(f"TensorRT rejected the buffer of tensor '{name}' (misaligned or unknown name)")


class TensorRTRunner:
    """Deserialize (or build once, under a lock, and cache) an engine; ``run`` takes and returns CUDA tensors.

    Execution is on a stream of its own (TensorRT synchronizes on the legacy default stream), ordered after the
    caller's current stream and before the caller's later work through stream waits, so nothing blocks the host.
    """

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
        path = engine_path_for(onnx_path, spec)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))

        def build() -> bytes:
            log.info("building TensorRT engine (%s, batch %s); this takes minutes once", spec.precision, spec.profile)
            return build_engine(onnx_path, spec, input_name, tile_shape)

        engine = runtime.deserialize_cuda_engine(cached_build(path, build))
        if engine is None:  # corrupt, or written by another TensorRT build: rebuild, never use it
            log.warning("cached TensorRT engine %s is unusable; rebuilding it", path)
            path.unlink(missing_ok=True)
            engine = runtime.deserialize_cuda_engine(cached_build(path, build))
        if engine is None:
            raise BackendUnavailable(f"TensorRT cannot load the engine it built ({path}); see the TensorRT log")
        self.engine = engine
        self.context = create_context(engine)
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in output_names}
        self.stream = torch.cuda.Stream()

    def run(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if tiles.shape[0] > self.spec.max_batch:
            parts = [self.run(chunk) for chunk in tiles.split(self.spec.max_batch)]
            return tuple(torch.cat(p) for p in zip(*parts))
        caller = torch.cuda.current_stream(tiles.device)
        tiles = tiles.contiguous()
        self.stream.wait_stream(caller)  # the input copy queued on the caller's stream comes first
        with torch.cuda.stream(self.stream):
            outputs = bind_io(self.context, self.input_name, tiles, self.output_names, self.dtypes, self.spec.profile)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendUnavailable("TensorRT execution failed (see the TensorRT log)")
        tiles.record_stream(self.stream)  # the allocator must not reuse the input before TensorRT has read it
        caller.wait_stream(self.stream)
        for out in outputs:
            out.record_stream(caller)
        return tuple(outputs)


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.uint8: torch.uint8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]
