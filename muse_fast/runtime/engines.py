"""Inference engines behind one interface, chosen in one registry.

An engine turns a batch of RGB tiles (``uint8 [B, H, W, 3]``) into the dense outputs (``centre``, ``fmap``) as torch
tensors on ``engine.device``, and classifies point features; ``engine.precision`` says at which precision it runs
(:mod:`.precision`). Engines: ``torch`` (eager, CPU or CUDA; fp32, bf16, fp16 autocast), ``compiled`` (the same
network compiled by inductor, CPU only, bf16 or fp32: :mod:`.compiled`; without a C++ compiler it runs eager and says
so), ``onnx`` (ONNX Runtime: CUDA execution provider when present, else CPU; fp32, int8 on the CPU), ``trt``
(TensorRT, fp16 or fp32, CUDA only). ``auto`` on the CPU measures the candidates once per machine
(:mod:`.autotune`); on CUDA it tries trt -> onnx -> torch and logs why it skipped any. ONNX models, TensorRT engines
and compiled networks are built on first use and cached (see ``export.cache``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import BackendUnavailable, ConfigError, one_line
from ..model.registry import DenseOutputs, MuseNet
from ..model.weights import WeightsMeta
from .ort_binding import OrtCudaBinding
from .precision import check_precision, resolve_precision

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str
    device: torch.device
    precision: str  # fp32, bf16, fp16 or int8: what the network runs at (engines without it count as fp32)

    def run(self, tiles: np.ndarray) -> DenseOutputs: ...

    def classify(self, feats: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class EngineInputs:
    model: MuseNet
    meta: WeightsMeta
    weights_sha256: str  # identifies the weights for the export/engine caches
    device: str = "cpu"
    batch_size: int = 16
    precision: str = "auto"  # see :mod:`.precision`; engines say which they support


class _PointClassifier:
    """Shared by every engine: the tiny point MLP runs in torch on the engine's device."""

    def __init__(self, model: MuseNet, device: torch.device) -> None:
        self.classifier = model.classifier.to(device).eval()

    @torch.inference_mode()
    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(feats.float())


AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class TorchEngine(_PointClassifier):
    """Eager PyTorch on CPU or CUDA under autocast at ``precision`` (``auto``: see :mod:`.precision`).

    The centre map is handed over in fp32, so peaks and the ownership merge never see reduced precision.
    """

    name = "torch"

    def __init__(self, model: MuseNet, device: str = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda requested but CUDA is not available here; use --device cpu")
        self.choice = resolve_precision(precision, self.device)
        self.precision = self.choice.precision
        if precision == "auto":
            log.info("precision auto: %s (%s)", self.precision, self.choice.reason)
        self.model = model.to(self.device).eval()
        super().__init__(model, self.device)

    @torch.inference_mode()
    def run(self, tiles: np.ndarray) -> DenseOutputs:
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap with work already queued
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        dtype = AUTOCAST[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float16, enabled=dtype is not None):
            out = self.model(x, fp32_logits=dtype is not None)
        return DenseOutputs(out.centre.float(), out.fmap)


def _cached_onnx(inputs: EngineInputs, precision: str = "fp32"):
    from muse_fast.export.cache import cache_dir, cached_file, onnx_cache_key
    from muse_fast.export.onnx import export_model

    key = onnx_cache_key(inputs.weights_sha256, torch.__version__, inputs.meta.tile_size, precision)

    def export(path: Path) -> None:
        log.info("exporting the network to ONNX (once per weights file): %s", path)
        export_model(inputs.model, inputs.meta, inputs.weights_sha256, path, precision=precision)

    # one export at a time; a process that waited finds the file; a damaged one is exported again
    return cached_file(cache_dir() / "onnx" / f"{inputs.meta.model}-{key}.onnx", export, "ONNX model")


def _cached_int8(inputs: EngineInputs):
    """The dynamic int8 model (:func:`export.quantize.quantize_dynamic_int8`), built once per fp32 export and ORT."""
    import onnxruntime as ort

    from muse_fast.export.cache import cached_file
    from muse_fast.export.quantize import quantize_dynamic_int8

    src = _cached_onnx(inputs)

    def quantize(path: Path) -> None:
        log.info("quantizing the ONNX model to int8 (once per weights file): %s", path)
        quantize_dynamic_int8(src, path)

    return cached_file(src.with_name(f"{src.stem}-int8-dynamic-ort{ort.__version__}.onnx"), quantize, "int8 model")


ONNX_PRECISIONS = ("fp32", "int8", "fp16")  # int8: CPU execution provider only; fp16: CUDA execution provider only


def onnx_precision(requested: str, cuda: bool) -> str:
    """ONNX Runtime's precision for ``requested`` (``cuda``: the CUDA provider will run it); ``auto`` is fp32."""
    if requested == "bf16" or (requested == "fp16" and not cuda):
        raise BackendUnavailable(
            f"ONNX Runtime has no fast {requested} kernels here; use "
            + (f"--engine torch --precision {requested}, or " if requested == "bf16" else "")
            + "--engine onnx --precision fp32 (or int8 for a ViT model)"
        )
    check_precision(requested, ("auto", *ONNX_PRECISIONS), "onnx")
    return "fp32" if requested == "auto" else requested


class OnnxEngine(_PointClassifier):
    """ONNX Runtime: CUDA execution provider when onnxruntime-gpu and a GPU are present, else CPU.

    ``inputs.precision``: fp32 (``auto``), int8 (dynamic quantization) or fp16 (CUDA provider); ``path`` runs
    another ONNX file of the same graph instead of the cached export (e.g. a static QDQ model).
    """

    name = "onnx"

    def __init__(self, inputs: EngineInputs, path: Path | None = None) -> None:
        import onnxruntime as ort

        from muse_fast.export.onnx import INPUT_NAME, OUTPUT_NAMES

        if inputs.precision == "int8" and torch.device(inputs.device).type == "cuda":
            raise BackendUnavailable(
                "int8 runs on ONNX Runtime's CPU provider only; use --device cpu or --precision fp16"
            )
        wanted = ["CPUExecutionProvider"]
        cuda_wanted = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
        cuda_wanted &= inputs.precision != "int8"
        if cuda_wanted:
            wanted.insert(0, "CUDAExecutionProvider")
        self.precision = onnx_precision(inputs.precision, cuda_wanted)
        cached = path is None
        if cached and self.precision == "int8":
            from muse_fast.export.quantize import check_dynamic_int8

            check_dynamic_int8(inputs.model, inputs.meta.model)
        if path is None:
            path = _cached_int8(inputs) if self.precision == "int8" else _cached_onnx(inputs, self.precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPU threads as the torch engine
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - a corrupt cache entry or an incompatible file
            if not cached:
                raise BackendUnavailable(f"cannot load the ONNX model {path} ({one_line(exc)}); check it") from None
            path.unlink(missing_ok=True)
            raise BackendUnavailable(
                f"cannot load the cached ONNX model ({type(exc).__name__}); it was removed, run again to re-export it"
            ) from None
        got = self.session.get_providers()
        self.provider = got[0]
        check_cuda_provider(cuda_wanted, self.provider, inputs.device)
        log.log(logging.INFO if cuda_wanted else logging.DEBUG, "onnx engine running on %s", self.provider)
        self.device = torch.device("cuda" if self.provider == "CUDAExecutionProvider" else "cpu")
        self.input_name, self.output_names = INPUT_NAME, list(OUTPUT_NAMES)
        on_gpu = self.device.type == "cuda"
        self.binding = OrtCudaBinding(self.session, self.input_name, self.output_names) if on_gpu else None
        super().__init__(inputs.model, self.device)

    def run(self, tiles: np.ndarray) -> DenseOutputs:
        if self.binding is not None:  # outputs stay on the GPU: no device -> host -> device round trip
            centre, fmap = self.binding.run(tiles)
            return DenseOutputs(centre.float(), fmap)
        centre, fmap = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(tiles)})
        return DenseOutputs(torch.from_numpy(centre), torch.from_numpy(fmap))


def check_cuda_provider(wanted: bool, got: str, device: str) -> None:
    """A CUDA provider that was asked for but did not load: an error for ``--device cuda``, else a warning."""
    if not wanted or got == "CUDAExecutionProvider":
        return
    why = (
        "ONNX Runtime could not load its CUDA execution provider (it needs CUDA 13 and cuDNN 9 libraries: "
        "pip install onnxruntime-gpu[cuda,cudnn]; its own log above says which library is missing)"
    )
    if device == "cuda":
        raise BackendUnavailable(f"{why}; or use --engine torch")
    log.warning("%s; running on %s", why, got)


class TensorRTEngine(_PointClassifier):
    """TensorRT engine (fp16 for ``auto``, or fp32) from the cached ONNX, built once per (ONNX, profile, precision,
    TRT, GPU)."""

    name = "trt"

    def __init__(self, inputs: EngineInputs) -> None:
        from muse_fast.export.onnx import INPUT_NAME, OUTPUT_NAMES
        from muse_fast.export.tensorrt import BuildSpec, TensorRTRunner

        requested = check_precision(inputs.precision, ("auto", "fp16", "fp32"), "trt")
        self.precision = precision = "fp16" if requested == "auto" else requested
        size = inputs.meta.tile_size
        spec = BuildSpec(1, inputs.batch_size, max(64, inputs.batch_size), precision)
        onnx_path = _cached_onnx(inputs, precision)  # strongly typed build: the ONNX file's dtypes set the precision
        self.runner = TensorRTRunner(onnx_path, spec, INPUT_NAME, OUTPUT_NAMES, (size, size, 3))
        self.device = torch.device("cuda")
        super().__init__(inputs.model, self.device)

    def run(self, tiles: np.ndarray) -> DenseOutputs:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).pin_memory().to(self.device, non_blocking=True)
        centre, fmap = self.runner.run(x)
        return DenseOutputs(centre.float(), fmap)


def _onnx_reason() -> str | None:
    for module in ("onnxruntime", "onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            return f"python package '{module}' is not installed (pip install -e .[cpu] or .[gpu])"
    return None


def _trt_reason() -> str | None:
    from muse_fast.export.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason() or _onnx_reason()


@dataclass(frozen=True)
class EngineEntry:
    name: str
    unavailable_reason: Callable[[], str | None]
    build: Callable[[EngineInputs], Engine]


def _compiled(inputs: EngineInputs) -> Engine:
    from .compiled import CompiledEngine

    return CompiledEngine(inputs)


ENGINES: dict[str, EngineEntry] = {
    "torch": EngineEntry("torch", lambda: None, lambda i: TorchEngine(i.model, i.device, i.precision)),
    "compiled": EngineEntry("compiled", lambda: None, _compiled),
    "onnx": EngineEntry("onnx", _onnx_reason, OnnxEngine),
    "trt": EngineEntry("trt", _trt_reason, TensorRTEngine),
}
AUTO_ORDER = ("trt", "onnx", "torch")


def create_engine(name: str, inputs: EngineInputs) -> Engine:
    """Build engine ``name`` at ``inputs.precision``; unavailable requests raise one line.

    ``auto``: on the CPU the fastest engine and precision measured on this machine (:mod:`.autotune`); on CUDA the
    first available of :data:`AUTO_ORDER`.
    """
    check_precision(inputs.precision)
    if torch.device(inputs.device).type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda requested but CUDA is not available here; use --device cpu")
    if torch.device(inputs.device).type == "cpu":
        from .memory import keep_large_buffers

        keep_large_buffers()  # each batch reuses the last one's buffers instead of page-faulting new ones
    if name == "auto" and torch.device(inputs.device).type == "cpu":
        from .autotune import auto_cpu_engine

        def build(candidate) -> Engine:
            engine = create_engine(candidate.engine, replace(inputs, precision=candidate.precision))
            if engine.name != candidate.engine:  # the compiled engine fell back to eager: not a choice of its own
                raise BackendUnavailable(f"{candidate.label} cannot be built here; it would run {engine.name}")
            return engine

        return auto_cpu_engine(inputs, build, _onnx_reason() is None)
    if name == "auto":
        for candidate in AUTO_ORDER:
            reason = ENGINES[candidate].unavailable_reason()
            if reason is None:
                return ENGINES[candidate].build(inputs)
            log.info("engine auto: skipping %s (%s)", candidate, reason)
    if name not in ENGINES:
        raise ConfigError(f"unknown engine '{name}'; choose one of: auto, {', '.join(ENGINES)}")
    reason = ENGINES[name].unavailable_reason()
    if reason:
        raise BackendUnavailable(f"engine '{name}' is unavailable: {reason}; try --engine torch")
    if name == "compiled" and torch.device(inputs.device).type == "cpu":
        try:
            return ENGINES[name].build(inputs)
        except BackendUnavailable as exc:  # no compiler, or the build failed: the eager network computes the same
            log.warning("engine compiled: %s; running the eager torch engine instead", exc)
            return ENGINES["torch"].build(inputs)
    return ENGINES[name].build(inputs)
