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
