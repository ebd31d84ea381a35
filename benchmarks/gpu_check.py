"""Steps of the GPU acceptance run (driven by ``benchmarks/gpu_check.sh``); each writes one JSON file.

    python benchmarks/gpu_check.py STEP --out FILE [--rehearsal]

Steps: ``export-slide`` (CPU machine: the carried PNG), ``machine``, ``junit``, ``kernels``, ``models``, ``mosaic``,
``e2e``, ``parity``, ``collect``. With ``--rehearsal`` (no GPU) each step runs its CPU stand-in at small sizes, and
every GPU-only figure is recorded as skipped with the reason, so the script is rehearsed before the device run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {
    "kernel_speedup_min": 5.0,  # fused Triton peaks + gather vs the torch reference
    "pipeline_efficiency_min": 0.9,  # end-to-end tiles/s over model-only tiles/s
    "seconds_per_mm2_max": 0.05,  # at 0.5 um/px
    "parity_max_px": 0.5,  # CPU and GPU nuclei: identical count, each within 0.5 px
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
    """CMU-1-Small-Region.svs (shared data) -> ``out/cmu_small_region.png`` readable without OpenSlide/imagecodecs."""
    from PIL import Image

    from muse_fast.io.readers import open_slide
    from muse_fast.train.data.paths import shared_data_dir

    svs = shared_data_dir() / "wsi" / "CMU-1-Small-Region.svs"
    slide = open_slide(svs)
    w, h = slide.level_dimensions[0]
    pixels = slide.read_region(0, 0, w, h, 0)
    out.mkdir(parents=True, exist_ok=True)
    dpi = 25400.0 / slide.mpp
    Image.fromarray(pixels).save(out / "cmu_small_region.png", dpi=(dpi, dpi), optimize=True)
    slide.close()
    return {"png": str(out / "cmu_small_region.png"), "size": [w, h], "mpp": slide.mpp}


def machine(rehearsal: bool) -> dict:
    import torch

    info = {
        "mode": "cpu-rehearsal" if rehearsal else "gpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "cpu_count": os.cpu_count(),
    }
    for module in ("triton", "numba", "cupy", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - any import failure is a fact to record
            info[module] = f"unavailable ({type(exc).__name__})"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
        info["driver"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    else:
        info["gpu"] = skipped("no CUDA GPU on this machine")
    return info


def _peak_inputs(batch: int, channels: int, points: int, device: str, dtype):
    """Stride-4 maps (56 x 56) with ``points`` distinct-valued spikes each over low noise, and features."""
    import torch

    g = torch.Generator().manual_seed(0)
    heat = 0.05 * torch.rand(batch, 56 * 56, generator=g)
    for i in range(batch):
        spots = torch.randperm(56 * 56, generator=g)[:points]
        heat[i, spots] = 0.4 + 0.6 * torch.rand(points, generator=g)
    fmap = torch.randn(batch, channels, 56, 56, generator=g)
    return heat.reshape(batch, 56, 56).to(device), fmap.to(device=device, dtype=dtype)


def kernels(rehearsal: bool) -> dict:
    """Peaks + gather, the fast implementation (and the native library, when built) vs the torch reference."""
    import torch

    from muse_fast.kernels.native import unavailable_reason
    from muse_fast.kernels.peaks import find_peaks
    from muse_fast.kernels.point_gather import gather_points

    device, fast = ("cpu", "numba") if rehearsal else ("cuda", "triton")
    native_reason = unavailable_reason(device)
    batch = 16 if rehearsal else 256
    result = {"sizes": {"maps": batch, "hw": [56, 56], "channels": 192, "points_per_map": 200}, "fast": fast}
    if rehearsal:
        result["note"] = "cpu-rehearsal: numba stands in for Triton, 16 maps; GPU figures pending"
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        heat, fmap = _peak_inputs(batch, 192, 200, device, dtype)

        def run(impl: str, heat=heat, fmap=fmap):
            peaks = find_peaks(heat, 0.3, 1, 512, impl=impl)
            xy = 4.0 * peaks.yx.flip(-1).float()
            return gather_points(fmap, xy, (224, 224), peaks.counts, impl=impl), peaks

        (ref, ref_peaks), (got, got_peaks) = run("reference"), run(fast)
        same = torch.equal(ref_peaks.counts.cpu(), got_peaks.counts.cpu())
        ref_ms, fast_ms = timed_ms(lambda: run("reference")), timed_ms(lambda: run(fast))
        result[name] = {
            "reference_ms": round(ref_ms, 3),
            f"{fast}_ms": round(fast_ms, 3),
            "speedup": round(ref_ms / fast_ms, 2),
            "same_peak_counts": bool(same),
            "max_abs_diff": float((got.float() - ref.float()).abs().max()),
            "peaks_per_map": float(ref_peaks.counts.float().mean()),
        }
        if native_reason:
            result[name]["native"] = skipped(native_reason)
            continue
        nat, nat_peaks = run("native")
        nat_ms = timed_ms(lambda: run("native"))
        result[name]["native"] = {
            "ms": round(nat_ms, 3),
            f"speedup_vs_{fast}": round(fast_ms / nat_ms, 2),
            "same_peak_counts": bool(torch.equal(ref_peaks.counts.cpu(), nat_peaks.counts.cpu())),
            "max_abs_diff": float((nat.float() - ref.float()).abs().max()),
        }
    return result


def models(rehearsal: bool, out: Path) -> dict:
    """Model-only tiles/s of the torch engine: fp32, fp16, bf16 autocast and torch.compile (fp16)."""
    import torch

    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine

    device, batch = ("cpu", 4) if rehearsal else ("cuda", 64)
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
        ms = timed_ms(lambda e=engine: e.run(tiles), warmup=2, reps=3 if rehearsal else 10)
        result[variant] = {"tiles_per_s": round(batch / ms * 1e3, 1), "first_call_s": round(warm, 1)}
        out.write_text(json.dumps(result, indent=2))  # partial results survive a timeout
    return result


def mosaic(png: Path, out_tif: Path, repeat: int) -> dict:
    """A ``repeat`` x ``repeat`` mosaic of the carried slide as an uncompressed TIFF (enough batches at 256)."""
    import tifffile
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    big = np.tile(pixels, (repeat, repeat, 1))
    tifffile.imwrite(out_tif, big, resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER")  # 0.5 um/px
    return {"tif": str(out_tif), "shape": list(big.shape), "repeat": repeat}


def e2e(slide: Path, rehearsal: bool, cli: str, out: Path, per_run_s: int) -> dict:
    """``muse-fast bench`` (the CLI users run) at batch 16, 64 and 256; one process per batch size."""
    device, batches = ("cpu", (16,)) if rehearsal else ("cuda", (16, 64, 256))
    result: dict = {"slide": str(slide), "device": device, "mpp": 0.5, "runs": []}
    if rehearsal:
        result["note"] = "cpu-rehearsal: batch 16, first 2 batches only; GPU batch 16/64/256 pending"
    for batch in batches:
        command = [cli, "bench", str(slide), "--device", device, "--batch-size", str(batch), "--mpp", "0.5"]
        if rehearsal:
            command += ["--max-batches", "2"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=per_run_s)
        except subprocess.TimeoutExpired:
            result["runs"].append({"batch_size": batch, "status": f"timeout after {per_run_s} s"})
            continue
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            result["runs"].append({"batch_size": batch, "status": f"exit {done.returncode}", "stderr": tail})
            continue
        run = json.loads(done.stdout)
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


def collect(work: Path, out: Path) -> dict:
    """Merge the step files (with each step's exit status) and judge the targets."""
    report: dict = {"targets": TARGETS}
    for step in ("install", "machine", "native", "tests", "kernels", "models", "e2e", "parity"):
        data = _read(work / f"{step}.json")
        rc_file = work / f"{step}.rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        status = {None: "not run", 0: "ok", 124: "timeout", 137: "killed"}.get(rc, f"failed (exit {rc})")
        report[step] = {"step_status": status, **(data if isinstance(data, dict) else {"result": data})}
    report["verdict"] = verdict(report)
    out.write_text(json.dumps(report, indent=2))
    return report


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def verdict(report: dict) -> dict:
    """pass / fail / pending per target (pending: not measured on a GPU)."""
    if report.get("machine", {}).get("mode") != "gpu":
        return {k: "pending (cpu-rehearsal)" for k in ("kernels", "pipeline", "seconds_per_mm2", "parity", "tests")}
    k = report.get("kernels", {})
    speed = [k.get(d, {}).get("speedup") for d in ("fp32", "bf16")]
    runs = [r for r in report.get("e2e", {}).get("runs", []) if "pipeline_efficiency" in r]
    par = report.get("parity", {}).get("cuda_fp32", {})
    tests = report.get("tests", {})

    def judge(ok) -> str:
        return "pending" if ok is None else ("pass" if ok else "fail")

    return {
        "kernels": judge(all(s is not None for s in speed) and min(speed) >= TARGETS["kernel_speedup_min"]),
        "pipeline": judge(max(r["pipeline_efficiency"] for r in runs) >= TARGETS["pipeline_efficiency_min"])
        if runs
        else "pending",
        "seconds_per_mm2": judge(min(r["seconds_per_mm2"] for r in runs) <= TARGETS["seconds_per_mm2_max"])
        if runs
        else "pending",
        "parity": judge(par.get("same_count") and par.get("max_match_px", 9) <= TARGETS["parity_max_px"])
        if par
        else "pending",
        "tests": judge(tests.get("failed", 1) == 0 and tests.get("errors", 1) == 0) if tests else "pending",
    }


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
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rehearsal", action="store_true")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--xml", type=Path)
    parser.add_argument("--cli", default="muse-fast")
    parser.add_argument("--per-run", type=int, default=100)
    args = parser.parse_args(argv)
    steps = {
        "export-slide": lambda: export_slide(args.out),
        "machine": lambda: machine(args.rehearsal),
        "kernels": lambda: kernels(args.rehearsal),
        "models": lambda: models(args.rehearsal, args.out),
        "mosaic": lambda: mosaic(args.png, args.out, args.repeat),
        "parity": lambda: parity(args.png, args.rehearsal),
        "e2e": lambda: e2e(args.png, args.rehearsal, args.cli, args.out, args.per_run),
        "collect": lambda: collect(args.work, args.out),
        "junit": lambda: junit(args.xml),
    }
    result = steps[args.step]()
    if args.step not in ("export-slide", "mosaic", "collect"):
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
