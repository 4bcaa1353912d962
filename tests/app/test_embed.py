"""Real PTB-XL: a linear model fitted on `ecgforge embed` output reproduces the run's linear-probe AUROC.

The cache holds a subset of the records (the first 600 rows of ptbxl_database.csv, records100, 100 Hz):
fold 1 trains, fold 2 validates, fold 3 tests. The run pretrains SimCLR for a few steps, then linear-probes
superdiagnostic labels with a 200-resample bootstrap CI. Independently, sklearn's LogisticRegression on
the exported embeddings must land within that noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ecgforge.app.embed import read_embeddings
from ecgforge.cli import app
from ecgforge.evaluation.metrics import compute_metrics

N_RECORDS = 600
cli = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: extra threads only add synchronisation
    yield
    torch.set_num_threads(before)


@pytest.mark.data
def test_logistic_regression_on_embed_output_matches_the_runs_linear_probe(shared_data: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    src = shared_data / "ptb-xl"
    root = tmp_path / "ptb-xl"
    root.mkdir()
    lines = (src / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (root / "ptbxl_database.csv").write_text("".join(lines[: N_RECORDS + 1]))  # a record subset
    (root / "scp_statements.csv").symlink_to(src / "scp_statements.csv")
    (root / "records100").symlink_to(src / "records100")
    cache = tmp_path / "ptbxl.h5"
    (tmp_path / "cache.toml").write_text(f"""
name = "ptbxl-subset"
out = "{cache}"
[source]
kind = "ptbxl"
path = "{root}"
[signal]
fs_hz = 100
""")
    res = cli.invoke(app, ["cache", "build", str(tmp_path / "cache.toml"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    (tmp_path / "run.toml").write_text(f"""
name = "ptbxl-probe"
seed = 0
[data]
cache = "{cache}"
window_s = 2.5
splits = {{ train = {{ fold = [1] }}, val = {{ fold = [2] }}, test = {{ fold = [3] }} }}
[model.encoder]
kind = "resnet1d"
width = 8
[ssl]
kind = "simclr"
projector_hidden = 64
projector_dim = 32
augment = [{{ kind = "gaussian_noise", std_mv = 0.05 }}]
[train]
batch_size = 32
max_steps = 3
[[eval]]
kind = "linear_probe"
task = "superdiagnostic"
inits = ["pretrained"]
bootstrap = 200
""")
    run_dir = tmp_path / "run"
    res = cli.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    row = json.loads((run_dir / "results.json").read_text())["eval"][0]
    run_auroc, (low, high) = row["metrics"]["macro_auroc"], row["ci95"]["macro_auroc"]

    out = tmp_path / "emb.h5"
    res = cli.invoke(app, ["embed", str(run_dir), "--cache", str(cache), "--out", str(out),
                           "--split", "train={fold = [1]}", "--split", "test={fold = [3]}"])
    assert res.exit_code == 0, res.output
    e = read_embeddings(out)
    y = e["labels"]["superdiagnostic"].astype(int)
    labelled = y.sum(1) > 0  # as the benchmark (and task_targets): records without a superclass are dropped
    tr, te = (e["split"] == "train") & labelled, (e["split"] == "test") & labelled
    assert te.sum() == row["n_test_records"]
    scaler = StandardScaler().fit(e["embedding"][tr])
    keep = y[tr].any(0) & ~y[tr].all(0)  # classes with both outcomes in training
    clf = OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=2000)).fit(scaler.transform(e["embedding"][tr]), y[tr][:, keep])
    scores = np.zeros(y[te].shape, dtype=np.float64)
    scores[:, keep] = clf.predict_proba(scaler.transform(e["embedding"][te]))
    names = [n for n, k in zip(e["label_names"]["superdiagnostic"], keep, strict=True) if k]
    metrics, _ = compute_metrics("multilabel", y[te][:, keep], scores[:, keep], names)
    ours = metrics["macro_auroc"]
    # "Within noise": inside the run's bootstrap CI widened by its half-width (the two heads differ: Adam on
    # window embeddings picked on val vs. L2 logistic regression on record means), and far above chance.
    half = (high - low) / 2
    assert low - half <= ours <= high + half, (ours, run_auroc, (low, high))
    assert ours > 0.6 and run_auroc > 0.6
    print(f'embed+sklearn macro AUROC {ours:.4f}; run linear probe {run_auroc:.4f} [{low:.4f}, {high:.4f}]; '
          f'{tr.sum()} train / {te.sum()} test records')
