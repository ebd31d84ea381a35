"""train.average: the uniform mean of weights files of one model, with one-line refusals."""

from dataclasses import astuple

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
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _weights(a, 1)
    _weights(b, 2)
    _weights(tmp_path / "classes.pt", 3, WeightsMeta("muse_r18", ("a", "b"), 0.5, 224))
    _weights(tmp_path / "mpp.pt", 3, WeightsMeta("muse_r18", META.classes, 0.25, 224))
    _weights(tmp_path / "tile.pt", 3, WeightsMeta("muse_r18", META.classes, 0.5, 256))
    _weights(tmp_path / "model.pt", 3, WeightsMeta("muse_vit_t16", META.classes, 0.5, 224))
    _weights(
        tmp_path / "calibrated.pt", 3, WeightsMeta(*astuple(META)[:4], {"calibration": {"tau": 0, "threshold": 0.4}})
    )
    assert cli.main([str(a), str(b), "--out", str(tmp_path / "soup.pt")]) == 0
    load_weights(tmp_path / "soup.pt")
    stored = torch.load(tmp_path / "soup.pt", weights_only=True)["state_dict"]
    assert any(v.dtype == torch.float16 for v in stored.values())  # --half is the default
    assert cli.main([str(a), str(b), "--no-half", "--out", str(tmp_path / "soup32.pt")]) == 0
    assert all(
        v.dtype != torch.float16 for v in torch.load(tmp_path / "soup32.pt", weights_only=True)["state_dict"].values()
    )
    capsys.readouterr()
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "link.pt").symlink_to(a)
    bad = ["--out", str(tmp_path / "bad.pt")]
    refusals = [
        ([a, *bad], "at least two"),
        ([a, tmp_path / "classes.pt", *bad], "one model only"),
        ([a, tmp_path / "mpp.pt", *bad], "one model only"),
        ([a, tmp_path / "tile.pt", *bad], "one model only"),
        ([a, tmp_path / "model.pt", *bad], "one model only"),
        ([a, tmp_path / "calibrated.pt", *bad], "calibrated alike"),
        ([a, tmp_path / "missing.pt", *bad], "not found"),
        ([a, tmp_path / "link.pt", *bad], "given twice"),
        ([a, b, "--out", tmp_path / "link.pt"], "one of the inputs"),
        ([a, b, "--out", tmp_path / "folder.pt"], "is a folder"),
        ([a, b, "--out", a / "x.pt"], "lies under the file"),
    ]
    for argv, message in refusals:
        assert cli.main([str(x) for x in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("train.average: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad.pt").exists() and load_weights(a)  # the input survives


def test_damaged_or_diverged_weights_are_refused_by_name(tmp_path):
    from muse_fast.errors import WeightsError

    good = tmp_path / "a.pt"
    _weights(good, 1)
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(x ^ 0xFF for x in data[middle : middle + 64])  # a few flipped bytes in a tensor
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged"):
        load_weights(tmp_path / "flipped.pt")
    torch.manual_seed(0)
    model = create_model("muse_r18", num_classes=3)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    save_weights(tmp_path / "nan.pt", model, META)
    with pytest.raises(WeightsError, match="NaN or inf"):
        load_weights(tmp_path / "nan.pt")
    payload = torch.load(good, weights_only=True)
    del payload["classes"]
    torch.save(payload, tmp_path / "no_classes.pt")
    with pytest.raises(WeightsError, match="lacks classes"):
        load_weights(tmp_path / "no_classes.pt")


def test_average_keeps_the_common_calibration(tmp_path):
    meta = WeightsMeta(*astuple(META)[:4], {"calibration": {"tau": 0.0, "threshold": 0.4, "sweep": []}})
    _weights(tmp_path / "a.pt", 1, meta)
    _weights(tmp_path / "b.pt", 2, meta)
    _, out_meta = average_weights([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert out_meta.config["calibration"] == {"tau": 0.0, "threshold": 0.4}


def test_average_needs_two_files():
    with pytest.raises(ConfigError, match="at least two"):
        average_weights([])
