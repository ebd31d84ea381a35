"""``muse-fast --version`` and ``muse-fast models``: what a new user asks first."""

import importlib.metadata
import json

import pytest

from muse_fast.cli import main
from muse_fast.model.registry import MODELS
from muse_fast.model.weights import DEFAULT_WEIGHTS, load_weights


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"muse-fast {importlib.metadata.version('muse-fast')}"


def test_models_says_which_architectures_have_shipped_weights(capsys):
    assert main(["models"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == list(MODELS)
    _, meta = load_weights()  # the shipped default file names its architecture
    with_weights = {name for name, entry in listed.items() if entry["shipped_weights"]}
    assert with_weights == {meta.model}
    assert listed[meta.model]["shipped_weights"] == [DEFAULT_WEIGHTS.name] and listed[meta.model]["default"]
    assert not any(entry["default"] for name, entry in listed.items() if name != meta.model)
    assert all(entry["description"] for entry in listed.values())


@pytest.mark.parametrize("damage", ["truncated", "lfs pointer"])
def test_a_damaged_shipped_weights_file_is_one_line(tmp_path, monkeypatch, capsys, damage):
    """A truncated file or a git-lfs pointer in the package's weights folder made ``models`` a traceback."""
    from muse_fast.model import catalog

    folder = tmp_path / "weights"
    folder.mkdir()
    data = DEFAULT_WEIGHTS.read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else b"version https://git-lfs.github.com/spec/v1\n"
    (folder / DEFAULT_WEIGHTS.name).write_bytes(bad)
    monkeypatch.setattr(catalog, "SHIPPED_WEIGHTS_DIR", folder)
    monkeypatch.setattr(catalog.shipped_weights, "__defaults__", (folder,))
    assert main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be read" in err and "reinstall muse-fast" in err, err
