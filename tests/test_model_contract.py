"""One contract over every registered model: shapes, finite outputs, eval determinism, ONNX export of the default."""

import pytest
import torch

from muse_fast.errors import ConfigError
from muse_fast.model import MODELS, create_model

SIZE = {"muse_vit_t16": 224, "muse_vit_t16_px": 64, "muse_vit_t16_stem": 96}
SIZE |= {"muse_vit_s16": 64, "muse_vit_b16": 64, "muse_r50": 64, "muse_r18": 96}
OUT_DIM = {"muse_vit_t16": 192, "muse_vit_t16_px": 192, "muse_vit_t16_stem": 192}
OUT_DIM |= {"muse_vit_s16": 384, "muse_vit_b16": 768, "muse_r50": 1024, "muse_r18": 256}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name):
    torch.manual_seed(0)
    size = SIZE[name]
    model = create_model(name, num_classes=3, img_size=size).eval()
    x = torch.rand(2, 3, size, size) * 255
    with torch.no_grad():
        out1, out2 = model(x), model(x)
    assert out1.centre.shape == (2, 3, size // 4, size // 4)
    assert out1.fmap.shape == (2, OUT_DIM[name], size // 4, size // 4)
    assert torch.isfinite(out1.centre).all() and torch.isfinite(out1.fmap).all()
    assert torch.equal(out1.centre, out2.centre) and torch.equal(out1.fmap, out2.fmap)
    logits = model.classifier(out1.fmap[:, :, 0, :2].transpose(1, 2))
    assert logits.shape == (2, 2, 3)


def test_vit_accepts_other_input_sizes():
    model = create_model("muse_vit_t16", img_size=224).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 256) * 255)
    assert out.fmap.shape == (1, 192, 80, 64)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="muse_vit_t16"):
        create_model("vit_huge")


def test_pixel_centred_decoder_keeps_tokens_in_place():
    """A stride-16 map holding each token's centre x, resized to stride 4: cell i must hold its own centre 4i + 1.5."""
    from muse_fast.model.decoder import resize

    tokens = (16 * torch.arange(14.0) + 7.5).view(1, 1, 1, 14).expand(1, 1, 14, 14)
    centred = resize(tokens, (56, 56), align_corners=False)[0, 0, 0]
    cells = 4 * torch.arange(56.0) + 1.5
    inner = slice(2, 54)  # the outer half-token clamps to the edge tokens
    assert torch.allclose(centred[inner], cells[inner], atol=1e-4)
    official = resize(tokens, (56, 56), align_corners=True)[0, 0, 0]
    assert (official[1] - cells[1]).abs() > 5 and (official[-2] - cells[-2]).abs() > 5  # pulled toward the centre


def test_stem_starts_as_a_no_op_and_keeps_official_names():
    torch.manual_seed(0)
    plain, stem = create_model("muse_vit_t16_px", img_size=64).eval(), create_model("muse_vit_t16_stem", img_size=64)
    stem.eval().load_state_dict(plain.state_dict(), strict=False)
    extra = set(stem.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("backbone.stem.") for k in extra)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.allclose(stem(x).fmap, plain(x).fmap, atol=1e-6)


@pytest.mark.parametrize("name", ["muse_vit_t16", "muse_vit_t16_stem"])
def test_default_model_exports_to_onnx(tmp_path, name):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = create_model(name).eval()
    x = torch.rand(1, 3, 224, 224) * 255
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["images"],
        output_names=["centre", "fmap"],
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    centre, fmap = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert abs(centre - ref.centre.numpy()).max() < 1e-3
    assert abs(fmap - ref.fmap.numpy()).max() < 1e-3
