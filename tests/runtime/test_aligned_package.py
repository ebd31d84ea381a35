"""The compiled package's weights on 64-byte boundaries (muse_fast/runtime/aligned_package.py): a load that left
them misaligned is given aligned copies, and the outputs stay those of inductor's own loader, bit for bit; the
network runs without holding the GIL, so the tile reader's thread runs beside it."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from compiled_tiny import BATCH, META, TILE, tiny_model

from muse_fast.runtime import compiled
from muse_fast.runtime.aligned_package import ALIGNMENT, AlignedRunner, data_ptr
from muse_fast.runtime.engines import EngineInputs

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # restores the suite's private cache afterwards
        mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        if compiled.compiler_missing_reason():
            pytest.skip("no C++ compiler: the compiled engine is not built here")
        engine = compiled.CompiledEngine(EngineInputs(tiny_model(), META, "tiny-seed-0", "cpu", BATCH, "bf16"))
    assert isinstance(engine.runner, AlignedRunner)  # the engine loads through it
    return engine.path


@pytest.mark.slow
def test_misaligned_weights_get_aligned_copies_and_the_same_outputs(package):
    done = subprocess.run(
        [sys.executable, str(HERE / "aligned_child.py"), str(package), str(BATCH), str(TILE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # the premise: a load leaves every weight misaligned (one block at 16, 32 or 48 modulo 64)
    assert found["misaligned_as_loaded"] == found["constants"] > 0, found
    assert found["misaligned_aligned"] == 0 and found["copies"] == found["constants"], found
    assert found["equal_as_loaded"] == found["equal_aligned"] == [True, True], found


@pytest.mark.slow
def test_an_aligned_load_copies_nothing(package):
    runner = AlignedRunner(package)
    weights = runner.constants()
    assert weights and all(data_ptr(t) % ALIGNMENT == 0 for t in weights.values())
    again = AlignedRunner(package, align=False)
    if not again.misaligned():  # this load's block happened to be aligned: aligning it again moves nothing
        assert again.align() == {}


def test_a_package_without_one_library_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "empty.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data/aotinductor/model/readme.txt", "no library")
    with pytest.raises(ValueError, match="expected one compiled library in .*empty.pt2, found 0"):
        AlignedRunner(path)


def ran_beside(runner, x: torch.Tensor, calls: int = 20) -> bool:
    """Whether another Python thread ran while ``runner(x)`` did, in any of ``calls`` calls.

    The counting thread yields the GIL at every step, and the switch interval is longer than all the calls, so the
    main thread keeps the GIL from reading the count before a call to reading it after, unless the call releases it.
    """
    counted, stop = [0], threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1
            time.sleep(0)  # releases the GIL

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        while counted[0] == 0:
            time.sleep(0)
        for _ in range(calls):
            before = counted[0]
            runner(x)
            if counted[0] != before:
                return True
        return False
    finally:
        stop.set()
        counter.join()
        sys.setswitchinterval(interval)


@pytest.mark.slow
def test_the_network_runs_without_holding_the_gil(package):
    import tempfile
    import zipfile

    x = torch.zeros((BATCH, TILE, TILE, 3), dtype=torch.uint8)
    with zipfile.ZipFile(package) as archive, tempfile.TemporaryDirectory() as tmp:
        library = archive.extract(next(n for n in archive.namelist() if n.endswith(".wrapper.so")), tmp)
        torch_runner = torch._C._aoti.AOTIModelContainerRunnerCpu(library, 1)
    torch_runner.run([x])
    assert not ran_beside(lambda x: torch_runner.run([x]), x)  # the premise: torch's runner holds the GIL in a run
    runner = AlignedRunner(package)
    runner(x)
    assert ran_beside(runner, x)


@pytest.mark.slow
def test_a_failing_call_is_one_line_naming_the_function(package):
    import ctypes

    runner = AlignedRunner(package)
    past = 10**6  # no network has that many weights
    with pytest.raises(RuntimeError, match=r"^AOTInductorModelContainerGetConstantName failed \(code \d+: .*1000000"):
        runner._check("AOTInductorModelContainerGetConstantName", runner.handle, past, ctypes.byref(ctypes.c_char_p()))
