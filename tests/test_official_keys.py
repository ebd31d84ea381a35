"""Our backbones carry the official MUSE parameter names and shapes, and load official checkpoints strictly."""

import json

import pytest
import torch

from muse_fast.errors import WeightsError
from muse_fast.model import create_backbone, load_official_checkpoint
from muse_fast.model.checkpoint import official_pos_resample

MANIFESTS = {
    "muse_vit-s-16.json": "muse_vit_s16",
    "muse_vit-b-16.json": "muse_vit_b16",
    "muse_r50.json": "muse_r50",
    "lfov_muse_vit-s-16.json": "muse_vit_s16",
    "lfov_muse_vit-b-16.json": "muse_vit_b16",
    "lfov_muse_r50.json": "muse_r50",
}


def _manifest(keys_dir, name):
    return json.loads((keys_dir / name).read_text())


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_state_dict_matches_manifest(keys_dir, manifest):
    spec = _manifest(keys_dir, manifest)
    backbone = create_backbone(MANIFESTS[manifest], spec["img_size"])
    ours = {k: list(v.shape) for k, v in backbone.state_dict().items()}
    theirs = {k: shape for k, shape, _ in spec["keys"]}
    assert list(ours) == list(theirs)  # same names, same order
    assert ours == theirs
    assert sum(p.numel() for p in backbone.parameters()) == spec["param_count"]


def _official_checkpoint(spec, grid=None):
    """A synthetic official ``.pth`` dict: teacher with prefixed backbone keys, a head, and no num_batches_tracked."""
    g = torch.Generator().manual_seed(0)
    teacher = {}
    for name, shape, _dtype in spec["keys"]:
        if name.endswith("num_batches_tracked"):
            continue
        if name == "encoder.encoder.pos_embed" and grid is not None:
            shape = [1, 1 + grid * grid, shape[-1]]
        teacher["module.backbone." + name] = torch.randn(shape, generator=g)
    teacher["module.head.mlp.0.weight"] = torch.zeros(4, 4)
    return {"teacher": teacher, "student": {}, "epoch": 10}


@pytest.mark.parametrize("manifest,variant", [("muse_vit-s-16.json", "muse_vit_s16"), ("muse_r50.json", "muse_r50")])
def test_load_official_checkpoint(keys_dir, manifest, variant, tmp_path):
    spec = _manifest(keys_dir, manifest)
    ckpt = _official_checkpoint(spec)
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    backbone = load_official_checkpoint(path, variant, spec["img_size"])
    state = backbone.state_dict()
    for key, value in ckpt["teacher"].items():
        if key.startswith("module.backbone."):
            assert torch.equal(state[key[len("module.backbone.") :]], value), key


def test_pos_embed_is_resampled_to_the_model_grid(keys_dir):
    spec = _manifest(keys_dir, "muse_vit-s-16.json")
    ckpt = _official_checkpoint(spec)
    backbone = load_official_checkpoint(ckpt, "muse_vit_s16", img_size=512)
    assert backbone.state_dict()["encoder.encoder.pos_embed"].shape == (1, 1025, 384)
    exact = load_official_checkpoint(ckpt, "muse_vit_s16", img_size=224, exact_official_pos_embed=True)
    src = ckpt["teacher"]["module.backbone.encoder.encoder.pos_embed"]
    got = exact.state_dict()["encoder.encoder.pos_embed"]
    assert torch.equal(got, official_pos_resample(src, 224))
    assert not torch.equal(got, src)  # the official resample is not the identity even at 224
    assert torch.equal(got[:, 0], src[:, 0])


def test_mismatched_checkpoint_is_a_clear_error(keys_dir):
    spec = _manifest(keys_dir, "muse_vit-s-16.json")
    ckpt = _official_checkpoint(spec)
    with pytest.raises(WeightsError, match="muse_vit_b16"):
        load_official_checkpoint(ckpt, "muse_vit_b16")
    del ckpt["teacher"]["module.backbone.decoder.dim_map_layers.0.weight"]
    with pytest.raises(WeightsError, match="missing"):
        load_official_checkpoint(ckpt, "muse_vit_s16")
    with pytest.raises(WeightsError, match="teacher"):
        load_official_checkpoint({"student": {}}, "muse_vit_s16")


def test_stem_variant_loads_an_official_layout_backbone_and_keeps_its_stem():
    """``backbone.pth`` of a plain ViT-Ti (train.pretrain's layout) loads into ``muse_vit_t16_stem``."""
    plain = create_backbone("muse_vit_t16", 224)
    ckpt = {"teacher": {"module.backbone." + k: v for k, v in plain.state_dict().items()}}
    torch.manual_seed(0)
    loaded = load_official_checkpoint(ckpt, "muse_vit_t16_stem", 224)
    state = loaded.state_dict()
    assert {k for k in state if k not in plain.state_dict()} == {k for k in state if k.startswith("stem.")}
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key
