"""The table of what the public ECG foundation-model checkpoints were trained on (data/pretraining_sets.toml):
it loads and is consistent, every model cites its sources, and a checkpoint is recognised by its init KIND,
its saved encoder.json, its encoder kind, or its released file / Hub name."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from ecgforge.data.pretraining_sets import PretrainingTable, init_kind, pretraining_table
from ecgforge.data.sources.cinc import _PREFIXES, database_of

MODELS = {"ecgfounder", "ecg_fm", "hubert_ecg", "ecg_jepa", "merl", "st_mem"}


def raw() -> dict:
    return tomllib.loads(resources.files("ecgforge.data").joinpath("pretraining_sets.toml").read_text())


def test_every_model_of_the_issue_is_there_with_sources_and_a_licence() -> None:
    table = pretraining_table()
    assert set(table.models) == MODELS
    for m in table.models.values():
        assert m.sources and all(len(s) > 10 for s in m.sources) and m.licence and m.licence_id
    non_commercial = {k for k, m in table.models.items() if not m.commercial}
    assert non_commercial == {"hubert_ecg", "st_mem"}
    assert {table.models[k].licence_id for k in non_commercial} == {"cc-by-nc-4.0"}


@pytest.mark.parametrize(("model", "dataset", "seen"), [
    ("ecg_fm", "ptbxl", True),  # PhysioNet 2021 includes PTB-XL (ECG-FM issue 5)
    ("ecg_fm", "georgia", True),
    ("ecg_fm", "mimic_iv_ecg", True),
    ("ecg_fm", "code15", False),
    ("merl", "mimic_iv_ecg", True),
    ("merl", "ptbxl", False),
    ("ecgfounder", "heedb", True),
    ("ecgfounder", "ptbxl", False),  # its README tests the released head on PTB-XL; it did not train on it
    ("ecg_jepa", "chapman_shaoxing", True),  # the Shaoxing database = Chapman-Shaoxing + Ningbo
    ("ecg_jepa", "ningbo", True),
    ("ecg_jepa", "ptbxl", False),
    ("ecg_jepa", "code15", True),
    ("st_mem", "code15", True),
    ("st_mem", "georgia", False),
    ("hubert_ecg", "code15", True),  # CODE contains CODE-15 %
    ("hubert_ecg", "ptbxl", True),
    ("hubert_ecg", "incart", False),
])
def test_what_each_model_saw(model: str, dataset: str, seen: bool) -> None:
    table = pretraining_table()
    assert (dataset in table.seen_by(table.models[model])) is seen


def test_every_record_source_of_the_shipped_sources_has_its_dataset() -> None:
    table = pretraining_table()
    cinc = {s for _, s in _PREFIXES if s} | {database_of("JS00001"), database_of("JS20000"), database_of("X1")}
    for source in cinc | {"ptbxl", "code15", "mimic_iv_ecg"}:
        assert table.dataset_of_record(source) is not None, source
    assert table.dataset_of_record("ptb-xl") == table.dataset_of_record("ptbxl") == "ptbxl"
    assert table.dataset_of_record("wfdb_folder") is None and table.dataset_of_record("synthetic") is None


@pytest.mark.parametrize(("init", "kind", "path"), [
    ("ecg_fm:/ckpt/x.pt", "ecg_fm", "/ckpt/x.pt"),
    ("hf://org/name", None, "hf://org/name"),
    ("C:/weights/x.pt", None, "C:/weights/x.pt"),
    ("runs/a:b", None, "runs/a:b"),
    ("runs/plain", None, "runs/plain"),
])
def test_init_kind(init: str, kind: str | None, path: str) -> None:
    assert init_kind(init) == (kind, path)


@pytest.mark.parametrize(("args", "want"), [
    ({"init": "ecgfounder:/w/anything.pth"}, "ecgfounder"),
    ({"init": "ST-MEM:/w/encoder.pth"}, "st_mem"),  # case and dashes do not matter
    ({"init": "/w/12_lead_ECGFounder.pth"}, "ecgfounder"),
    ({"init": "/w/mimic_iv_ecg_physionet_pretrained.pt"}, "ecg_fm"),
    ({"init": "hf://Edoardo-BS/hubert-ecg-base@v1"}, "hubert_ecg"),
    ({"init": "runs/x", "encoder_kind": "merl_resnet"}, "merl"),
    ({"init": "runs/x", "meta": {"derived_from": {"model": "st_mem"}, "config": {"kind": "resnet1d"}}}, "st_mem"),
    ({"init": "runs/x", "meta": {"input_contract": {"model": "ECG-JEPA ViT-B"}}}, "ecg_jepa"),
    ({"init": "runs/x", "meta": {"input_contract": {"model": "ECGFounder (12-lead)"}}}, "ecgfounder"),
    ({"init": "runs/x", "meta": {"source": "fairseq-signals checkpoint mimic_iv_ecg_finetuned.pt"}}, "ecg_fm"),
    ({"init": "wav2vec2:/w/checkpoint_best.pt"}, None),  # an unknown KIND and an unknown file
    ({"init": "runs/x", "encoder_kind": "resnet1d"}, None),
    ({}, None),
])
def test_identify(args: dict, want: str | None) -> None:
    got = pretraining_table().identify(**args)
    assert (got.id if got else None) == want


def test_a_broken_table_names_the_field() -> None:
    data = raw()
    data["models"]["merl"]["trained_on"] = ["mimic-iv"]
    with pytest.raises(ValueError, match=r"models\.merl\.trained_on: unknown dataset 'mimic-iv'"):
        PretrainingTable.model_validate(data)
    data = raw()
    data["models"]["merl"]["aliases"].append("ecg-fm")
    with pytest.raises(ValueError, match=r"models\.(merl|ecg_fm)\.aliases: 'ecg[-_]fm' also names"):
        PretrainingTable.model_validate(data)
    data = raw()
    data["datasets"]["code15"]["includes"] = ["code"]
    with pytest.raises(ValueError, match="cycle"):
        PretrainingTable.model_validate(data)
    data = raw()
    del data["models"]["st_mem"]["licence"]
    with pytest.raises(ValueError, match="licence"):
        PretrainingTable.model_validate(data)


def test_the_encoders_licences_agree_with_the_table() -> None:
    """Where an encoder class states its checkpoint's licence (the foundation encoders' ``licence``), it is the
    table's: one fact, two places that must not drift."""
    from ecgforge.encoders import ENCODERS

    stated = {kind: (m.licence, getattr(ENCODERS[kind], "licence", None))
              for m in pretraining_table().models.values() for kind in m.encoder_kinds if kind in ENCODERS}
    assert {k: table for k, (table, cls) in stated.items() if cls is not None} == {
        k: cls for k, (_, cls) in stated.items() if cls is not None}
