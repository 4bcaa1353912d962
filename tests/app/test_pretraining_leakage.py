"""What a public foundation model saw, carried through: one warning when a run tests it on records of a dataset
it was trained on (pre-flight, validate, results.json), ``derived_from`` in a run's encoder.json, and its
licence in the card of an export or a push."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecgforge.app import preflight
from ecgforge.app.export import export
from ecgforge.app.leakage import derived_from, pretraining_warnings, saved_contract
from ecgforge.app.push import push
from ecgforge.data.cache import Cache, seal_metadata
from ecgforge.encoder_files import save_encoder
from ecgforge.encoders import ENCODERS
from ecgforge.recipe import Recipe
from ecgforge.registry import build
from tests.app.test_hub import front_matter, hub  # noqa: F401 (fixture: a stand-in Hub)
from tests.evaluation.test_protocols import SPLITS, cache  # noqa: F401 (fixture: 16 patients x 3 records)


def _recipe(cache_path: Path, init: str | None, **model: object) -> Recipe:
    return Recipe.model_validate({
        "name": "fm", "data": {"cache": str(cache_path), "splits": SPLITS, "window_s": 2.5},
        "model": {"encoder": {"kind": "resnet1d", "width": 8}, **({"init": init} if init else {}), **model},
        "eval": [{"kind": "linear_probe", "task": "label", "epochs": 1, "bootstrap": 0},
                 {"kind": "knn", "task": "label", "bootstrap": 0}]})


@pytest.fixture(scope="module")
def sourced(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Cache:  # noqa: F811
    """The protocol cache with its per-record ``source`` column as a PTB-XL + CinC mix would say: patients 12-13
    (half the test split) from PTB-XL, 14 from Georgia, 15 unknown to the table."""
    path = tmp_path_factory.mktemp("sourced") / "c.h5"
    shutil.copy(cache.path, path)
    with h5py.File(path, "r+") as h5:
        ids = [v.decode() for v in h5["record_id"][()]]
        src = ["ptbxl" if i.startswith(("p12", "p13")) else "georgia" if i.startswith("p14") else "wfdb_folder"
               for i in ids]
        h5["source"][...] = np.array([s.encode() for s in src], dtype=h5py.string_dtype())
        seal_metadata(h5)
    return Cache(path)


def test_no_init_or_an_ecgforge_encoder_gives_no_warning(sourced: Cache, tmp_path: Path) -> None:
    assert pretraining_warnings(_recipe(sourced.path, None), sourced) == []
    assert pretraining_warnings(_recipe(sourced.path, str(tmp_path / "runs" / "x")), sourced) == []


def test_ecg_fm_on_ptbxl_and_georgia_records_is_one_line(sourced: Cache) -> None:
    [line] = pretraining_warnings(_recipe(sourced.path, "ecg_fm:/ckpts/model.pt"), sourced)
    assert line.startswith("leakage: model.init 'ecg_fm:/ckpts/model.pt' starts from ECG-FM, trained on "
                           "MIMIC-IV-ECG, PhysioNet/CinC Challenge 2021; the test splits of eval[0-1] hold 6 PTB-XL, "
                           "3 Georgia 12-lead ECG Challenge Database records it may have seen")
    assert line.endswith("(sources: ecgforge/data/pretraining_sets.toml, models.ecg_fm)")


def test_a_model_that_did_not_see_the_test_datasets_gives_no_warning(sourced: Cache) -> None:
    assert pretraining_warnings(_recipe(sourced.path, "merl:/ckpts/res18_best_encoder.pth"), sourced) == []
    # ST-MEM saw Chapman, Ningbo and CODE-15 %: none of these records.
    assert pretraining_warnings(_recipe(sourced.path, "/ckpts/st_mem_vit_base_full.pth"), sourced) == []


def test_a_run_derived_from_a_foundation_model_still_warns(sourced: Cache, tmp_path: Path) -> None:
    """An encoder fine-tuned or pretrained further from HuBERT-ECG keeps ``derived_from`` in its encoder.json."""
    run = tmp_path / "run"
    cfg = ENCODERS.config("resnet1d")(width=8)
    save_encoder(build(ENCODERS, cfg), cfg, run, {"fs_hz": 100.0, "window_s": 2.5, "leads": ["I"] * 12,
                                                   "derived_from": derived_from("hubert_ecg:/w/hubert_ecg_base.pt")})
    assert saved_contract(str(run))["derived_from"]["model"] == "hubert_ecg"
    assert saved_contract(str(run / "encoder.json")) == saved_contract(str(run))
    [line] = pretraining_warnings(_recipe(sourced.path, str(run)), sourced)
    assert "starts from HuBERT-ECG" in line and "6 PTB-XL, 3 Georgia" in line


def test_preflight_reports_the_warning_and_validate_prints_it(sourced: Cache) -> None:
    checked = preflight.check(_recipe(sourced.path, "/ckpts/mimic_iv_ecg_physionet_pretrained.pt"), "r.toml", sourced)
    assert len(checked.warnings) == 1 and checked.warnings[0].startswith("leakage: ") and checked.notes == []
    notes = preflight.validate(_recipe(sourced.path, "ecg_fm:/ckpts/x.pt"), "r.toml").notes
    assert any(n.startswith("warning: leakage: model.init 'ecg_fm:/ckpts/x.pt' starts from ECG-FM") for n in notes)


def _derived_run(root: Path, init: str) -> Path:
    run = root / "run"
    cfg = ENCODERS.config("resnet1d")(width=8)
    save_encoder(build(ENCODERS, cfg), cfg, run, {"fs_hz": 100.0, "window_s": 2.5, "leads": ["I"] * 12,
                                                   "units": "mV", "derived_from": derived_from(init)})
    return run


def test_export_of_a_non_commercial_derivative_says_so(tmp_path: Path) -> None:
    out = export(_derived_run(tmp_path, "st_mem:/w/st_mem_vit_base_full.pth"), tmp_path / "export")
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "cc-by-nc-4.0" and meta["library_name"] == "ecgforge" and "st_mem" in meta["tags"]
    assert "Derived from ST-MEM, whose weights are released under CC BY-NC 4.0 (non-commercial use only)" in card
    assert "**Non-commercial:**" in card and "Chapman-Shaoxing, Ningbo First Hospital, CODE-15%" in card


def test_export_of_an_ecgforge_encoder_states_no_licence(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = ENCODERS.config("resnet1d")(width=8)
    save_encoder(build(ENCODERS, cfg), cfg, run, {"fs_hz": 100.0, "window_s": 2.5, "leads": ["I"] * 12})
    card = (export(run, tmp_path / "export") / "README.md").read_text()
    assert "license" not in front_matter(card) and "## Licence" not in card


def test_push_carries_the_licence_to_the_hub(tmp_path: Path, hub) -> None:  # noqa: ANN001, F811
    info = push(_derived_run(tmp_path, "hf://Edoardo-BS/hubert-ecg-small"), "ecg-lab/from-hubert")
    assert info["exported"]
    card = hub.files("ecg-lab/from-hubert")["README.md"].decode()
    assert front_matter(card)["license"] == "cc-by-nc-4.0" and "Derived from HuBERT-ECG" in card
    assert json.loads(hub.files("ecg-lab/from-hubert")["encoder.json"])["derived_from"]["model"] == "hubert_ecg"
