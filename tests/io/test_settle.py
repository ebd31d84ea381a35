"""Tile reads wait for their futures in a way that survives an interrupt's ``shutdown(cancel_futures=True)``."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from muse_fast.io.resample import settle

HANG_LIMIT_S = 30  # a hang detector, not a speed limit: settle returns at once once the gate opens


def _cancelled_behind_a_running_read() -> tuple[list, threading.Event]:
    pool = ThreadPoolExecutor(1)
    gate, started = threading.Event(), threading.Event()
    futures = [pool.submit(lambda: (started.set(), gate.wait())), pool.submit(int)]  # the second is still queued
    started.wait()  # the first is running, so shutdown cannot cancel it
    pool.shutdown(wait=False, cancel_futures=True)  # as the pipeline does on an error or Ctrl-C
    assert futures[1].cancelled()
    return futures, gate


def test_settle_returns_when_a_queued_read_was_cancelled() -> None:
    futures, gate = _cancelled_behind_a_running_read()
    waiter = threading.Thread(target=settle, args=(futures,), daemon=True)
    waiter.start()
    gate.set()  # the running read finishes; the cancelled one never runs
    waiter.join(HANG_LIMIT_S)
    assert not waiter.is_alive(), "settle hung on a cancelled future (concurrent.futures.wait does)"
    assert futures[0].done() and futures[1].cancelled()


def test_settle_waits_for_the_running_read() -> None:
    futures, gate = _cancelled_behind_a_running_read()
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (settle(futures), finished.set()), daemon=True)
    waiter.start()
    assert not finished.wait(0.2)  # still waiting on the running read
    gate.set()
    waiter.join(HANG_LIMIT_S)
    assert finished.is_set()


def test_settle_does_not_raise_the_reads_errors() -> None:
    with ThreadPoolExecutor(1) as pool:
        futures = [pool.submit(lambda: 1 / 0), pool.submit(int)]
        settle(futures)  # the caller's f.result() raises them, after every read has finished
    assert all(f.done() for f in futures) and isinstance(futures[0].exception(), ZeroDivisionError)
