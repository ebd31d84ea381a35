"""Likely unlabelled nuclei: found far from every label, carried through a view, left out of the centre negatives."""

import numpy as np
import pytest
import torch
from PIL import Image

from muse_fast.errors import ConfigError
from muse_fast.train.data.brca import LabelledImage, load_split
from muse_fast.train.data.hema_nuclei import detect_haematoxylin_nuclei
from muse_fast.train.data.label_gaps import parse_sources, shipped_detector, unlabelled_nuclei
from muse_fast.train.finetune import FinetuneConfig, finetune, make_batch, training_loss
from muse_fast.train.losses.centre_focal import centre_focal_loss
from muse_fast.train.targets import centre_targets, ignore_mask


def test_ignore_mask_covers_the_cells_around_each_point_and_clips_at_the_border():
    mask = ignore_mask(np.array([[42.0, 42.0], [1.0, 222.0], [500.0, 10.0]]), 224)  # cells (10,10), (0,55), outside
    assert mask.shape == (56, 56)
    assert mask[8:13, 8:13].all() and mask.sum() == 25 + 3 * 3  # 5x5 around (10,10); 3x3 in the corner (0,55)
    assert mask[53:56, 0:3].all() and not mask[7, 10] and not mask[10, 13]
    assert not ignore_mask(np.zeros((0, 2)), 224).any()


def test_an_ignored_cell_adds_nothing_to_the_negatives_and_never_removes_a_positive():
    heat, _, _ = centre_targets(np.array([[100.0, 100.0]]), 224)
    heat = torch.from_numpy(heat)[None]
    logits = torch.full_like(heat, -4.0)
    logits[0, 40, 40] = 3.0  # a confident call where no label is
    ignore = torch.from_numpy(ignore_mask(np.array([[161.0, 161.0]]), 224))[None]  # cell (40, 40)
    base = centre_focal_loss(logits, heat)
    ignored = centre_focal_loss(logits, heat, ignore=ignore)
    quiet = logits.clone()
    quiet[0, 40, 40] = -4.0
    assert ignored < base  # the call no longer counts against the network ...
    assert torch.allclose(ignored, centre_focal_loss(quiet, heat, ignore=ignore))  # ... whatever it predicts there
    everywhere = torch.ones_like(ignore)  # the positive's own cell stays in the loss
    assert centre_focal_loss(logits, heat, ignore=everywhere) > 0
    assert torch.equal(centre_focal_loss(logits, heat, ignore=torch.zeros_like(ignore)), base)


def test_unknown_sources_are_refused_with_the_choices():
    assert parse_sources("") == () and parse_sources(" hema , shipped") == ("hema", "shipped")
    with pytest.raises(ConfigError, match="unknown source blob; choose from hema, shipped"):
        parse_sources("hema,blob")
    with pytest.raises(ConfigError, match="ignore-distance-um"):
        finetune(FinetuneConfig(ignore_unlabelled="hema", ignore_distance_um=0), [], [])


def test_unlabelled_points_lie_far_from_every_label_on_real_images(brca_dir):
    image = load_split("train")[0]
    hema = detect_haematoxylin_nuclei(image.image, 0.5)
    far = unlabelled_nuclei(image.image, image.xy, 0.5, ("hema",), 6.0)
    assert 0 < len(far) < len(hema)  # some hema nuclei carry no label, most do
    distance = np.sqrt(((far[:, None] - image.xy[None]) ** 2).sum(-1)).min(1)
    assert (distance > 12).all()
    near = np.sqrt(((hema[:, None] - image.xy[None]) ** 2).sum(-1)).min(1) <= 12
    assert len(far) == int((~near).sum())
    both = unlabelled_nuclei(image.image, image.xy, 0.5, ("hema", "shipped"), 6.0, shipped_detector(0.5))
    assert len(both) > len(far) and (both[: len(far)] == far).all()
    with pytest.raises(ValueError, match="needs its detector"):
        unlabelled_nuclei(image.image, image.xy, 0.5, ("shipped",))


def test_a_batch_carries_unlabelled_points_into_the_ignore_mask_only(brca_dir):
    s = load_split("train")[0]
    plain = LabelledImage(s.name, s.image, s.xy, s.labels)
    gaps = unlabelled_nuclei(s.image, s.xy, 0.5, ("hema",), 6.0)
    marked = LabelledImage(s.name, s.image, s.xy, s.labels, gaps)
    cfg = FinetuneConfig(batch_size=3)
    a = make_batch([plain], cfg, np.random.default_rng(3), torch.Generator().manual_seed(3))
    b = make_batch([marked], cfg, np.random.default_rng(3), torch.Generator().manual_seed(3))
    for ta, tb in zip(a[:6], b[:6]):  # the same views, targets, points and classes, draw for draw
        assert torch.equal(ta, tb)
    assert not a[6].any() and b[6].any()
    assert not (b[5] == -1).any()  # no unlabelled point reaches the classifier's targets
    from muse_fast.model import create_model

    model = create_model("muse_r18", 3, 224)
    loss, parts = training_loss(model, b, cfg)
    assert torch.isfinite(loss) and parts["cls"] >= 0


def test_finetune_with_ignored_unlabelled_nuclei_records_it(brca_dir, tmp_path, capsys):
    from muse_fast.model.weights import load_weights

    train = load_split("train")[:2]
    val = load_split("val")[:1]
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        eval_every=2,
        warmup_steps=1,
        ignore_unlabelled="hema",
        calibrate_thresholds="",
    )
    finetune(cfg, train, val)
    assert "likely nuclei over 6.0 um from every one of" in capsys.readouterr().err
    _, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta.config["ignore_unlabelled"] == "hema" and meta.config["ignore_distance_um"] == 6.0


def test_under_variety_unlabelled_points_and_their_copies_stay_out_of_every_target(brca_dir):
    s = load_split("train")[0]
    marked = LabelledImage(s.name, s.image, s.xy, s.labels, unlabelled_nuclei(s.image, s.xy, 0.5, ("hema",), 6.0))
    cfg = FinetuneConfig(batch_size=4, variety=1.0)  # every view paled, stretched and packed
    x, heat, offset, mask, xy, labels, ignore = make_batch([marked], cfg, np.random.default_rng(5), torch.Generator())
    assert set(labels.unique().tolist()) <= {-100, 0, 1, 2} and ignore.any()
    assert int(mask.sum()) <= int((labels >= 0).sum())  # one positive cell per labelled point at most (shared cells)
    assert int((heat >= 1).sum()) == int(mask.sum())


@pytest.mark.parametrize("option", ["ignore_unlabelled", "self_train_rois"])
def test_the_shipped_weights_as_detector_or_teacher_do_not_change_the_initial_weights(
    brca_dir, tmp_path, monkeypatch, option
):
    from muse_fast.train import finetune as ft

    built = {}
    real = ft.build_model

    def record(cfg):
        model = real(cfg)
        built[getattr(cfg, option)] = {k: v.clone() for k, v in model.state_dict().items()}
        raise KeyboardInterrupt  # stop before training: only the init is compared

    monkeypatch.setattr(ft, "build_model", record)
    train = load_split("train")[:1]
    value = "hema,shipped" if option == "ignore_unlabelled" else str(tmp_path / "rois")
    _store_of([train[0].image], tmp_path / "rois")
    for setting in ("", value):
        with pytest.raises(KeyboardInterrupt):
            finetune(FinetuneConfig(out=str(tmp_path / (setting[-3:] or "off")), **{option: setting}), train, train)
    assert all(torch.equal(built[""][k], built[value][k]) for k in built[""])


def _store_of(images, folder, fine=None):
    """A store of 224-px ROIs at 0.5 um/px; ``fine``: one more ROI of the same field at that finer mpp."""
    from muse_fast.train.data.rois import Roi, RoiStore, RoiWriter

    writer = RoiWriter(folder, 0.5, 224)
    for image in images:
        writer.add(Roi(np.ascontiguousarray(image[:224, :224]), np.zeros((0, 2), np.float32), 0.5), "test")
    if fine:
        side = round(224 * 0.5 / fine)
        big = np.asarray(Image.fromarray(images[0][:224, :224]).resize((side, side)))
        writer.add(Roi(big, np.zeros((0, 2), np.float32), fine), "fine")
    writer.close()
    return RoiStore(folder)


def test_self_labels_teach_the_teachers_confident_nuclei_and_ignore_its_uncertain_ones(brca_dir, tmp_path):
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.predict import predict_image
    from muse_fast.train.data.self_labels import NO_CLASS, SelfLabelConfig, at_mpp, self_labelled, teacher_engine

    images = [s.image for s in load_split("val")[:2]]
    store = _store_of(images, tmp_path / "rois", fine=0.227)  # and a 40x ROI, resampled to 0.5 um/px
    teacher = teacher_engine()
    cfg = SelfLabelConfig()
    labelled = self_labelled(store, cfg, teacher)
    assert len(labelled) == 3 and labelled[2].image.shape == (224, 224, 3) and len(labelled[2].xy) > 0
    engine, meta = teacher
    for sample, image in zip(labelled, images):
        nuclei = predict_image(engine, image[:224, :224], meta.tile_size, 32, DecodeConfig(threshold=cfg.low))
        sure = nuclei.score >= cfg.high
        assert len(sample.xy) == int(sure.sum()) > 0 and len(sample.unlabelled) == int((~sure).sum())
        assert set(sample.labels.tolist()) <= {0, 1, 2, NO_CLASS}
        confident = nuclei.class_prob[sure] >= cfg.class_confidence
        assert ((sample.labels >= 0) == confident).all()
    half = at_mpp(images[0], 0.25, 0.5)  # a 40x ROI comes to the teacher's 0.5 um/px
    assert half.shape == (round(images[0].shape[0] / 2), round(images[0].shape[1] / 2), 3)
    with pytest.raises(ConfigError, match="do not fit"):
        self_labelled(store, cfg, (engine, type(meta)(meta.model, meta.classes, 0.25, meta.tile_size, meta.config)))
    assert at_mpp(images[0], 0.5, 0.5) is images[0]


def test_a_batch_draws_self_labelled_views_at_the_share(brca_dir):
    from muse_fast.train.data.self_labels import NO_CLASS

    s = load_split("train")[0]
    labels = np.full(len(s.xy), NO_CLASS)  # every centre taught, no class
    extra = [LabelledImage("self#0", s.image, s.xy, labels, np.zeros((0, 2), np.float32))]
    cfg = FinetuneConfig(batch_size=4, self_train_share=1.0)
    x, heat, offset, mask, xy, lab, ignore = make_batch([s], cfg, np.random.default_rng(1), torch.Generator(), extra)
    assert int(mask.sum()) > 0 and (lab == NO_CLASS).all()  # centres taught, the classifier not
    mixed = LabelledImage("self#1", s.image, s.xy[::2], labels[::2], s.xy[1::2])  # taught, no class, and ignored
    cfg = FinetuneConfig(batch_size=4, self_train_share=1.0, variety=1.0)
    x, heat, offset, mask, xy, lab, ignore = make_batch([s], cfg, np.random.default_rng(2), torch.Generator(), [mixed])
    assert int(mask.sum()) > 0 and ignore.any() and (lab == NO_CLASS).all()  # no -1 reaches a target


def test_finetune_with_self_training_records_it(brca_dir, tmp_path, capsys):
    from muse_fast.model.weights import load_weights

    store = tmp_path / "rois"
    _store_of([s.image for s in load_split("val")[:1]], store)
    with pytest.raises(ConfigError, match="self-train-share"):
        finetune(FinetuneConfig(self_train_rois=str(store), self_train_share=0), [], [])
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        eval_every=2,
        warmup_steps=1,
        self_train_rois=str(store),
        self_train_share=1.0,
        calibrate_thresholds="",
    )
    finetune(cfg, load_split("train")[:2], load_split("val")[:1])
    assert "1 images" in capsys.readouterr().err
    _, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta.config["provenance"]["recipe"]["self_train_rois"] == str(store)
    assert "self-training on the ROI store" in meta.config["provenance"]["data"]
    empty = tmp_path / "empty"
    _store_of([], empty)
    with pytest.raises(ConfigError, match="holds no ROIs"):
        finetune(FinetuneConfig(out=str(tmp_path / "run2"), self_train_rois=str(empty)), [], [])
