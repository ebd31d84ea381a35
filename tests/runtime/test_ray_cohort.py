"""Cohorts on Ray (``muse-fast infer FOLDER --ray``) on a real local cluster: 2 CPUs, bound to 127.0.0.1, started
once for the module. The cohort is three BRCA-M2C images and a truncated one; the network is the shipped model.

A CPU worker on that cluster gets 1 torch thread (2 CPUs / 2 workers per node), so the local reference run uses 1
thread too: CPU results depend on the number of threads (docs/results.md, "Cohorts on Ray").
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from child_signals import sigint_as_a_terminal_gives_it
from ray_cluster import local_cluster

import muse_fast.cli as cli
from muse_fast.config import InferConfig
from muse_fast.errors import ConfigError, OutputError
from muse_fast.runtime.cohort import collect_jobs
from muse_fast.runtime.lock import is_locked
from muse_fast.runtime.pipeline import output_stem
from muse_fast.runtime.ray_cohort import RayOptions, run_cohort_on_ray, worker_specs
from muse_fast.runtime.ray_worker import EXIT_AT, EXIT_ONCE, check_shared
from muse_fast.runtime.seams import PAUSE_AT, PAUSE_DIR

ARGS = ["--mpp", "0.5", "--batch-size", "4", "--quiet"]
RAY = ["--ray", "auto", "--workers-per-node", "2"]
TIMING = ("seconds", "seconds_per_mm2", "outputs", "resumed_batches")  # differ from run to run (outputs: --out)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(num_cpus=2) as ray:
        yield ray


@pytest.fixture(scope="module")
def cohort(brca_dir, tmp_path_factory) -> Path:
    """Three BRCA-M2C images (linked) and ``broken.png``, the first 30 kB of a fourth."""
    folder = tmp_path_factory.mktemp("cohort")
    images = sorted((brca_dir / "images").glob("*.png"))[:4]
    for image in images[:3]:
        (folder / image.name).symlink_to(image)
    (folder / "broken.png").write_bytes(images[3].read_bytes()[:30_000])
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    """Every file (hidden ones too: a finished run leaves none), but the run summary."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "run_summary.json"}


def _summary(folder: Path) -> dict:
    return json.loads((folder / "run_summary.json").read_text())


def _slides(summary: dict) -> list[dict]:
    return [{k: v for k, v in s.items() if k not in TIMING} for s in summary["slides"]]


@pytest.fixture(scope="module")
def local(cohort, tmp_path_factory):
    """The local run of the cohort, with 1 torch thread like each worker: (files, run summary)."""
    import torch

    out, threads = tmp_path_factory.mktemp("local"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["infer", str(cohort), "--out", str(out), *ARGS]) == 2  # broken.png fails
    finally:
        torch.set_num_threads(threads)
    return _files(out), _summary(out)


def _largest(cohort: Path) -> str:
    return output_stem(max(cohort.iterdir(), key=lambda p: p.stat().st_size))


def test_a_cohort_on_ray_matches_the_local_run_byte_for_byte(cluster, cohort, local, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["infer", str(cohort), "--out", str(out), *ARGS, *RAY]) == 2
    files, summary = local
    assert _files(out) == files  # per-slide outputs and manifests; no lock, probe or temporary file left
    ray_summary = _summary(out)
    assert _slides(ray_summary) == _slides(summary)  # the bad slide recorded exactly as locally, in input order
    assert ray_summary["config"] == summary["config"] and ray_summary["failed"] == 1
    assert ray_summary["ray"]["workers"] == 2 and ray_summary["ray"]["worker_deaths"] == []
    assert "broken.png: failed: cannot read broken.png" in capsys.readouterr().err

    assert cli.main(["infer", str(cohort), "--out", str(out), *ARGS, *RAY]) == 2  # finished slides are skipped
    assert [s["status"] for s in _summary(out)["slides"]] == ["skipped", "skipped", "skipped", "failed"]
    assert _files(out) == files


def test_a_worker_killed_mid_slide_is_replaced_and_its_slide_resumes(cluster, cohort, local, tmp_path, monkeypatch):
    stem, marker = _largest(cohort), tmp_path / "exited"
    monkeypatch.setenv(EXIT_AT, f"{stem}:shard:1")  # the worker exits after checkpointing batches 0 and 1
    monkeypatch.setenv(EXIT_ONCE, str(marker))
    out = tmp_path / "out"
    assert cli.main(["infer", str(cohort), "--out", str(out), *ARGS, *RAY]) == 2
    assert marker.exists()
    assert _files(out) == local[0]
    summary = _summary(out)
    assert [d["slide"] for d in summary["ray"]["worker_deaths"]] == [str(cohort / f"{stem}.png")]
    resumed = {output_stem(Path(s["slide"])): s["resumed_batches"] for s in summary["slides"]}
    assert resumed[stem] == 2 and sum(resumed.values()) == 2
    assert _slides(summary) == _slides(local[1])


def test_a_slide_that_kills_every_worker_fails_after_bounded_retries(cluster, cohort, local, tmp_path, monkeypatch):
    stem = _largest(cohort)
    monkeypatch.setenv(EXIT_AT, f"{stem}:lock")  # in every run of the slide (no EXIT_ONCE marker), lock held
    out = tmp_path / "out"
    cfg = InferConfig(out_dir=out, mpp=0.5, batch_size=4, quiet=True)
    build = partial(cli._build_engine, cfg.engine, cfg.weights, cfg.device, cfg.batch_size)
    options = RayOptions("auto", workers_per_node=2, max_attempts=2)
    assert run_cohort_on_ray(collect_jobs([cohort]), cfg, build, options) == 2
    summary = _summary(out)
    status = {output_stem(Path(s["slide"])): (s["status"], s["error"]) for s in summary["slides"]}
    assert status[stem][0] == "failed" and "died in each of 2 runs" in status[stem][1]
    assert [s for s, (st, _) in status.items() if st == "done"] == [s for s in status if s not in (stem, "broken")]
    assert len(summary["ray"]["worker_deaths"]) == 2
    assert not list(out.glob(f"{stem}.*")) and not is_locked(out, stem)  # nothing under a final name
    assert {k: v for k, v in _files(out).items() if not k.startswith((stem, f".{stem}"))} == {
        k: v for k, v in local[0].items() if not k.startswith(stem)
    }


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_on_the_driver_stops_workers_cleanly_and_a_rerun_completes(cluster, cohort, local, tmp_path):
    """The driver (its own process, joined to the module's cluster) gets SIGINT while both workers are paused after
    their first batch; it cancels them, they stop at their next step, and the rerun resumes from their shards."""
    seams_dir, out = tmp_path / "seams", tmp_path / "out"
    seams_dir.mkdir()
    address = cluster.get_runtime_context().gcs_address
    env = {**os.environ, PAUSE_AT: "shard:0", PAUSE_DIR: str(seams_dir)}
    cmd = [sys.executable, "-m", "muse_fast", "infer", str(cohort), "--out", str(out), *ARGS]
    cmd += ["--ray", address, "--workers-per-node", "2"]
    driver = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_a_terminal_gives_it)
    _wait_for(lambda: len(list(seams_dir.glob("*.paused"))) == 2 or driver.poll() is not None, "two workers paused")
    paused = sorted(seams_dir.glob("*.paused"))
    assert len(paused) == 2, driver.stderr.read()
    driver.send_signal(signal.SIGINT)
    lines = []
    for line in driver.stderr:
        lines.append(line)
        if "cancelling" in line:  # sent: the workers stop at their next step once released
            for marker in paused:
                marker.with_suffix(".go").touch()
    assert driver.wait(timeout=120) == 130, "".join(lines)
    assert lines[-1].startswith("muse-fast: interrupted;")
    pids = [int(p.stem.split(".")[-1]) for p in paused]
    _wait_for(lambda: not any(_alive(pid) for pid in pids), "workers gone")
    stems = [output_stem(p) for p in cohort.iterdir()]
    assert not any(is_locked(out, stem) for stem in stems)
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden and all(name.endswith(".partial") and (out / name).is_dir() for name in hidden), hidden
    for name in hidden:  # an interrupted slide has its shards, and nothing under a final name
        assert not list(out.glob(name[1 : -len(".partial")] + ".*"))

    assert cli.main(["infer", str(cohort), "--out", str(out), *ARGS, *RAY]) == 2
    assert _files(out) == local[0]
    assert sum(s["resumed_batches"] for s in _summary(out)["slides"]) >= 2


def test_without_ray_the_flag_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out"
    slides = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert cli.main(["infer", *slides, "--out", str(out), "--ray", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "ray==' in err, err
    assert not out.exists()


def test_ray_is_imported_only_by_a_run_on_ray():
    modules = "muse_fast.cli, muse_fast.runtime.ray_cohort, muse_fast.runtime.ray_worker"
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_workers_per_node_gpus_and_dead_nodes():
    nodes = [
        {"NodeID": "a" * 40, "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
        {"NodeID": "b" * 40, "Alive": True, "Resources": {"CPU": 6.0}},
        {"NodeID": "c" * 40, "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    cpu = worker_specs(nodes, "cpu", 4)
    assert [(s.node_id[0], s.num_cpus, s.threads) for s in cpu] == [("a", 4.0, 4)] * 4 + [("b", 1.5, 1)] * 4
    gpu = worker_specs(nodes, "cuda", 4)
    assert [(s.node_id[0], s.num_gpus, s.threads) for s in gpu] == [("a", 1, 0)] * 2
    with pytest.raises(ConfigError, match="no GPUs"):
        worker_specs(nodes[1:], "cuda", 1)
    with pytest.raises(ConfigError, match="--workers-per-node must be at least 1"):
        RayOptions(workers_per_node=0)  # before any cluster is joined


def test_an_out_folder_a_node_does_not_see_is_one_line(tmp_path):
    (tmp_path / ".probe").touch()
    check_shared(tmp_path, ".probe", "n1")
    shutil.rmtree(tmp_path)
    with pytest.raises(OutputError, match="not shared with Ray node n1") as err:
        check_shared(tmp_path, ".probe", "n1")
    assert "\n" not in str(err.value)
