"""Reports: table numbers are the means/stds of the input rows, files and plots exist, `ecgforge eval` reruns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from ecgforge.app import report
from ecgforge.app.report import (
    load_runs,
    make_report,
    plot_condition,
    plot_label_efficiency,
    plt,
    summarise,
    table_markdown,
)
from ecgforge.cli import app
from ecgforge.data.cache import Cache
from ecgforge.evaluation.rows import rows_from_json
from ecgforge.objectives.mask_figures import mask_figure
from ecgforge.version import __version__
from tests.evaluation.test_protocols import SPLITS, cache  # noqa: F401  (module fixture: a tiny cache)


def _row(kind: str, init: str, frac: float, seed: int, auroc: float, **extra: object) -> dict:
    return {"kind": kind, "task": "label", "task_type": "multiclass", "init": init, "label_fraction": frac,
            "seed": seed, "split": "test", "metrics": {"macro_auroc": auroc, "accuracy": auroc - 0.1},
            "dropped_classes": [], "ci95": {"macro_auroc": [auroc - 0.05, auroc + 0.03]}, **extra}


def _write_run(root: Path, name: str, rows: list[dict]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"recipe": name, "eval": rows}))
    return d


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for r, base in (("ssl", 0.85), ("other", 0.75)):
        rows = []
        for init, shift in (("pretrained", 0.0), ("random", -0.15)):
            for frac in (0.1, 1.0):
                for seed in (0, 1, 2):
                    rows.append(_row("linear_probe", init, frac, seed, base + shift + 0.05 * frac + rng.normal(0, 0.01)))
                for seed in (0, 1, 2):
                    for level in range(7):
                        rows.append(_row("robustness", init, frac, seed, base + shift - 0.04 * level + rng.normal(0, 0.01),
                                         noise_level=level, leads="12"))
                    for leads, drop in (("6", 0.05), ("3", 0.08), ("2", 0.1), ("1", 0.15)):
                        rows.append(_row("robustness", init, frac, seed, base + shift - drop, noise_level=0, leads=leads))
        dirs.append(_write_run(tmp_path, r, rows))
    return dirs


def test_summary_equals_means_and_stds_of_the_rows(runs: list[Path]) -> None:
    loaded = load_runs(runs)
    summary = summarise(loaded)
    for s in summary:
        values = [r.metrics[s["metric"]] for r in loaded[s["run"]]
                  if all(getattr(r, f) == s[f] for f in ("kind", "task", "init", "label_fraction"))
                  and all(r.conditions.get(k) == s.get(k) for k in ("noise_level", "leads"))]
        assert s["n"] == len(values) == 3
        assert s["mean"] == pytest.approx(np.mean(values)) and s["std"] == pytest.approx(np.std(values, ddof=1))
        if s["metric"] == "macro_auroc":
            assert s["ci_low"] == pytest.approx(np.mean(values) - 0.05)
            assert s["ci_high"] == pytest.approx(np.mean(values) + 0.03)
        else:
            assert np.isnan(s["ci_low"])  # the rows carry no interval for accuracy
    md = table_markdown(summary)
    one = next(s for s in summary if s["run"] == "ssl" and s["kind"] == "linear_probe" and s["metric"] == "macro_auroc")
    assert f"{one['mean']:.4f} ± {one['std']:.4f}" in md
    assert "## robustness: label" in md and "| noise_level | leads |" in md.replace("label_fraction | ", "")


def test_report_files_and_plots(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.csv", "label_efficiency_linear_probe_macro_auroc.png", "robustness_noise_level_macro_auroc.png",
            "robustness_leads_macro_auroc.png"} <= names
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(summarise(load_runs(runs)))
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_label_efficiency_pairs_each_run_by_colour_and_ticks_the_fractions(runs: list[Path], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: dict[str, object] = {}

    def keep(fig: plt.Figure, path: Path) -> Path:
        ax = fig.axes[0]
        drawn.update(colours={ln.get_label(): ln.get_color() for ln in ax.get_lines()},
                     ticks=[float(t) for t in ax.get_xticks()])
        plt.close(fig)
        return path

    monkeypatch.setattr(report, "_save", keep)
    plot_label_efficiency(load_runs(runs), "macro_auroc", tmp_path / "le.png")
    c = drawn["colours"]
    assert c["ssl linear_probe pretrained"] == c["ssl linear_probe random"]  # a run's floor reads as its pair
    assert c["other linear_probe pretrained"] == c["other linear_probe random"] != c["ssl linear_probe random"]
    assert drawn["ticks"] == [0.1, 1.0]  # the measured fractions, not 10^-1 / 10^0 decades


def test_condition_plots_need_a_condition_besides_the_clean_reference(tmp_path: Path) -> None:
    rows = [_row("robustness", init, 1.0, seed, 0.8 - 0.01 * level, noise_level=level, leads="12")
            for init in ("pretrained", "random") for seed in (0, 1) for level in (0, 3)]
    runs = {"r": rows_from_json(rows)}
    assert plot_condition(runs, "robustness", "noise_level", "macro_auroc", tmp_path / "noise.png") is not None
    # No lead subset was tested: the 12-lead reference alone is no reduced-lead curve.
    assert plot_condition(runs, "robustness", "leads", "macro_auroc", tmp_path / "leads.png") is None
    assert not (tmp_path / "leads.png").exists()


def test_report_refuses_a_directory_without_results(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no results.json" in result.output


def test_mask_figure(tmp_path: Path) -> None:
    t = np.arange(500) / 100
    x = np.tile(np.sin(2 * np.pi * 1.2 * t), (2, 12, 1)).astype(np.float32)
    masks = np.zeros((2, 2, 500), dtype=np.float32)
    masks[:, 0, 100:200] = 1.0
    masks[:, 1, 300:350] = 0.8
    fig = mask_figure(x, masks, 100.0, ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"])
    p = report._save(fig, tmp_path / "m.png")
    assert p.is_file() and p.stat().st_size > 10_000
    assert len(fig.axes) == 2 * 2 * 2  # 2 ECGs x leads II and V1, each with its mask axis


def test_mask_figure_draws_the_applied_masks() -> None:
    """A soft mask flat at 0.6 is all-hiding once binarised: the figure must show the applied mask (1), with
    the soft one dotted beside it, and shade what it hides."""
    x = np.zeros((1, 12, 250), dtype=np.float32)
    soft = np.full((1, 1, 250), 0.6, dtype=np.float32)
    applied = 1.0 / (1 + np.exp(-50 * (soft - 0.5)))
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    fig = mask_figure(x, soft, 100.0, leads, applied=applied, r_peaks=[np.array([50, 150])])
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    labels = {ln.get_label(): np.asarray(ln.get_ydata()) for ln in lines}
    assert np.allclose(labels["mask 0 applied"], applied[0, 0]) and np.allclose(labels["mask 0 soft"], 0.6)
    assert "R peak" in labels
    assert any(len(ax.collections) for ax in fig.axes)  # the hidden samples are shaded


def _make_run(tmp_path: Path, cache_path: Path, ssl: dict | None = None, name: str = "run", seed: int = 0) -> Path:
    """A run directory as `ecgforge run` leaves it, without pretraining: resolved.toml, the encoder of ``seed``
    (a ResNet-1d of width 8 over a linear probe and a kNN table, no bootstrap) and an empty results.json."""
    from ecgforge.config_files import to_toml_dict
    from ecgforge.encoder_files import save_encoder
    from ecgforge.encoders import ENCODERS
    from ecgforge.recipe import Recipe
    from ecgforge.registry import build

    raw = {"name": "r", "data": {"cache": str(cache_path), "splits": SPLITS, "window_s": 2.5, "pretrain_split": "train"},
           "model": {"encoder": {"kind": "resnet1d", "width": 8}},
           "eval": [{"kind": "linear_probe", "task": "label", "epochs": 3, "bootstrap": 0},
                    {"kind": "knn", "task": "label", "k": 3, "bootstrap": 0}]}
    if ssl is not None:
        raw["ssl"] = ssl
        raw["train"] = {"optim": {"masker": {}, "encoder": {}}}
    recipe = Recipe.model_validate(raw)
    run = tmp_path / name
    run.mkdir()
    (run / "resolved.toml").write_text(tomli_w.dumps(to_toml_dict(recipe)))
    torch.manual_seed(seed)
    enc = build(ENCODERS, recipe.model.encoder)
    save_encoder(enc, recipe.model.encoder, run, {"fs_hz": 100.0, "window_s": 2.5, "leads": Cache(cache_path).leads})
    (run / "results.json").write_text(json.dumps({"recipe": "r", "eval": [], "pretrain_seconds": 1.5,
                                                  "ecgforge_version": "0.0.1", "eval_seconds": 99.0,
                                                  "note": "kept"}))
    return run


def test_eval_command_reruns_the_tables_with_overrides(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    run = _make_run(tmp_path, cache.path)
    result = CliRunner().invoke(app, ["eval", str(run), "--set", "eval.0.seeds=[0, 1]"])
    assert result.exit_code == 0, result.output
    res = json.loads((run / "results.json").read_text())
    assert res["pretrain_seconds"] == 1.5 and res["note"] == "kept"  # what the eval does not redo is kept
    assert res["ecgforge_version"] == __version__ and res["eval_seconds"] != 99.0  # what it redoes is its own
    assert res["cache"] == str(cache.path) and isinstance(res["warnings"], list) and "allowed_overlap" not in res
    assert res["eval_overrides"] == ["eval.0.seeds=[0, 1]"]
    lp = [(r["init"], r["seed"]) for r in res["eval"] if r["kind"] == "linear_probe"]
    assert lp == [("pretrained", 0), ("pretrained", 1), ("random", 0), ("random", 1)]
    assert any(r["kind"] == "knn" for r in res["eval"])
    assert not list(run.glob(".results.json*"))  # written atomically: no scratch file left


def test_masks_of_an_adversarial_masking_run(cache: Cache, tmp_path: Path,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The report draws the figures the objective returns (adv_mask: its masks), with the weights of the last
    *complete* checkpoint (progress.json written): a later folder without one is a save cut short."""
    from safetensors.torch import save_file

    from ecgforge.app.recipes import load_run_recipe as load_recipe
    from ecgforge.encoders import ENCODERS
    from ecgforge.objectives import OBJECTIVES
    from ecgforge.registry import BuildContext, build

    run = _make_run(tmp_path, cache.path, ssl={"kind": "adv_mask", "masker": {"kind": "unet1d", "width": 8, "n_masks": 2}})
    r = load_recipe(run / "resolved.toml")
    torch.manual_seed(0)
    ctx = BuildContext(encoder=build(ENCODERS, r.model.encoder), fs_hz=100.0, window=250, n_leads=12)
    objective = build(OBJECTIVES, r.ssl, ctx)
    ckpt = run / "checkpoints" / "step_3"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in objective.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "progress.json").write_text("{}")
    cut = run / "checkpoints" / "step_6"  # killed while saving: no progress.json, weights unreadable
    cut.mkdir()
    (cut / "model.safetensors").write_bytes(b"half")

    trained = report.load_trained_objective(run)
    assert trained is not None and trained.checkpoint == ckpt and trained.plan.window == 250
    for k, v in objective.state_dict().items():
        assert torch.equal(trained.objective.state_dict()[k], v), k
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    paths = make_report([run], tmp_path / "rep")
    assert (tmp_path / "rep" / "masks_run.png") in paths
    titles = [f.get_suptitle() for f in figs if f.get_suptitle()]
    assert any(t.startswith("run: step_3 masks: applied") for t in titles), titles


def test_objectives_without_figures_are_not_rebuilt(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    """SimCLR keeps the default ``figures``: no figure, and its checkpoint (unreadable here) is never opened."""
    run = _make_run(tmp_path, cache.path, ssl={"kind": "simclr", "projector_hidden": 16, "projector_dim": 8})
    ckpt = run / "checkpoints" / "step_3"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"not weights")
    (ckpt / "progress.json").write_text("{}")
    assert report.load_trained_objective(run) is None
    assert not [p for p in make_report([run], tmp_path / "rep") if p.name.startswith("masks")]


def test_crossing_step_is_where_the_curve_stays_above_random() -> None:
    pts = [(0, 0.60), (10, 0.58), (20, 0.63), (30, 0.59), (40, 0.64), (50, 0.66)]
    assert report.crossing_step(pts, 0.60) == 40  # step 20 crossed, fell back at 30: not yet
    assert report.crossing_step(pts, 0.70) is None
    assert report.crossing_step([(0, 9.0), (5, 8.0)], 8.5, lower_is_better=True) == 5  # MAE


def test_report_draws_the_online_monitor_per_run(runs: list[Path], tmp_path: Path) -> None:
    """A run whose train.jsonl has monitor scores gets training_<run>.png in the report (and report.html);
    one without gets none."""
    rows = [{"monitor/knn/label/macro_auroc": 0.6, "monitor/knn/label/macro_auroc/random": 0.6, "step": 0}]
    rows += [{"loss": 3.0 - s / 10, "embed/std": 0.5, "embed/erank": 20.0, "step": s} for s in range(1, 11)]
    rows += [{"monitor/knn/label/macro_auroc": 0.6 + s / 100, "step": s} for s in (5, 10)]
    (runs[0] / "metrics").mkdir()
    (runs[0] / "metrics" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = report.monitor_curves(rows)
    assert curves == {"monitor/knn/label/macro_auroc": ([(0, 0.6), (5, 0.65), (10, 0.7)], 0.6)}
    made = make_report(runs, tmp_path / "out")
    names = [p.name for p in made]
    assert f"training_{runs[0].name}.png" in names and f"training_{runs[1].name}.png" not in names
    assert f"training_{runs[0].name}.png" in (tmp_path / "out" / "report.html").read_text()
