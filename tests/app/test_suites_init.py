"""The PTB-XL and CinC suites run end to end on a saved encoder (``--set model.init=...``) and write rows with
paired comparisons against random initialisation; a checkpoint recognised as a public foundation model that saw
the test datasets is warned about (results.json ``warnings``), and its licence reaches the export's card.

The suites run as shipped, every ``[[eval]]`` table kept, shrunk only by ``--set`` (one seed, all the labels, a
few epochs and steps) on a small copy of the real samples in ../shared/data: 150 PTB-XL records (50 of each of
folds 1-3, so the suite's fallback splits apply) and the 141 CinC records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.recipe import load_recipe
from tests.app.test_hub import front_matter

ROOT = Path(__file__).resolve().parents[2]
cli = CliRunner()

pytestmark = [pytest.mark.data, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _invoke(argv: list[str]) -> str:
    res = cli.invoke(app, argv)
    assert res.exit_code == 0, res.output + str(res.exception)
    return res.output


def _cache_recipe(tmp: Path, shipped: str, source: Path, out: Path) -> Path:
    """The shipped cache recipe reading ``source`` and writing ``out``."""
    text = (ROOT / "recipes" / "caches" / shipped).read_text()
    lines = [f'path = "{source}"' if ln.startswith("path = ") else f'out = "{out}"' if ln.startswith("out = ")
             else ln for ln in text.splitlines()]
    path = tmp / shipped
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ptbxl(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache recipe, cache path) of 50 PTB-XL records of each of folds 1-3 (the cache is built by a run)."""
    tmp = tmp_path_factory.mktemp("ptbxl-small")
    root = tmp / "ptb-xl"
    root.mkdir()
    db = pd.read_csv(shared_data / "ptb-xl" / "ptbxl_database.csv")
    db.groupby("strat_fold").head(50).to_csv(root / "ptbxl_database.csv", index=False)
    (root / "scp_statements.csv").write_bytes((shared_data / "ptb-xl" / "scp_statements.csv").read_bytes())
    os.symlink(shared_data / "ptb-xl" / "records100", root / "records100")
    return _cache_recipe(tmp, "ptbxl.toml", root, tmp / "ptbxl.h5"), tmp / "ptbxl.h5"


@pytest.fixture(scope="module")
def cinc(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cinc-small")
    return _cache_recipe(tmp, "cinc2021.toml", shared_data / "cinc2021-sample", tmp / "cinc.h5"), tmp / "cinc.h5"


def pretrain(tmp: Path, cache_recipe: Path, cache: Path, window_s: float) -> Path:
    """A tiny SimCLR run (resnet1d width 8, 2 steps) on fold 1 of ``cache``: the checkpoint a suite evaluates."""
    recipe = tmp / "pretrain.toml"
    recipe.write_text(f"""
schema_version = 1
name = "tiny-simclr"
[data]
cache = "{cache}"
build = "{cache_recipe}"
window_s = {window_s}
pretrain_split = "train"
splits = {{ train = {{ fold = [1] }} }}
[model.encoder]
kind = "resnet1d"
width = 8
[ssl]
kind = "simclr"
projector_hidden = 32
projector_dim = 16
[train]
max_steps = 2
batch_size = 8
""")
    run = tmp / "pretrained"
    _invoke(["run", str(recipe), "--out", str(run)])
    return run


def shrunk(suite: Path, sets: list[str]) -> list[str]:
    """``--set`` items that keep every table of ``suite`` but run it small: one seed, all the labels, two probe
    epochs, a few fine-tuning steps, 20 bootstrap resamples (paired comparisons need some)."""
    r = load_recipe(suite, sets)
    out = list(sets)
    for i, ev in enumerate(r.eval):
        out += [f"eval.{i}.seeds=[0]", f"eval.{i}.label_fractions=[1.0]", f"eval.{i}.bootstrap=20"]
        out += ([f"eval.{i}.head_epochs=1", f"eval.{i}.epochs=1", f"eval.{i}.min_steps=2", f"eval.{i}.batch_size=16"]
                if ev.kind == "finetune" else [f"eval.{i}.epochs=2"])
    return [a for s in out for a in ("--set", s)]


def check_rows(results: dict, n_tables: int) -> None:
    rows = results["eval"]
    pretrained = [r for r in rows if r["init"] == "pretrained"]
    assert len(pretrained) == n_tables  # one per table: one seed, one fraction
    for r in pretrained:
        assert "random" in r["versus"] and r["versus"]["random"], (r["kind"], r["task"])
    finetune = [r for r in pretrained if r["kind"] == "finetune"]
    assert finetune and all("supervised" in r["versus"] for r in finetune)
    assert {r["kind"] for r in pretrained} == {"linear_probe", "mlp_probe", "finetune"}


def test_ptbxl_suite_runs_on_a_saved_encoder(ptbxl: tuple[Path, Path], tmp_path: Path) -> None:
    cache_recipe, cache = ptbxl
    run = pretrain(tmp_path, cache_recipe, cache, 2.5)
    suite = ROOT / "recipes" / "suites" / "ptbxl.toml"
    sets = [f"model.init={json.dumps(str(run))}", f"data.cache={json.dumps(str(cache))}",
            f"data.build={json.dumps(str(cache_recipe))}"]
    out = tmp_path / "suite"
    _invoke(["run", str(suite), "--out", str(out), *shrunk(suite, sets)])
    results = json.loads((out / "results.json").read_text())
    check_rows(results, n_tables=24)
    saved = json.loads((out / "encoder.json").read_text())
    assert saved["config"] == json.loads((run / "encoder.json").read_text())["config"]  # the init, not the stand-in
    # An ecgforge encoder: no pretraining-set leakage to warn about (the guard may still say that this 2-step
    # stand-in probes below random on some tables: it checks every table).
    assert "derived_from" not in saved
    assert not [w for w in results.get("warnings", []) if "leakage" in w or "pretrained on" in w]


def test_cinc_suite_runs_on_a_saved_encoder(cinc: tuple[Path, Path], tmp_path: Path) -> None:
    cache_recipe, cache = cinc
    run = pretrain(tmp_path, cache_recipe, cache, 5.0)
    suite = ROOT / "recipes" / "suites" / "cinc2021.toml"
    sets = [f"model.init={json.dumps(str(run))}", f"data.cache={json.dumps(str(cache))}",
            f"data.build={json.dumps(str(cache_recipe))}"]
    out = tmp_path / "suite"
    _invoke(["run", str(suite), "--out", str(out), *shrunk(suite, sets)])
    results = json.loads((out / "results.json").read_text())
    check_rows(results, n_tables=len(load_recipe(suite).eval))


def ecg_fm_checkpoint(path: Path) -> Path:
    """A fairseq-signals wav2vec 2.0 checkpoint under ECG-FM's released file name (tiny, random weights)."""
    from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
    from ecgforge.registry import BuildContext

    torch.manual_seed(0)
    ref = Wav2Vec2(Wav2Vec2Config(conv_layers=[(16, 10, 5), (16, 3, 2)], layers=1, dim=16, heads=2, ffn_dim=32,
                                  conv_pos=8, conv_pos_groups=2), BuildContext())
    theirs = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in ref.state_dict().items()}
    model_cfg = {"conv_feature_layers": "[(16, 10, 5), (16, 3, 2)]", "encoder_layers": 1, "encoder_embed_dim": 16,
                 "encoder_attention_heads": 2, "encoder_ffn_embed_dim": 32, "conv_pos": 8, "conv_pos_groups": 2}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": theirs, "cfg": {"model": model_cfg}}, path)
    return path


def test_an_ecg_fm_checkpoint_on_cinc_is_warned_about_and_its_export_says_mit(cinc: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    """ECG-FM was pretrained on PhysioNet 2021 (ECG-FM issue 5): a CinC suite on it is flagged in one line."""
    cache_recipe, cache = cinc
    ckpt = ecg_fm_checkpoint(tmp_path / "ckpts" / "mimic_iv_ecg_physionet_pretrained.pt")
    suite = ROOT / "recipes" / "suites" / "cinc2021.toml"
    sets = [f"model.init={json.dumps(str(ckpt))}", f"data.cache={json.dumps(str(cache))}",
            f"data.build={json.dumps(str(cache_recipe))}", "eval=[{kind='linear_probe', task='sex', epochs=2, "
            "bootstrap=20, seeds=[0]}]"]
    out = tmp_path / "suite"
    printed = _invoke(["run", str(suite), "--out", str(out), *[a for s in sets for a in ("--set", s)]])
    results = json.loads((out / "results.json").read_text())
    [line] = [w for w in results["warnings"] if w.startswith("leakage:")]
    assert "starts from ECG-FM, trained on MIMIC-IV-ECG, PhysioNet/CinC Challenge 2021" in line
    assert "eval[0]" in line and "records it may have seen" in line and "\n" not in line
    n = sum(1 for _ in json.loads((out / "results.json").read_text())["eval"])
    assert n and "warning: leakage:" in " ".join(printed.split())
    saved = json.loads((out / "encoder.json").read_text())
    assert saved["derived_from"]["model"] == "ecg_fm" and saved["derived_from"]["licence"] == "MIT"
    _invoke(["export", str(out), "--out", str(tmp_path / "export")])
    card = (tmp_path / "export" / "README.md").read_text()
    assert front_matter(card)["license"] == "mit" and "Derived from ECG-FM" in card
