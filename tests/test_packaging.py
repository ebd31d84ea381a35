"""kernels/, export/ and train/ install under the muse_fast namespace; a user's own train.py cannot shadow them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAPPED = {
    "muse_fast": "muse_fast",
    "muse_fast.kernels": "kernels",
    "muse_fast.export": "export",
    "muse_fast.train": "train",
}


def test_package_list_covers_every_folder_with_an_init():
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == MAPPED
    on_disk = set()
    for package, folder in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join([package, *rel.parts]))
    assert set(setuptools_cfg["packages"]) == on_disk


def test_stray_user_modules_change_nothing(tmp_path):
    for name in ("train", "export", "kernels"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user module was imported')\n")
    code = (
        "import muse_fast.cli, muse_fast.train.evaluate, muse_fast.export.onnx, muse_fast.kernels.peaks\n"
        "from muse_fast.runtime.engines import create_engine\n"
        "import sys; assert 'train' not in sys.modules and 'export' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_training_modules_still_run_from_the_repo_root():
    done = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--weights" in done.stdout
