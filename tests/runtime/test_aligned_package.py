"""The compiled package's weights on 64-byte boundaries (muse_fast/runtime/aligned_package.py): a load that left
them misaligned is given aligned copies, and the outputs stay those of inductor's own loader, bit for bit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
