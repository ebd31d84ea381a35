"""Fine-tuning options for other tissue: tissue-variety augmentation (pale, stretched and packed nuclei in training
views, labels kept on their nuclei) and a lower learning rate for a pretrained backbone."""

import json
from dataclasses import replace

import numpy as np
import pytest

from muse_fast.train.data.brca import load_split
from muse_fast.train.data.robust import random_scaled_crop
from muse_fast.train.data.stress import to_hed
from muse_fast.train.data.variety import VarietyConfig, pale_some_nuclei, stretched_crop, variety_view
from muse_fast.train.finetune import FinetuneConfig, finetune, make_batch


def _tissue(h=480, w=480, step=30):
    """Pink background with dark discs (radius 5 px) on a grid; labels cycle through three classes."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (230, 170, 200)
    xy = np.array([[x, y] for y in range(15, h - 10, step) for x in range(15, w - 10, step)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y in xy:
        image[np.hypot(xx - x, yy - y) <= 5] = (70, 40, 120)
    return image, xy, np.arange(len(xy)) % 3


def _dark_at(image, xy):
    """Mean brightness of the 3x3 pixels at each point."""
    out = []
    for x, y in np.round(xy).astype(int):
        out.append(image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].mean())
    return np.array(out)


def test_off_is_the_plain_scaled_crop_draw_for_draw():
    image, xy, labels = _tissue()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    crop, pts, labs = variety_view(image, xy, labels, 224, a, VarietyConfig(), 0.2)
    b.random()  # variety_view's stretch draw comes first
    ref, ref_pts, keep = random_scaled_crop(image, xy, 224, b, 0.2)
    assert np.array_equal(crop, ref) and np.allclose(pts, ref_pts[keep]) and np.array_equal(labs, labels[keep])


@pytest.mark.parametrize("seed", range(6))
def test_stretched_views_keep_every_label_on_its_nucleus(seed):
    image, xy, labels = _tissue()
    crop, pts, keep = stretched_crop(image, xy, 224, np.random.default_rng(seed))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert len(pts) == keep.sum() > 10
    assert (pts >= 0).all() and (pts <= 223).all()
    assert (_dark_at(crop, pts) < 140).all()  # every moved label sits on a disc (background is ~200)
    assert not (crop == 255).all(axis=-1).any()  # no glass-white corners from the shear inside the view


def test_pale_lowers_haematoxylin_at_some_nuclei_and_leaves_background():
    image, xy, _ = _tissue()
    rng = np.random.default_rng(1)
    out = pale_some_nuclei(image, xy, rng, mpp=0.5)
    h0, h1 = to_hed(image)[..., 0], to_hed(out)[..., 0]
    at = np.round(xy).astype(int)
    drop = h0[at[:, 1], at[:, 0]] - h1[at[:, 1], at[:, 0]]
    assert (drop > 0.05).sum() >= 0.25 * len(xy)  # a random 30-100% of the nuclei turn pale
    far = np.ones(h0.shape, bool)
    for x, y in at:
        far[max(y - 12, 0) : y + 13, max(x - 12, 0) : x + 13] = False
    assert np.abs(h1[far] - h0[far]).max() < 0.02  # background beyond ~6 um untouched
    assert np.array_equal(pale_some_nuclei(image, xy[:0], rng, 0.5), image)


def test_packed_views_add_labelled_nuclei_of_the_source_classes():
    image, xy, labels = _tissue(step=40)
    cfg = VarietyConfig(packed_p=1.0)
    crop, pts, labs = variety_view(image, xy, labels, 224, np.random.default_rng(0), cfg, 0.0)
    _, plain_pts, _ = variety_view(image, xy, labels, 224, np.random.default_rng(0), VarietyConfig(), 0.0)
    assert len(pts) > len(plain_pts) and len(labs) == len(pts)
    assert set(np.unique(labs)) <= {0, 1, 2}
    assert (_dark_at(crop, pts) < 140).all()


def test_real_views_and_a_training_batch(brca_dir):
    samples = load_split("train")[:3]
    rng = np.random.default_rng(0)
    for s in samples:
        crop, pts, labs = variety_view(s.image, s.xy, s.labels, 224, rng, VarietyConfig.uniform(1.0), 0.2)
        assert crop.shape == (224, 224, 3) and pts.dtype == np.float32 and len(pts) == len(labs) > 0
        assert (pts >= 0).all() and (pts <= 223).all()
    import torch

    cfg = FinetuneConfig(batch_size=4, variety=1.0)
    x, heat, offset, mask, xy, labels, ignore = make_batch(samples, cfg, rng, torch.Generator().manual_seed(0))
    assert ignore.shape == heat.shape and not ignore.any()  # no unlabelled points: nothing left out
    assert x.shape == (4, 3, 224, 224) and xy.shape[:2] == labels.shape
    valid = labels >= 0
    assert valid.sum() > 0 and set(labels[valid].tolist()) <= {0, 1, 2} and float(heat.max()) == 1.0


def test_variety_kinds_name_the_kinds_drawn():
    assert VarietyConfig.of_kinds(0.3, "pale,stretch,packed") == VarietyConfig.uniform(0.3)
    assert VarietyConfig.of_kinds(0.3, " stretch, packed ") == VarietyConfig(stretch_p=0.3, packed_p=0.3)
    image, xy, labels = _tissue()
    views = {}
    for name, cfg in [("kinds", VarietyConfig.of_kinds(1.0, "packed")), ("packed", VarietyConfig(packed_p=1.0))]:
        views[name] = variety_view(image, xy, labels, 224, np.random.default_rng(3), cfg, 0.0)
    pale = variety_view(image, xy, labels, 224, np.random.default_rng(3), VarietyConfig(pale_p=1.0), 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(views["kinds"], views["packed"]))
    assert len(views["kinds"][1]) > len(pale[1])  # packed adds labelled nuclei; pale does not


@pytest.mark.parametrize("kinds", ["pale,strech", "", " , "])
def test_a_misspelt_variety_kind_is_refused_before_training(tmp_path, kinds):
    from muse_fast.errors import ConfigError

    cfg = FinetuneConfig(out=str(tmp_path / "run"), steps=2, variety=0.3, variety_kinds=kinds)
    with pytest.raises(ConfigError, match="--variety-kinds") as err:
        finetune(cfg, [], [])
    assert len(str(err.value).splitlines()) == 1 and not (tmp_path / "run").exists()


def test_finetune_records_variety_in_its_provenance(brca_dir, tmp_path):
    train, val = load_split("train")[:2], load_split("val")[:1]
    cfg = FinetuneConfig(out=str(tmp_path / "run"), steps=2, batch_size=2, eval_every=2, warmup_steps=1, variety=0.5)
    finetune(cfg, train, val)
    from muse_fast.model.weights import load_weights

    _, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta.config["provenance"]["recipe"]["variety"] == 0.5
    assert meta.config["provenance"]["recipe"]["variety_kinds"] == "pale,stretch,packed"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["variety"] == 0.5


def test_backbone_lr_scale_groups_and_refusal(brca_dir, tmp_path):
    from muse_fast.errors import ConfigError
    from muse_fast.train.finetune import build_model, parameter_groups

    model = build_model(FinetuneConfig())
    names = {id(p): n for n, p in model.named_parameters()}
    plain = parameter_groups(model, FinetuneConfig())
    assert [g["lr_scale"] for g in plain] == [1.0, 1.0] and sum(len(g["params"]) for g in plain) == len(names)
    scaled = parameter_groups(model, FinetuneConfig(backbone_lr_scale=0.1))
    assert sum(len(g["params"]) for g in scaled) == len(names)
    for g in scaled:
        assert g["params"] and all(names[id(p)].startswith("backbone.") == (g["lr_scale"] == 0.1) for p in g["params"])
    with pytest.raises(ConfigError, match="backbone-lr-scale"):
        finetune(FinetuneConfig(out=str(tmp_path / "r"), backbone_lr_scale=0), [], [])
    train, val = load_split("train")[:2], load_split("val")[:1]
    cfg = FinetuneConfig(out=str(tmp_path / "run"), steps=2, batch_size=2, eval_every=2, warmup_steps=1)
    finetune(replace(cfg, backbone_lr_scale=0.1), train, val)
    from muse_fast.model.weights import load_weights

    assert load_weights(tmp_path / "run" / "weights.pt")[1].config["provenance"]["recipe"]["backbone_lr_scale"] == 0.1
