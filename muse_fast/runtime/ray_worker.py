"""The worker side of a cohort on Ray: an actor that builds its engine once and runs slide after slide with it.

A worker runs a slide exactly as a local run does (:func:`muse_fast.runtime.cohort.run_job`: the slide's lock, resume
from its shards, staged outputs, the manifest last), with the driver's settings and working folder, and returns the
slide's summary; it never raises for a slide. Ray is imported only inside the worker process (the driver wraps this
class with ``ray.remote``).

- A cancelled slide (Ctrl-C on the driver: ``ray.cancel``) stops at its next step (:mod:`muse_fast.runtime.seams`)
  as after a local Ctrl-C: finished batches are kept, temporary files removed, the lock released.
- A retried slide first waits up to :data:`LOCK_WAIT_S` for the lock of the worker that died with it (released at
  once on a local disk; on NFS when the server drops a lost node's locks).
- Test seam (style rule 20): with ``MUSE_FAST_RAY_EXIT_AT=<stem>:<step>`` the worker process exits (``os._exit``)
  at that step of that slide: once if ``MUSE_FAST_RAY_EXIT_ONCE`` names a marker file it may create, else every time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..config import InferConfig
from ..errors import MuseError, OutputError, one_line
from . import seams
from .cohort import SlideJob, engine_fingerprint, run_job
from .lock import is_locked
from .pipeline import output_stem
from .summary import SlideSummary

EXIT_AT, EXIT_ONCE = "MUSE_FAST_RAY_EXIT_AT", "MUSE_FAST_RAY_EXIT_ONCE"
LOCK_WAIT_S = 120.0  # a retried slide waits this long for the dead worker's lock (NFSv4 leases are 90 s by default)


def check_shared(out_dir: Path, probe: str, node: str) -> None:
    """The driver wrote ``out_dir/probe``: a worker that cannot see it does not share the output folder."""
    if not (Path(out_dir) / probe).is_file():
        raise OutputError(
            f"--out {out_dir} is not shared with Ray node {node}: a worker there does not see the file {probe} that "
            f"the driver wrote into it; put --out on storage that every node mounts at the same path (NFS or similar)"
        )


def wait_for_lock(out_dir: Path, stem: str, timeout: float = LOCK_WAIT_S) -> None:
    """Return once nobody holds the slide's lock, or after ``timeout`` seconds (the run then reports it busy)."""
    deadline = time.monotonic() + timeout
    while is_locked(out_dir, stem) and time.monotonic() < deadline:
        time.sleep(1.0)


def _exit_if_asked(stem: str, step: str) -> None:
    if os.environ.get(EXIT_AT) != f"{stem}:{step}":
        return
    once = os.environ.get(EXIT_ONCE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(1)


class SlideWorker:
    """One Ray actor: ``info()`` once (the engine's fingerprint, or the error that stopped it), then ``run(job)``."""

    def __init__(self, build: Callable, cfg: InferConfig, cwd: str, probe: str, threads: int, notes: bool) -> None:
        import ray

        logging.basicConfig(level=logging.WARNING, format="muse-fast: %(message)s")
        logging.getLogger("muse_fast.runtime").setLevel(logging.INFO if notes else logging.WARNING)
        self.node = ray.get_runtime_context().get_node_id()[:12]
        self.cfg = replace(cfg, quiet=True)  # the driver shows progress
        self.error: MuseError | None = None
        self.fingerprint: dict = {}
        self.stem = ""
        try:
            if os.path.isdir(cwd):
                os.chdir(cwd)  # relative slide paths and --out mean what they mean to the driver
            check_shared(self.cfg.out_dir, probe, self.node)
            if threads:
                import torch

                torch.set_num_threads(threads)  # CPU results depend on it: see docs (byte-identical outputs)
            self.engine, self.meta, sha = build()
            self.fingerprint = engine_fingerprint(self.engine, sha)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the run with it
            self.error = exc if isinstance(exc, MuseError) else MuseError(one_line(exc))
        previous = seams.HOOK

        def at_step(step: str) -> None:
            previous(step)
            if self.stem:
                if ray.get_runtime_context().is_canceled():
                    raise KeyboardInterrupt
                _exit_if_asked(self.stem, step)

        seams.HOOK = at_step

    def info(self) -> dict:
        return {"error": self.error, "fingerprint": self.fingerprint, "node": self.node, "pid": os.getpid()}

    def ping(self) -> bool:
        return True

    def run(self, job: SlideJob, attempt: int) -> SlideSummary:
        from ..io.native_output import capture_native_output

        stem = output_stem(job.path)
        if attempt > 1:
            wait_for_lock(self.cfg.out_dir, stem)
        self.stem = stem
        try:
            with capture_native_output():  # as the CLI does: native libraries' chatter stays off the terminal
                return run_job(job, self.engine, self.meta, self.cfg, self.fingerprint)
        finally:
            self.stem = ""
