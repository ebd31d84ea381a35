"""A cohort on a Ray cluster: ``muse-fast infer LIST.csv|FOLDER --out DIR --ray auto|ADDRESS``.

The driver (this module) starts one :class:`~muse_fast.runtime.ray_worker.SlideWorker` actor per worker (per GPU with
``--device cuda``, ``--workers-per-node`` per node on CPU), hands out slides largest first, one at a time to whichever
worker is free, and collects their summaries into ``run_summary.json`` (input order) as a local run does. Every
guarantee of a local run holds because each worker runs the local code on the shared ``--out``: the slide's lock,
resume from shards, staged outputs and the manifest written last.

- A worker that dies (killed process, lost node: ``RayActorError``) is replaced, and its slide goes back to the front
  of the queue, for whichever worker is free next, at most ``max_attempts`` times in all; then it is recorded as
  failed. The retry resumes from the dead worker's shards.
- Ctrl-C or SIGTERM on the driver cancels the running slides (each stops at its next step, as after a local Ctrl-C),
  waits ``grace_s`` for them, then kills every worker; locks are released and no file appears under a final name.
- ``run_summary.json`` differs from a local run's only in timing (``seconds``, ``seconds_per_mm2``),
  ``resumed_batches`` of a slide that was retried, and its ``ray`` section (workers, deaths, start-up and wall time).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..config import InferConfig
from ..errors import BackendUnavailable, ConfigError, MuseError, one_line
from ..output.folder import out_dir_for_run
from .cohort import SlideJob, failed_summary, finish_cohort
from .fingerprint import differences
from .summary import SlideSummary

RAY_PIN = "ray==2.60.0"  # pyproject.toml's [ray] extra; every node of a cluster must run the same Ray and Python


@dataclass(frozen=True)
class RayOptions:
    address: str = "auto"  # 'auto': RAY_ADDRESS, a 'ray start' cluster on this machine, else a new local one
    workers_per_node: int = 1  # CPU workers per node (--device cpu); with --device cuda, one worker per GPU
    max_attempts: int = 3  # runs of a slide whose worker keeps dying
    grace_s: float = 10.0  # after Ctrl-C, how long running slides get to stop cleanly before workers are killed

    def __post_init__(self) -> None:
        if self.workers_per_node < 1:
            raise ConfigError(f"--workers-per-node must be at least 1, got {self.workers_per_node}; the default is 1")


@dataclass(frozen=True)
class WorkerSpec:
    node_id: str
    num_cpus: float
    num_gpus: int
    threads: int  # torch intra-op threads of a CPU worker (0: the engine's default)


def import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f'--ray needs Ray, which is not installed here: pip install "{RAY_PIN}"') from None
    return ray


def worker_specs(nodes: list[dict], device: str, per_node: int) -> list[WorkerSpec]:
    """The workers to start on the alive ``nodes`` (as ``ray.nodes()`` lists them)."""
    specs = []
    for node in (n for n in nodes if n.get("Alive")):
        res, node_id = node.get("Resources", {}), node["NodeID"]
        cpus, gpus = float(res.get("CPU", 0)), int(res.get("GPU", 0))
        if device == "cuda":
            specs += [WorkerSpec(node_id, min(1.0, _floor4(cpus / max(gpus, 1))), 1, 0) for _ in range(gpus)]
        elif cpus > 0:
            specs += [WorkerSpec(node_id, _floor4(cpus / per_node), 0, max(1, int(cpus // per_node)))] * per_node
    if not specs:
        what = "GPUs (pass --device cpu, or add GPU nodes)" if device == "cuda" else "CPUs"
        raise ConfigError(f"the Ray cluster has no {what}; its nodes: {len(nodes)}")
    return specs


def _floor4(x: float) -> float:
    return int(x * 10_000) / 10_000  # Ray takes resource amounts to 4 decimals


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1  # missing: last (it fails on its worker and is recorded)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A ``host:port`` head (or ``RAY_ADDRESS`` under 'auto') must accept a TCP connection within ``timeout_s``:
    ``ray.init`` itself waits minutes, silently, for an address nobody listens on."""
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    if not target or "://" in target or target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise BackendUnavailable(
            f"no Ray head answers at {target} ({why}); start one with 'ray start --head' or fix --ray/RAY_ADDRESS"
        ) from None


def connect(ray, address: str) -> bool:
    """Join (or, with 'auto' and no cluster around, start) a cluster; True when this call started the connection."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
    except ConnectionError as exc:
        if address != "auto":
            raise BackendUnavailable(f"cannot join the Ray cluster at {address}: {one_line(exc)}") from None
        # no cluster around: a private one on this machine, without a dashboard (its services still listen on the
        # machine's address, as every Ray cluster does; README "Cohorts on Ray" says how to keep it to localhost)
        ray.init(include_dashboard=False, logging_level=logging.ERROR)
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailable(f"cannot join the Ray cluster at {address}: {one_line(exc)}") from None
    return True


def run_cohort_on_ray(jobs: list[SlideJob], cfg: InferConfig, build, options: RayOptions) -> int:
    """Run ``jobs`` on Ray workers that each call ``build()`` once for ``(engine, meta, weights sha)``; exit code."""
    ray = import_ray()
    started = connect(ray, options.address)
    with out_dir_for_run(cfg.out_dir) as out_dir:  # a refused run (no workers, no shared storage) leaves no --out
        probe = out_dir / f".muse-fast-ray.{uuid.uuid4().hex[:12]}.probe"
        try:
            specs = worker_specs(ray.nodes(), cfg.device, options.workers_per_node)
            probe.write_text("workers check that they see this file: --out must be shared storage\n")
            run = CohortRun(ray, jobs, cfg, build, specs, options, probe.name)
            summaries = run.run()
        finally:
            probe.unlink(missing_ok=True)
            if started:
                ray.shutdown()
    if len(jobs) == 1:
        if summaries[0].status == "failed":
            raise MuseError(summaries[0].error)
        return 0
    return finish_cohort(cfg, summaries, run.fingerprint, {"ray": run.report(options.address)})


class CohortRun:
    """The driver's loop: start workers, hand out slides largest first, replace dead workers and retry their slides."""

    def __init__(self, ray, jobs, cfg: InferConfig, build, specs: list[WorkerSpec], options: RayOptions, probe: str):
        from .ray_worker import SlideWorker

        self.ray, self.jobs, self.cfg, self.build, self.specs, self.options = ray, jobs, cfg, build, specs, options
        self.worker_class = ray.remote(SlideWorker)
        self.probe = probe
        self.env = {k: v for k, v in os.environ.items() if k.startswith("MUSE_FAST_")}  # test seams reach workers
        order = sorted(range(len(jobs)), key=lambda i: -_size(jobs[i].path))  # stable: ties keep input order
        self.queue: deque[tuple[int, int]] = deque((i, 1) for i in order)  # (job index, attempt)
        self.results: dict[int, SlideSummary] = {}
        self.actors: list = []
        self.idle: list[tuple[object, WorkerSpec]] = []
        self.starting: dict = {}  # info() ref -> (actor, spec)
        self.running: dict = {}  # run() ref -> (actor, spec, job index, attempt)
        self.deaths: list[dict] = []
        self.start_failures = 0
        self.fingerprint: dict | None = None
        self.t0, self.first_ready = time.perf_counter(), None

    def start(self, spec: WorkerSpec) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options = {
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "max_restarts": 0,  # the driver replaces dead workers and retries their slide (bounded)
            "scheduling_strategy": NodeAffinitySchedulingStrategy(spec.node_id, soft=True),
        }
        if self.env:
            options["runtime_env"] = {"env_vars": self.env}
        actor = self.worker_class.options(**options).remote(
            self.build, self.cfg, os.getcwd(), self.probe, spec.threads, not self.cfg.quiet
        )
        self.actors.append(actor)
        self.starting[actor.info.remote()] = (actor, spec)

    def run(self) -> list[SlideSummary]:
        from tqdm import tqdm

        for spec in self.specs:
            self.start(spec)
        self.bar = tqdm(total=len(self.jobs), unit="slide", desc="slides", disable=self.cfg.quiet, file=sys.stderr)
        try:
            while len(self.results) < len(self.jobs):
                self.dispatch()
                ready, _ = self.ray.wait([*self.starting, *self.running], num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in self.starting:
                        self.on_started(ref)
                    else:
                        self.on_finished(ref)
        except BaseException:  # Ctrl-C, SIGTERM, or a worker that cannot run (its one-line error follows)
            self.cancel()
            raise
        finally:
            self.bar.close()
            self.kill_all()
        return [self.results[i] for i in range(len(self.jobs))]

    def dispatch(self) -> None:
        while self.idle and self.queue:
            (actor, spec), (index, attempt) = self.idle.pop(0), self.queue.popleft()
            self.running[actor.run.remote(self.jobs[index], attempt)] = (actor, spec, index, attempt)

    def on_started(self, ref) -> None:
        actor, spec = self.starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            self.start_failures += 1
            if self.start_failures > len(self.specs) * self.options.max_attempts:
                raise BackendUnavailable(f"Ray workers die as they start (last: {one_line(exc)})") from None
            self.start(spec)
            return
        if info["error"] is not None:
            raise info["error"]
        if self.fingerprint is None:
            self.fingerprint = info["fingerprint"]
        elif info["fingerprint"] != self.fingerprint:
            what = differences(self.fingerprint, info["fingerprint"])
            raise ConfigError(
                f"Ray workers on different nodes built different engines ({what}); pass --engine and --precision "
                f"explicitly so that every slide is computed alike"
            )
        self.first_ready = self.first_ready or time.perf_counter() - self.t0
        self.idle.append((actor, spec))
        self.show()

    def on_finished(self, ref) -> None:
        actor, spec, index, attempt = self.running.pop(ref)
        job = self.jobs[index]
        try:
            summary = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # the worker process or its node is gone
            death = {"slide": str(job.path), "attempt": attempt, "node": spec.node_id[:12], "error": one_line(exc)}
            self.deaths.append(death)
            self.ray.kill(actor, no_restart=True)
            self.start(spec)
            if attempt < self.options.max_attempts:
                self.queue.appendleft((index, attempt + 1))
                return
            error = f"its Ray worker died in each of {attempt} runs (last: {one_line(exc)}); it may need more memory"
            summary = SlideSummary(str(job.path), "failed", error=error)
        except self.ray.exceptions.RayTaskError as exc:  # not a slide error (run_job records those): Ray's own
            self.idle.append((actor, spec))
            summary = failed_summary(job, exc.cause if exc.cause is not None else exc)
        else:
            self.idle.append((actor, spec))
        self.results[index] = summary
        self.bar.write(summary.line(), file=sys.stderr)
        self.show(1)

    def show(self, done: int = 0) -> None:
        """The driver's progress bar: slides done, nuclei in them, workers up."""
        nuclei = sum(s.nuclei for s in self.results.values())
        self.bar.set_postfix(nuclei=f"{nuclei:,}", workers=len(self.idle) + len(self.running), refresh=not done)
        self.bar.update(done)

    def cancel(self) -> None:
        """Running slides stop at their next step (as after a local Ctrl-C); the caller then kills every worker."""
        if not self.running:
            return
        try:
            for ref in self.running:
                self.ray.cancel(ref)
            print(
                f"muse-fast: cancelling {len(self.running)} running slides (finished batches are kept)", file=sys.stderr
            )
            pings = [actor.ping.remote() for actor, *_ in self.running.values()]
            self.ray.wait(pings, num_returns=len(pings), timeout=self.options.grace_s)
        except Exception:  # noqa: BLE001 - the cluster may be gone; the caller kills what is left and reports why
            pass

    def kill_all(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or the cluster is
                pass

    def report(self, address: str) -> dict:
        """The ``ray`` section of ``run_summary.json``."""
        return {
            "address": address,
            "workers": len(self.specs),
            "threads_per_worker": sorted({s.threads for s in self.specs}),
            "gpus_per_worker": max(s.num_gpus for s in self.specs),
            "worker_deaths": self.deaths,
            "startup_seconds": round(self.first_ready or 0.0, 2),
            "seconds": round(time.perf_counter() - self.t0, 2),
        }
