"""Paired differences between runs (issue 26): the scores a run keeps, and ``ecgforge report A B``."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgforge.app.between import compare_runs, resolve_pairs
from ecgforge.cli import app
from ecgforge.data.cache import Cache
from ecgforge.errors import UserError
from ecgforge.evaluation.paired import compare, rank_evidence
from ecgforge.evaluation.rows import ResultRow
from ecgforge.rundir import RunDir
from tests.app.test_report import _make_run
from tests.evaluation.test_protocols import cache  # noqa: F401  (module fixture: a tiny cache)

#: Two probe seeds (so the seeds' mean is compared too) and intervals, on both tables.
EVAL = ["--set", "eval.0.seeds=[0, 1]", "--set", "eval.0.bootstrap=50", "--set", "eval.1.bootstrap=50"]


def _evaluate(run: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["eval", str(run), *EVAL, *extra])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def two_runs(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    """Runs ``a`` and ``b``: two encoders (seeds 0 and 1) of one recipe, each evaluated by ``ecgforge eval``."""
    root = tmp_path_factory.mktemp("between")
    runs = (_make_run(root, cache.path, name="a", seed=0), _make_run(root, cache.path, name="b", seed=1))
    for run in runs:
        _evaluate(run)
    return runs


@pytest.fixture()
def copies(two_runs: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the two runs a test may change."""
    return tuple(Path(shutil.copytree(r, tmp_path / r.name)) for r in two_runs)  # type: ignore[return-value]


def test_eval_keeps_the_scores_behind_every_row(two_runs: tuple[Path, Path]) -> None:
    """Every row's stored scores give back its metrics, and its versus.random, exactly: no re-evaluation needed."""
    rd = RunDir(two_runs[0])
    results = rd.read_results()
    stored = rd.read_scores()
    assert results is not None and stored is not None
    assert results.scores is not None and results.scores["files"] == ["eval_0.npz", "eval_1.npz"]
    assert [s.row for s in stored] == results.rows  # every row, in order
    assert {s.bootstrap for s in stored} == {50}
    by_key = {(s.row.kind, s.row.init, s.row.seed): s for s in stored}
    for s in stored:
        full = s.evidence.metrics(np.arange(len(s.evidence.records)))
        for metric, value in s.row.metrics.items():
            if value is not None:
                assert full[metric] == pytest.approx(value, abs=1e-12), (s.row.kind, metric)
        assert len(s.evidence.records) == s.row.n_test_records == 12
        assert all(r.split("/")[1].startswith(("p12", "p13", "p14", "p15")) for r in s.evidence.records)
        if s.row.init == "pretrained":
            ref = by_key[(s.row.kind, "random", s.row.seed)]
            again = compare(s.evidence, ref.evidence, s.bootstrap, s.row.seed)
            assert again == s.row.versus["random"]


def test_eval_rewrites_the_scores_with_the_results(copies: tuple[Path, Path]) -> None:
    run = copies[0]
    before = RunDir(run).read_results()
    _evaluate(run, "--set", "eval.0.seeds=[3]")
    after = RunDir(run).read_results()
    assert after is not None and before is not None and after.scores["id"] != before.scores["id"]  # type: ignore[index]
    assert sorted(p.name for p in (run / "scores").iterdir()) == ["eval_0.npz", "eval_1.npz"]  # nothing stale
    stored = RunDir(run).read_scores()
    assert stored is not None and {s.row.seed for s in stored if s.row.kind == "linear_probe"} == {3}


def test_report_gives_delta_interval_and_p_for_every_shared_row(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "A = b, B = a: linear_probe on label, macro_auroc" in result.output
    assert "A = b, B = a: knn on label, macro_auroc" in result.output
    got = json.loads((out / "paired.json").read_text())
    assert got["pairs"] == [["b", "a"]] and got["notes"] == []  # every run against the first
    rows = got["rows"]
    # Shared rows: the pretrained rows of both runs (linear probe seeds 0, 1 and their mean; kNN seed 0).
    primary = {(r["kind"], r["seed"]) for r in rows if r["primary"]}
    assert primary == {("linear_probe", 0), ("linear_probe", 1), ("linear_probe", "mean"), ("knn", 0)}
    results_b = {(r.kind, r.seed): r for r in RunDir(b).read_results().rows if r.init == "pretrained"}  # type: ignore[union-attr]
    for r in rows:
        assert math.isfinite(r["delta"]) and r["n_records"] == 12 and r["n_patients"] == 4 and r["n_boot"] == 50
        assert r["delta"] == pytest.approx(r["a_value"] - r["b_value"], abs=1e-12)
        if r["seed"] != "mean":
            assert r["a_value"] == results_b[(r["kind"], r["seed"])].metrics[r["metric"]]
        if r["ci_low"] is not None:
            assert r["ci_low"] <= r["ci_high"] and 0 < r["p_value"] <= 1
    assert all(r["ci_low"] is not None for r in rows if r["primary"])
    md = (out / "report.md").read_text()
    table = md[md.index("## Paired differences between runs"):]
    assert sum(line.startswith("| b | a |") for line in table.splitlines()) == len(primary)
    for r in (r for r in rows if r["primary"]):
        assert f"{r['delta']:+.4f}" in table and f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" in table
        assert f"{r['delta']:+.4f}" in result.output
    with open(out / "paired.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert "Paired differences between runs" in (out / "report.html").read_text()


def test_a_run_against_itself_differs_by_nothing(two_runs: tuple[Path, Path]) -> None:
    """The level's sanity check: identical scores are no evidence of a difference (delta 0, p = 1)."""
    a = two_runs[0]
    c = compare_runs([a], pairs=[f"{a}:{a}"])
    assert c.rows and c.notes == []
    for r in c.rows:
        assert r["delta"] == 0.0 and r["p_value"] == 1.0 and r["ci_low"] == r["ci_high"] == 0.0


def test_a_pair_on_other_test_records_is_refused_with_a_line(copies: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = copies
    _evaluate(b, "--set", 'data.splits.test={record_id=["p12_r0", "p12_r1", "p12_r2", "p13_r0", "p13_r1", "p13_r2", '
                          '"p14_r0", "p14_r1", "p14_r2"]}')
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "rep")], terminal_width=250)
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "rep" / "paired.json").read_text())
    assert got["rows"] == []
    assert sorted(got["notes"]) == [
        "b vs a: knn on label: 1 shared row(s) not compared: scored on different test records (9 and 12, 9 in common)",
        "b vs a: linear_probe on label: 2 shared row(s) not compared: scored on different test records (9 and 12, 9 in common)"]
    assert "scored on different test records" in " ".join(result.output.split())
    assert "No row was compared." in (tmp_path / "rep" / "report.md").read_text()


def test_a_run_without_stored_scores_gets_one_line(copies: tuple[Path, Path]) -> None:
    a, b = copies
    raw = json.loads((b / "results.json").read_text())
    del raw["scores"]  # as a run evaluated before ecgforge kept them
    (b / "results.json").write_text(json.dumps(raw))
    shutil.rmtree(b / "scores")
    c = compare_runs([a, b])
    assert c.rows == [] and len(c.notes) == 1
    assert c.notes[0].startswith("b: no stored test scores") and f"ecgforge eval {b}" in c.notes[0]


def test_scores_of_another_evaluation_are_refused(copies: tuple[Path, Path]) -> None:
    """A process killed between writing scores/ and results.json: the two no longer belong together."""
    a, b = copies
    raw = json.loads((b / "results.json").read_text())
    raw["scores"]["id"] = "0" * 32
    (b / "results.json").write_text(json.dumps(raw))
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(b / "rep")])
    assert result.exit_code == 2
    assert "eval_0.npz: written by another evaluation than" in " ".join(result.output.split())


def test_pairs_and_reference_name_runs_given(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    assert resolve_pairs([a, b]) == [(1, 0)]  # every run against the first
    assert resolve_pairs([a, b], reference="b") == [(0, 1)]
    assert resolve_pairs([a, b], pairs=["a:b", f"{b}:a"]) == [(0, 1), (1, 0)]  # by name or by path
    with pytest.raises(UserError, match="--pair c:a: c is not one of the runs given"):
        resolve_pairs([a, b], pairs=["c:a"])
    with pytest.raises(UserError, match="expected RUN_A:RUN_B"):
        resolve_pairs([a, b], pairs=["a"])
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--reference", "nope"])
    assert result.exit_code == 2 and "--reference nope: nope is not one of the runs given" in " ".join(result.output.split())


def test_identification_evidence_is_stored_and_restored(tmp_path: Path) -> None:
    """Rank evidence (identification's top-1 / top-5) goes through scores/ like score evidence does."""
    ranks = np.array([0, 3, 0, 7, 1])
    patients = np.array(["p1", "p2", "p3", "p4", "p5"])
    row = ResultRow(kind="identification", task="patient_identification", task_type="identification",
                    init="pretrained", label_fraction=1.0, seed=0, split="test",
                    metrics={"top1": 0.4, "top5": 0.8}, primary="top1", conditions={"mode": "zero_shot"},
                    evidence=rank_evidence(ranks, patients, patients))
    from ecgforge.rundir import Results

    rd = RunDir(tmp_path)
    results = Results(rows=[row], scores=rd.write_scores([[row]], [20]))
    rd.write_results(results)
    (stored,) = rd.read_scores()  # type: ignore[misc]
    assert stored.bootstrap == 20 and stored.evidence.form == "ranks"
    assert list(stored.evidence.records) == list(patients)
    assert stored.evidence.metrics(np.arange(5)) == {"top1": 0.4, "top5": 0.8}


def test_the_terminal_table_of_a_robustness_pair_fits_80_columns_with_every_number_whole() -> None:
    """Two conditions (noise varies, leads does not) and two seeds: a fixed condition moves into the title, and no
    number is cut to an ellipsis in an 80-column terminal (it was, before: ``0.…``)."""
    from rich.console import Console

    from ecgforge.ui.console import between_tables

    rows = [{"a": "adv_mask_random", "b": "adv_mask", "kind": "robustness", "task": "superdiagnostic",
             "metric": "macro_auroc", "label_fraction": 1.0, "seed": seed, "conditions": ["noise_level", "leads"],
             "noise_level": noise, "leads": "12", "a_value": 0.8570 - noise / 100, "b_value": 0.8537 - noise / 90,
             "delta": 0.0033 + noise / 900, "ci_low": -0.0027, "ci_high": 0.0100, "p_value": 0.00498,
             "n_records": 2150, "n_patients": 1864} for noise in (0, 1, 3, 6) for seed in (0, 1, "mean")]

    class Comparison:
        def primary_rows(self) -> list[dict]:
            return rows

    console = Console(width=80, record=True, force_terminal=False)
    for table in between_tables(Comparison()):
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "leads 12" in text and "noise" in text
    for r in rows:
        for cell in (f"{r['a_value']:.4f}", f"{r['delta']:+.4f}", "[-0.0027, +0.0100]", "0.00498"):
            assert cell in text


def test_the_results_tables_of_a_robustness_run_fit_80_columns_with_every_number_whole() -> None:
    """The run's own table (``ecgforge run`` / ``eval`` print it): one per protocol and task, a fixed condition in
    the title, no metric cut to ``0.8…`` in an 80-column terminal (it was, with robustness rows beside a probe)."""
    from rich.console import Console

    from ecgforge.ui.console import results_tables

    def row(kind: str, init: str, seed: int, noise: int | None) -> dict:
        cond = {} if noise is None else {"noise_level": noise, "leads": "12"}
        return {"kind": kind, "task": "superdiagnostic", "init": init, "label_fraction": 1.0, "seed": seed,
                "task_type": "multilabel", **cond, "conditions": list(cond),
                "metrics": {"macro_auroc": 0.84412 - seed / 100, "macro_f1": 0.55841, "fmax": 0.71963},
                "ci95": {}, "n_test": 2150}

    rows = [row("linear_probe", init, s, None) for init in ("pretrained", "random") for s in (0, 1)]
    rows += [row("robustness", init, s, n) for init in ("pretrained", "random") for s in (0, 1) for n in (0, 1, 3, 6)]
    console = Console(width=80, record=True, force_terminal=False)
    tables = results_tables({"recipe": "ptbxl-cpu-adv_mask", "eval": rows})
    assert len(tables) == 2
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "robustness on superdiagnostic, leads 12" in text
    for value in ("0.8441", "0.8341", "0.5584", "0.7196"):
        assert value in text
