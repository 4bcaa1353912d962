"""The score card across runs: best per cell, † where the paired difference to random is not significant,
‡ where the best other run's interval overlaps; its PNG grid; report.html embeds it and every figure."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgforge.app.report import load_runs, make_report
from ecgforge.app.scorecard import NOT_VS_BEST, NOT_VS_RANDOM, card_markdown, score_card
from ecgforge.cli import app
from ecgforge.data.cache import Cache
from tests.app.test_report import _make_run, _write_run
from tests.evaluation.test_protocols import cache  # noqa: F401  (module fixture: a tiny cache)


def _versus(delta: float, lo: float, hi: float, p: float, metric: str) -> dict:
    return {"random": {"delta": {metric: delta}, "ci95": {metric: [lo, hi]}, "p_value": {metric: p}}}


def _row(task: str, init: str, frac: float, seed: int, value: float, *, versus: dict | None = None,
         half_width: float = 0.02) -> dict:
    task_type, metric = ("regression", "mae") if task == "age" else ("multilabel", "macro_auroc")
    row = {"kind": "linear_probe", "task": task, "task_type": task_type, "init": init, "label_fraction": frac,
           "seed": seed, "split": "test", "primary": metric, "metrics": {metric: value},
           "ci95": {metric: [value - half_width, value + half_width]}}
    if versus is not None:
        row["versus"] = versus
    return row


@pytest.fixture()
def three_runs(tmp_path: Path) -> list[Path]:
    """``strong``: clearly above random, significant; ``weak``: a paired difference whose interval contains 0;
    ``legacy``: results.json without ``versus``. Two supervised tasks (AUROC up, age MAE down), 2 fractions."""
    dirs = []
    for name, auroc, mae, sig in (("strong", 0.86, 9.0, True), ("weak", 0.72, 11.0, False), ("legacy", 0.80, 10.5, None)):
        rows = []
        for frac in (0.1, 1.0):
            for seed in (0, 1):
                jitter = 0.004 * seed
                for task, value, rnd, metric in (("superdiag", auroc + 0.05 * frac + jitter, 0.70, "macro_auroc"),
                                                 ("age", mae - frac - jitter, 11.2, "mae")):
                    d = value - rnd
                    versus = None if sig is None else (
                        _versus(d, d - 0.01, d + 0.01, 0.001, metric) if sig else _versus(d, -0.03, 0.05, 0.4, metric))
                    rows.append(_row(task, "pretrained", frac, seed, value, versus=versus))
                    rows.append(_row(task, "random", frac, seed, rnd))
        dirs.append(_write_run(tmp_path, name, rows))
    return dirs


def test_card_marks_the_best_and_the_doubtful(three_runs: list[Path]) -> None:
    runs = load_runs(three_runs)
    cells = {(c.task, c.label_fraction): c for c in score_card(runs)}
    assert set(cells) == {(t, f) for t in ("superdiag", "age") for f in (0.1, 1.0)}
    c = cells[("superdiag", 0.1)]
    assert c.entries["strong"].mean == pytest.approx(0.86 + 0.005 + 0.002)  # mean over the two seeds
    assert c.entries["strong"].std == pytest.approx(np.std([0.865, 0.869], ddof=1))
    assert [e.run for e in c.entries.values() if e.best] == ["strong"]
    assert c.references == {"random": pytest.approx(0.70)}
    assert c.entries["strong"].vs_random["significant"] and not c.entries["weak"].vs_random["significant"]
    assert c.entries["legacy"].vs_random is None  # no versus in its results.json: no mark, not a guess
    # strong [0.847, 0.887] vs legacy [0.787, 0.827]: apart; weak [0.707, 0.747] vs strong: apart.
    assert not any(e.tied_with_best for e in c.entries.values())
    age = cells[("age", 1.0)]
    assert [e.run for e in age.entries.values() if e.best] == ["strong"]  # MAE: lower is better
    assert not age.entries["legacy"].tied_with_best


def test_overlapping_intervals_mark_the_best_and_the_runner_up(tmp_path: Path) -> None:
    a = _write_run(tmp_path, "a", [_row("superdiag", "pretrained", 1.0, 0, 0.80, half_width=0.05)])
    b = _write_run(tmp_path, "b", [_row("superdiag", "pretrained", 1.0, 0, 0.78, half_width=0.05)])
    c = _write_run(tmp_path, "c", [_row("superdiag", "pretrained", 1.0, 0, 0.60, half_width=0.05)])
    (cell,) = score_card(load_runs([a, b, c]))
    assert cell.entries["a"].best and cell.entries["a"].tied_with_best and cell.entries["b"].tied_with_best
    assert not cell.entries["c"].tied_with_best


def test_card_markdown_bolds_the_best_and_says_which_runs_lack_paired_data(three_runs: list[Path]) -> None:
    runs = load_runs(three_runs)
    md = card_markdown(runs, score_card(runs))
    line = next(x for x in md.splitlines() if x.startswith("| linear_probe | superdiag | macro_auroc | 0.1 |"))
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[4] == "**0.8670 ± 0.0028**" and cells[5] == f"0.7270 ± 0.0028{NOT_VS_RANDOM}"
    assert cells[6] == "0.8070 ± 0.0028" and cells[7] == "0.7000"
    assert "legacy: no † marks for it" in md
    paired = [x for x in md.splitlines() if x.startswith("| linear_probe | superdiag | macro_auroc | 0.1 | ")
              and x.count("|") == 10]
    assert [x.split("|")[5].strip() for x in paired] == ["strong", "weak"]  # legacy has no versus: no line
    assert paired[1].split("|")[6].strip() == f"+0.0270 ± 0.0028{NOT_VS_RANDOM}"  # mean of the seeds' deltas
    assert NOT_VS_BEST in md  # the legend explains ‡ even where no cell has one


def test_report_writes_the_card_png_and_a_self_contained_html(three_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", *map(str, three_runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "## Score card" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    pngs = sorted(out.glob("*.png"))
    assert out / "scorecard.png" in pngs and len(pngs) >= 3
    embedded = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert sorted(embedded) == sorted(p.read_bytes() for p in pngs)  # every figure, byte for byte
    assert not re.search(r"""(src|href)=["'](?!data:)""", page) and "<script" not in page  # no network, no JS
    assert page.count("<table>") == 1 + 1 + 2  # the card, its paired differences, one per (protocol, task)


def test_card_over_real_runs(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    """Two evaluated runs (real results.json rows of `ecgforge eval`): the card's numbers are the rows'."""
    (tmp_path / "a").mkdir()
    a = _make_run(tmp_path / "a", cache.path)
    b = tmp_path / "b" / "other"
    shutil.copytree(a, b)
    for run, seeds in ((a, "[0, 1]"), (b, "[2]")):
        result = CliRunner().invoke(app, ["eval", str(run), "--set", f"eval.0.seeds={seeds}"])
        assert result.exit_code == 0, result.output
    paths = make_report([a, b], tmp_path / "rep")
    runs = load_runs([a, b])
    cells = score_card(runs)
    assert cells and tmp_path / "rep" / "scorecard.png" in paths and tmp_path / "rep" / "report.html" in paths
    rows = [r for r in json.loads((a / "results.json").read_text())["eval"]
            if r["init"] == "pretrained" and r["kind"] == cells[0].kind and r["task"] == cells[0].task
            and r["label_fraction"] == cells[0].label_fraction and r.get("reference", True)]
    assert cells[0].entries["run"].mean == pytest.approx(np.mean([r["metrics"][cells[0].metric] for r in rows]))
    assert cells[0].entries["run"].n == 2 and cells[0].entries["other"].n == 1


def test_report_table_shows_the_paired_difference_over_seeds(tmp_path: Path) -> None:
    """The Markdown table's "Δ vs random" column: the seeds' deltas as mean ± std, the median p-value."""
    from ecgforge.app.report import load_runs, summarise, table_markdown

    rows = [_row("superdiagnostic", "random", 0.1, s, 0.70) for s in (0, 1)]
    rows += [_row("superdiagnostic", "pretrained", 0.1, s, 0.70 + d,
                  versus=_versus(d, d - 0.01, d + 0.01, p, "macro_auroc"))
             for s, d, p in ((0, 0.03, 0.01), (1, 0.05, 0.03))]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"eval": rows}))
    text = table_markdown(summarise(load_runs([run])))
    assert "Δ vs random" in text
    line = next(ln for ln in text.splitlines() if "| pretrained |" in ln)
    assert "+0.0400 ± 0.0141, p = 0.02" in line
    assert next(ln for ln in text.splitlines() if "| random |" in ln).endswith("|  |")


@pytest.mark.parametrize("with_versus", [True, False])
def test_report_of_one_run_with_one_seed_and_one_fraction(tmp_path: Path, with_versus: bool) -> None:
    """The smallest report (issue 28): one run, one seed, one label fraction. It says there is nothing to compare,
    and writes the Markdown (the card, no ‡ since there is no other run), the CSV, the PNGs and the page."""
    versus = _versus(0.08, 0.03, 0.13, 0.01, "macro_auroc") if with_versus else None
    run = _write_run(tmp_path, "only", [_row("rhythm", "pretrained", 0.05, 0, 0.9, versus=versus),
                                        _row("rhythm", "random", 0.05, 0, 0.82)])
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "nothing to compare" in result.stdout
    md = (out / "report.md").read_text()
    assert "## Score card" in md and "One run: there is no other run" in md and NOT_VS_BEST not in md
    assert "**0.9000 ± 0.0000**" in md  # the only run is the best of its cell, unmarked
    assert (out / "report.csv").is_file() and (out / "report.html").is_file()
    assert out / "scorecard.png" in sorted(out.glob("*.png")) and len(list(out.glob("*.png"))) >= 2
    default = CliRunner().invoke(app, ["report", str(run)])  # the default folder: RUN/report
    assert default.exit_code == 0, default.output
    assert (run / "report" / "report.md").is_file()
