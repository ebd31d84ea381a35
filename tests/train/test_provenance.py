"""Weights provenance: what train.finetune records and what ``muse-fast models`` shows for each shipped file."""

import json
import re

import torch

from muse_fast.cli import main
from muse_fast.model.provenance import NOT_RECORDED, PROVENANCE_FIELDS, current_commit, provenance_from_config
from muse_fast.model.weights import DEFAULT_WEIGHTS
from muse_fast.train.finetune import FinetuneConfig
from muse_fast.train.provenance import finetune_provenance, init_provenance


def test_a_random_init_run_records_every_field():
    record = finetune_provenance(FinetuneConfig(seed=7, steps=12))
    assert set(record) == set(PROVENANCE_FIELDS)
    assert record["init"] == "random (seed 7)" and record["architecture"] == "muse_r18"
    assert record["recipe"]["command"] == "train.finetune" and record["recipe"]["steps"] == 12
    assert "BRCA-M2C train" in record["data"]
    assert record["commit"] == current_commit()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["commit"]) or record["commit"] == NOT_RECORDED


def test_a_pretrained_init_names_its_run_and_how_nuclei_were_found(tmp_path):
    store = tmp_path / "rois"
    store.mkdir()
    (store / "index.json").write_text(json.dumps({"mpp": 0.5, "size": 448, "count": 12, "detector": "hema"}))
    run = tmp_path / "pt"
    run.mkdir()
    torch.save({"w": torch.zeros(2)}, run / "backbone.pth")
    (run / "config.json").write_text(
        json.dumps({"model": "muse_r18", "steps": 40, "lambda_nu": 1.0, "rois": str(store)})
    )
    record = init_provenance(str(run / "backbone.pth"), 0)
    assert len(record["sha256"]) == 16
    assert record["pretraining"]["positions"] == "hema" and record["pretraining"]["steps"] == 40
    assert record["pretraining"]["rois"] == {"path": str(store), "count": 12}


def test_older_files_say_what_is_not_recorded():
    record = provenance_from_config("muse_r18", {"init": "", "steps": 5, "lr": 0.1})
    assert record["init"] == "random" and record["recipe"] == {"steps": 5, "lr": 0.1}
    assert record["data"] == NOT_RECORDED and record["commit"] == NOT_RECORDED
    assert provenance_from_config("m", {})["init"] == NOT_RECORDED


def test_models_shows_the_shipped_files_provenance(capsys):
    assert main(["models"]) == 0
    listed = json.loads(capsys.readouterr().out)
    shown = [entry["provenance"][DEFAULT_WEIGHTS.name] for entry in listed.values() if entry["default"]]
    assert len(shown) == 1 and set(shown[0]) >= set(PROVENANCE_FIELDS)
    assert shown[0]["architecture"] in listed
