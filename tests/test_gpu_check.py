"""benchmarks/gpu_check.py on its own: the report's schema, the verdict (pass/fail on a GPU, never "pending" for a
failed step), the mode taken from the shell script, and the machine facts that must not crash without nvidia-smi."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gc)

OK = {"step_status": "ok"}
SKIP = {"status": "skipped", "reason": "no CUDA GPU"}


def _kernel_row(speedup: float) -> dict:
    return {"reference_ms": 90.0, "baseline_ms": 4.0, "triton_ms": 4.0 / speedup, "speedup": speedup,
            "speedup_vs_reference": 90.0 * speedup / 4.0, "same_peaks": True, "baseline_same_peaks": True,
            "max_abs_diff": 0.0, "peaks_per_map": 199.0}  # fmt: skip


def _run(batch: int, efficiency: float, s_per_mm2: float) -> dict:
    return {"batch_size": batch, "status": "ok", "pipeline_efficiency": efficiency, "seconds_per_mm2": s_per_mm2}


def gpu_report() -> dict:
    """A complete report of a GPU run that meets every target."""
    machine = {"mode": "gpu", "commit": {"commit": "abc123", "dirty": False}, "python": "3.12.3", "torch": "2.11.0",
               "torch_cuda": "12.8", "cudnn": 91002, "nvcc": "12.8", "cmake": "3.28.3",
               "tf32": {"matmul": False, "cudnn": True}, "gpu": "NVIDIA H200", "driver": "570.1"}  # fmt: skip
    report = {
        "mode": "gpu",
        "commit": machine["commit"],
        "targets": gc.TARGETS,
        "install": dict(OK),
        "machine": {**OK, **machine},
        "native": {**OK, "libraries": {"cpu": True, "cuda": True, "trt": False}, "missing": []},
        "kernels": {**OK, "sizes": {"maps": 256}, "fast": "triton", **{d: _kernel_row(6.0) for d in gc.KERNEL_DTYPES}},
        "mosaic": {**OK, "tif": "m.tif", "shape": [8880, 11868, 3]},
        "e2e": {**OK, "runs": [_run(16, 0.85, 0.06), _run(64, 0.95, 0.03), _run(256, 0.93, 0.04)]},
        "models": {**OK, "fp32": {}, "fp16": {}, "bf16": {}, "compile_fp16": {}},
        "parity": {
            **OK,
            "cuda_fp32": {"cpu": 3077, "other": 3077, "same_count": True, "max_match_px": 0.1},
            "cuda_fp16": {"cpu": 3077, "other": 3075, "same_count": False, "max_match_px": 0.9},
        },
        "tests": {**OK, "passed": 160, "failed": 0, "errors": 0, "skipped": 3},
        "engines": {"onnxruntime_cuda": SKIP, "tensorrt": SKIP},
    }
    report["verdict"], report["verdict_notes"] = gc.verdict(report, "gpu")
    return report


def test_a_complete_passing_gpu_report():
    report = gpu_report()
    assert report["verdict"] == {k: "pass" for k in gc.VERDICTS}
    assert gc.validate(report) == []
    assert "6.0x against the vectorised torch baseline" in report["verdict_notes"]["kernels"]


def test_a_rehearsal_is_pending_and_complete_only_with_pending_verdicts():
    report = gpu_report()
    report["mode"] = "rehearsal"
    verdicts, _ = gc.verdict(report, "rehearsal")
    assert set(verdicts.values()) == {"pending (cpu-rehearsal)"}
    assert gc.validate({**report, "verdict": verdicts}) == []
    assert "verdict: kernels is 'pass'" in gc.validate(report)  # a rehearsal never claims a pass


E2E = ("pipeline", "seconds_per_mm2")


@pytest.mark.parametrize(
    "change,targets,note",
    [
        (lambda r: r["e2e"].update(runs=[{"batch_size": 16, "status": "exit 1"}]), E2E, "exit 1"),
        (lambda r: r["e2e"].update(step_status="timeout", runs=[]), E2E, "e2e step: timeout"),
        (lambda r: [x.update(pipeline_efficiency=0.89) for x in r["e2e"]["runs"]], ("pipeline",), "efficiency 0.890"),
        (lambda r: r["kernels"]["bf16"].update(speedup=4.9), ("kernels",), "slowest speed-up 4.9x"),
        (lambda r: r["kernels"]["fp16"].update(same_peaks=False), ("kernels",), "peak positions differ"),
        (lambda r: r["parity"]["cuda_fp32"].update(max_match_px=0.6), ("parity",), "worst match 0.600 px"),
        (lambda r: r.update(parity={"step_status": "not run"}), ("parity",), "parity step: not run"),
        (lambda r: r["tests"].update(step_status="timeout"), ("tests",), "160 passed, 0 failed, 0 errors, 3 skipped"),
        (lambda r: r.update(tests={"step_status": "killed"}), ("tests",), "tests step: killed: no JUnit XML"),
        (lambda r: r["tests"].update(failed=1), ("tests",), "1 failed"),
    ],
)
def test_a_failed_or_missing_measurement_fails_its_target_on_a_gpu(change, targets, note):
    report = copy.deepcopy(gpu_report())
    change(report)
    verdicts, notes = gc.verdict(report, "gpu")
    assert [k for k, v in verdicts.items() if v != "pass"] == list(targets)
    assert set(verdicts.values()) == {"pass", "fail"} and note in notes[targets[0]]


def test_validate_names_every_gap():
    report = copy.deepcopy(gpu_report())
    del report["machine"]["cudnn"], report["engines"]["tensorrt"]
    report["native"]["step_status"] = "failed (exit 1)"
    report["e2e"]["runs"].append({"batch_size": 256, "status": "timeout after 60 s"})
    report["commit"] = {"status": "skipped", "reason": "no .gpu_carry/commit.json"}
    problems = gc.validate(report)
    assert problems == [
        "commit: missing (run benchmarks/gpu_prep.sh)",
        "machine: no 'cudnn'",
        "native: step failed (exit 1)",
        "engines: no 'tensorrt'",
        "e2e: batch 256: timeout after 60 s",
    ]


def test_collect_takes_the_mode_from_the_script_even_when_the_machine_step_crashed(tmp_path):
    """A crashed machine step on a real GPU must not turn the verdict into 'pending (cpu-rehearsal)'."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "machine.rc").write_text("1\n")
    (work / "tests.rc").write_text("0\n")
    (work / "tests.json").write_text(json.dumps({"passed": 3, "failed": 0, "errors": 0, "skipped": 0}))
    report = gc.collect(work, tmp_path / "gpu_check.json", "gpu")
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == report
    assert report["mode"] == "gpu" and report["machine"]["step_status"] == "failed (exit 1)"
    assert report["verdict"] == {"kernels": "fail", "pipeline": "fail", "seconds_per_mm2": "fail", "parity": "fail",
                                 "tests": "pass"}  # fmt: skip
    assert report["kernels"]["step_status"] == "not run" and set(report["engines"]) == {"onnxruntime_cuda", "tensorrt"}


def test_no_nvidia_smi_or_nvcc_is_recorded_not_raised(monkeypatch):
    def missing(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(gc.subprocess, "run", missing)
    assert gc._version(["nvcc", "--version"], r"release (\S+),")["status"] == "skipped"
    driver = gc._driver()
    assert isinstance(driver, str) or driver["reason"] == "no nvidia-smi and no /proc/driver/nvidia/version"
    info = gc.machine("gpu", REPO)
    assert info["mode"] == "gpu" and info["cmake"]["status"] == "skipped" and "tf32" in info


def test_the_native_step_fails_without_the_cuda_library_on_a_gpu(tmp_path):
    (tmp_path / "libmuse_native_cpu.so").write_bytes(b"")
    assert gc.native(tmp_path, "gpu")["missing"] == ["libmuse_native_cuda.so"]
    assert gc.native(tmp_path, "rehearsal")["missing"] == []
    assert gc.main(["native", "--build", str(tmp_path), "--out", str(tmp_path / "n.json"), "--mode", "gpu"]) == 1
    assert json.loads((tmp_path / "n.json").read_text())["libraries"]["cuda"] is False


def test_e2e_runs_the_cli_through_this_python_and_records_failures(tmp_path, monkeypatch):
    seen = []

    def run(command, **kwargs):
        seen.append(command)
        if len(seen) == 1:
            raise OSError("cannot start")
        return subprocess.CompletedProcess(command, 2, "", "muse-fast: error: bad slide\n")

    monkeypatch.setattr(gc.subprocess, "run", run)
    result = gc.e2e(tmp_path / "s.tif", False, tmp_path / "e2e.json", 10)
    assert [c[:3] for c in seen] == [[sys.executable, "-m", "muse_fast"]] * 3
    assert [r["status"] for r in result["runs"]] == ["could not start: cannot start", "exit 2", "exit 2"]


def test_junit_counts_and_the_carried_commit(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.a" name="t1"/><testcase classname="tests.a" name="t2"><failure/></testcase>'
        '<testcase classname="tests.a" name="t3"><skipped/></testcase><testcase classname="tests.b" name="t4"/>'
        "</testsuite></testsuites>"
    )
    assert gc.junit(xml) == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1, "failing": ["tests.a::t2"]}
    assert gc.carried_commit(tmp_path)["status"] == "skipped"
    (tmp_path / ".gpu_carry").mkdir()
    (tmp_path / ".gpu_carry" / "commit.json").write_text('{"commit": "abc", "dirty": true}')
    assert gc.carried_commit(tmp_path) == {"commit": "abc", "dirty": True}
