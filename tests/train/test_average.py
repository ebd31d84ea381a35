"""train.average: the uniform mean of weights files of one model, with one-line refusals."""

import pytest
import torch

from muse_fast.errors import ConfigError
from muse_fast.model.registry import create_model
from muse_fast.model.weights import WeightsMeta, load_weights, save_weights
from muse_fast.train import average as cli
from muse_fast.train.average import average_weights

META = WeightsMeta("muse_r18", ("lymphocyte", "tumor", "stromal"), 0.5, 224)


def _weights(path, seed: int, meta: WeightsMeta = META):
    torch.manual_seed(seed)
    model = create_model(meta.model, num_classes=len(meta.classes))
    for name, buf in model.named_buffers():  # BatchNorm statistics differ between the files too
        if buf.is_floating_point():
            buf.uniform_(0.5, 1.5)
        elif name.endswith("num_batches_tracked"):
            buf.fill_(seed)
    save_weights(path, model, meta)
    return model.state_dict()


def test_average_is_the_mean_of_every_float_tensor_and_keeps_the_first_counters(tmp_path):
    states = [_weights(tmp_path / f"{i}.pt", seed) for i, seed in enumerate((1, 2, 3))]
    model, meta = average_weights([tmp_path / f"{i}.pt" for i in range(3)])
    assert (meta.model, meta.classes, meta.mpp, meta.tile_size) == (META.model, META.classes, 0.5, 224)
    assert [s["path"] for s in meta.config["averaged"]] == [str(tmp_path / f"{i}.pt") for i in range(3)]
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
        else:
            assert torch.equal(value, states[0][key]), key
    assert any(not torch.equal(model.state_dict()[k], states[0][k]) for k in states[0])  # it did change


def test_average_cli_writes_a_loadable_file_and_refuses_bad_inputs_in_one_line(tmp_path, capsys):
    _weights(tmp_path / "a.pt", 1)
    _weights(tmp_path / "b.pt", 2)
    _weights(tmp_path / "other.pt", 3, WeightsMeta("muse_r18", ("a", "b"), 0.5, 224))
    assert cli.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "soup.pt")]) == 0
    load_weights(tmp_path / "soup.pt")
    capsys.readouterr()
    refusals = [
        ([str(tmp_path / "a.pt")], "at least two"),
        ([str(tmp_path / "a.pt"), str(tmp_path / "other.pt")], "one model only"),
        ([str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")], "not found"),
    ]
    for inputs, message in refusals:
        assert cli.main([*inputs, "--out", str(tmp_path / "bad.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("train.average: error: ") and message in err and len(err.splitlines()) == 1, err
    assert cli.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "a.pt")]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()


def test_average_of_identical_files_is_that_file(tmp_path):
    state = _weights(tmp_path / "a.pt", 1)
    model, _ = average_weights([tmp_path / "a.pt", tmp_path / "a.pt"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_average_needs_two_files():
    with pytest.raises(ConfigError, match="at least two"):
        average_weights([])
