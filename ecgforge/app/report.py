"""Pictures and tables of runs (PNG via matplotlib, headless; Markdown and CSV tables).

``make_report(run_dirs, out_dir)`` compares runs: a table of every results row group (mean ± std over seeds,
with the test-record bootstrap 95% interval averaged over seeds), the paired differences between runs on their
shared rows (app/between.py: ``paired.csv``, ``paired.json``), label-efficiency curves, a curve per test
condition of a protocol (robustness: noise level, lead subset) and the figures a run's objective draws over a few
test ECGs (``Objective.figures``: adversarial masking's learned masks, Bo et al. 2022); the score card across runs
(app/scorecard.py) and all of it as one self-contained ``report.html`` (app/report_html.py).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from ecgforge.app.between import (  # noqa: E402
    Comparison,
    compare_runs,
    comparison_csv,
    comparison_json,
    comparison_markdown,
    run_names,
)
from ecgforge.app.report_html import write_html  # noqa: E402
from ecgforge.app.scorecard import card_markdown, plot_card, score_card  # noqa: E402
from ecgforge.errors import UserError  # noqa: E402
from ecgforge.evaluation.rows import EXCLUDED_LEGEND, ResultRow  # noqa: E402
from ecgforge.evaluation.scoring import PRIMARY  # noqa: E402
from ecgforge.fsio import atomic_file, atomic_write_json, atomic_write_text  # noqa: E402
from ecgforge.rundir import RunDir, RunPlan, read_jsonl  # noqa: E402

#: The fields that, with the run and a row's conditions, make one table row; seeds are what a group averages over.
GROUP_FIELDS = ("kind", "task", "init", "label_fraction")

Runs = dict[str, list[ResultRow]]


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Every ``*loss*`` column of metrics/train.jsonl against the optimiser step."""
    keys = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
    if not rows or not keys:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot(*zip(*pts, strict=True), label=k, lw=1.5)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title(title or "pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, path)


def monitor_curves(rows: list[dict[str, Any]]) -> dict[str, tuple[list[tuple[int, float]], float | None]]:
    """Online-monitor key (``monitor/knn/superdiagnostic/macro_auroc``) -> ((step, score) points, the random-init
    reference or None), from metrics/train.jsonl rows."""
    out: dict[str, tuple[list[tuple[int, float]], float | None]] = {}
    # monitor/<probe>/<task>/<metric>: not monitor/seconds, monitor/embed/..., nor the references (.../random).
    keys = [k for r in rows for k in r if k.startswith("monitor/") and len(k.split("/")) == 4 and not k.endswith("/random")]
    for k in dict.fromkeys(keys):
        pts = [(int(r["step"]), float(r[k])) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        ref = next((float(r[f"{k}/random"]) for r in rows if isinstance(r.get(f"{k}/random"), (int, float))), None)
        out[k] = (pts, ref)
    return out


def crossing_step(points: list[tuple[int, float]], reference: float, lower_is_better: bool = False) -> int | None:
    """The first step after 0 from which every later score is above ``reference`` (below it for a lower-better
    metric); None if the last score is not."""
    sign = -1.0 if lower_is_better else 1.0
    after = [(s, v) for s, v in points if s > 0]
    crossed = None
    for s, v in after:
        if sign * (v - reference) > 0:
            crossed = s if crossed is None else crossed
        else:
            crossed = None
    return crossed


def plot_training(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """The run's training curves against the optimiser step, side by side: the loss(es), each online-monitor
    probe score with its random-init reference (dashed, same colour), ``embed/std`` and ``embed/erank``. None if
    the run logged no monitor score (loss.png alone then)."""
    curves = monitor_curves(rows)
    if not rows or not curves:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(17.0, 3.6))
    losses = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
    for k in losses:
        axes[0].plot(*zip(*[(r["step"], r[k]) for r in rows if k in r], strict=True), label=k, lw=1.2)
    axes[0].set_title("training loss")
    colours = _Colours()
    # Keys share task and metric in the usual case: name the curves by probe, the axis by task and metric.
    tails = {k.split("/", 2)[-1] for k in curves}
    for k, (pts, ref) in curves.items():
        label = k.split("/")[1] if len(tails) == 1 else k.removeprefix("monitor/")
        colour = colours((k,))
        if pts:
            axes[1].plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.5, color=colour, label=label)
        if ref is not None:
            axes[1].axhline(ref, ls="--", lw=1.0, color=colour)
            crossed = crossing_step(pts, ref, lower_is_better=k.endswith("/mae"))
            if crossed is not None:
                axes[1].axvline(crossed, ls=":", lw=1.0, color=colour)
    axes[1].plot([], [], ls="--", color="gray", label="random init (same colour)")
    axes[1].plot([], [], ls=":", color="gray", label="crosses it for good")
    axes[1].set_title("online probe: " + (next(iter(tails)) if len(tails) == 1 else "score"))
    axes[1].legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    for ax, key in zip(axes[2:], ("embed/std", "embed/erank"), strict=True):
        # Training batches (where the objective calls the encoder's forward; not CPC, wav2vec 2.0) and the
        # monitor's fixed subset in eval mode, with the random encoder's value on that subset.
        batch = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        fixed = [(r["step"], r[f"monitor/{key}"]) for r in rows if isinstance(r.get(f"monitor/{key}"), (int, float))]
        ref = next((r[f"monitor/{key}/random"] for r in rows if isinstance(r.get(f"monitor/{key}/random"), (int, float))), None)
        if batch:
            ax.plot(*zip(*batch, strict=True), lw=1.2, color="tab:gray", label="training batch")
        if fixed:
            ax.plot(*zip(*fixed, strict=True), lw=1.2, marker="o", ms=3, color="tab:purple", label="monitor subset")
        if ref is not None:
            ax.axhline(ref, ls="--", lw=1.0, color="tab:purple", label="monitor subset, random init")
        if batch or fixed:
            ax.legend(frameon=False, fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key)
    for ax in axes:
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    if losses:
        axes[0].legend(frameon=False, fontsize=7)
    fig.suptitle(title or "pretraining", fontsize=10, y=1.03)
    return _save(fig, path)


def label_efficiency(rows: list[ResultRow], metric: str) -> dict[tuple[str, str, str], dict[float, list[float]]]:
    """(protocol, task, init) -> fraction -> metric values over seeds, for supervised tasks' rows of protocols
    without test conditions (those are drawn against their conditions)."""
    out: dict[tuple[str, str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.conditions or r.task_type not in PRIMARY:
            continue
        v = r.value(metric)
        if v is not None:
            out[(r.kind, r.task, r.init)][float(r.label_fraction)].append(v)
    return out


def _init_style(init: str) -> str:
    """Line style by initialisation: pretrained solid, supervised dotted, random (the floor) dashed."""
    return {"pretrained": "-", "supervised": ":"}.get(init, "--")


class _Colours:
    """One colour per compared model (run x task x ...), shared by its inits: with several runs on one axis
    each run's pretrained line and its random floor must read as a pair, not as unrelated curves."""

    def __init__(self) -> None:
        self.cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self.given: dict[tuple[Any, ...], str] = {}

    def __call__(self, key: tuple[Any, ...]) -> str:
        return self.given.setdefault(key, self.cycle[len(self.given) % len(self.cycle)])


def plot_label_efficiency(runs: Runs, metric: str, path: Path) -> Path | None:
    """Metric vs label fraction (log x, ticks at the measured fractions), mean +- std over seeds; one line
    per run x protocol x init, a colour per run x protocol and a line style per init."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = 0
    curves = {run_name: label_efficiency(rows, metric) for run_name, rows in runs.items()}
    tasks = {task for c in curves.values() for (_, task, _) in c}
    colours = _Colours()
    fractions: set[float] = set()
    for run_name, curve in curves.items():
        for (kind, task, init), by_frac in sorted(curve.items()):
            fr = sorted(by_frac)
            fractions.update(fr)
            mean = np.array([np.mean(by_frac[f]) for f in fr])
            std = np.array([_std(by_frac[f]) for f in fr])
            label = " ".join([*([run_name] if len(runs) > 1 else []), kind, *([task] if len(tasks) > 1 else []), init])
            colour = colours((run_name, kind, task))
            ax.plot(fr, mean, marker="o", lw=1.5, ls=_init_style(init), color=colour, label=label)
            ax.fill_between(fr, mean - std, mean + std, color=colour, alpha=0.15)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    # Log ticks (10^-1, 10^0) would hide which fractions were measured: tick exactly those.
    ax.set_xticks(sorted(fractions), [f"{f:g}" for f in sorted(fractions)])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("label fraction of the training split")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"label efficiency: {metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a line
    return _save(fig, path)


def plot_run(run_dir: str | Path) -> list[Path]:
    """The plots of one run directory into ``run_dir/plots``."""
    rd = RunDir(run_dir)
    made = []
    log = read_jsonl(rd.metrics_jsonl)
    made += [p for p in (plot_losses(log, rd.plots_dir / "loss.png", rd.name),
                         plot_training(log, rd.plots_dir / "training.png", rd.name)) if p]
    results = rd.read_results()
    if results is not None:
        made += _result_plots({rd.name: results.rows}, rd.plots_dir)
    return made


# ------------------------------------------------------------------------------------ comparing runs


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (ddof = 1); 0.0 for a single seed (the table shows n)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _primary_metrics(rows: list[ResultRow]) -> list[str]:
    """The primary metric of each supervised task present (macro AUROC, MAE), in a stable order."""
    return list(dict.fromkeys(r.primary for r in rows if r.task_type in PRIMARY))


def load_runs(run_dirs: list[str | Path]) -> Runs:
    """Run name (the directory's name, or ``parent/name`` where names repeat) -> its results.json rows."""
    runs: Runs = {}
    for d, name in zip(run_dirs, run_names(run_dirs), strict=True):
        results = RunDir(d).read_results()
        if results is None:
            raise UserError(f"{d}: no results.json (not a finished run directory?)")
        runs[name] = results.rows
    return runs


def summarise(runs: Runs) -> list[dict[str, Any]]:
    """One entry per (run, kind, task, init, label_fraction, conditions..., metric).

    ``mean`` and ``std`` (ddof = 1) over the seeds' values, ``n`` seeds, and ``ci_low``/``ci_high``: each
    seed's 95% interval (results.json ``ci95``), averaged over the seeds (NaN where the rows carry none for
    that metric). Undefined (None) metric values are left out. Conditions appear as their own keys. ``mark``:
    the rows' `ResultRow.mark` of the metric (a macro AUROC leaving classes out in some seed), or ``""``.
    """
    groups: dict[tuple[Any, ...], dict[str, list[Any]]] = {}
    primary: dict[tuple[Any, ...], str] = {}
    marks: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for run, rows in runs.items():
        for r in rows:
            key = (run, *(getattr(r, f) for f in GROUP_FIELDS), tuple(r.conditions.items()))
            g = groups.setdefault(key, defaultdict(list))
            primary[key] = r.primary
            for metric, v in r.metrics.items():
                if r.mark(metric):
                    marks[key][metric] = r.mark(metric)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    g[metric].append(float(v))
                    ci = r.ci95.get(metric)
                    if ci and all(isinstance(c, (int, float)) and math.isfinite(c) for c in ci):
                        g[f"ci:{metric}"].append(tuple(ci))
                for ref, v in r.versus.items():
                    d, p = (v.get("delta") or {}).get(metric), (v.get("p_value") or {}).get(metric)
                    if isinstance(d, (int, float)) and isinstance(p, (int, float)):
                        g[f"vs:{ref}:{metric}"].append((float(d), float(p)))
    out = []
    for key, g in groups.items():
        for metric, values in g.items():
            if metric.startswith(("ci:", "vs:")):
                continue
            cis = g.get(f"ci:{metric}", [])
            versus = {k.split(":")[1]: v for k, v in g.items() if k.startswith("vs:") and k.endswith(f":{metric}")}
            out.append({
                "run": key[0], **dict(zip(GROUP_FIELDS, key[1:-1], strict=True)), **dict(key[-1]),
                "conditions": [k for k, _ in key[-1]], "metric": metric, "primary": primary[key],
                "mean": float(np.mean(values)), "std": _std(values), "n": len(values),
                "ci_low": float(np.mean([c[0] for c in cis])) if cis else float("nan"),
                "ci_high": float(np.mean([c[1] for c in cis])) if cis else float("nan"),
                "mark": marks[key].get(metric, ""),
                # Paired difference to each reference init: mean ± std of the seeds' deltas, median p.
                "versus": {ref: {"delta": float(np.mean([d for d, _ in dp])), "delta_std": _std([d for d, _ in dp]),
                                 "p": float(np.median([p for _, p in dp]))} for ref, dp in versus.items()},
            })
    return out


def _condition_fields(summary: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for s in summary for k in s.get("conditions", [])))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def table_csv(summary: list[dict[str, Any]]) -> str:
    """The summary as CSV, full precision, one line per (group, metric)."""
    fields = ["run", *GROUP_FIELDS, *_condition_fields(summary), "metric", "mean", "std", "n", "ci_low", "ci_high"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in summary:
        w.writerow({k: ("" if s.get(k) is None else (repr(s[k]) if isinstance(s[k], float) else s[k])) for k in fields})
    return buf.getvalue()


def table_markdown(summary: list[dict[str, Any]]) -> str:
    """One Markdown table per (protocol, task): a row per run x init x fraction x condition, a column per
    metric showing ``mean ± std`` (4 decimals) and, where the rows had one, the 95% bootstrap interval; and a
    column per reference init with the pretrained rows' paired difference of the primary metric. A mean whose
    rows left classes out of their macro AUROC carries their mark (`rows.EXCLUDED_MARK`), explained at the top."""
    lines = ["# ecgforge report", "",
             "mean ± std over seeds (std with ddof = 1; n = seeds); [low, high] = the rows' 95% interval "
             "(bootstrap over test records; over patients for identification), averaged "
             "over seeds. Δ vs R: the pretrained rows' paired difference to init R in the primary metric on the "
             "same test records and resamples (mean ± std over seeds), p = median over seeds of the paired "
             "bootstrap p-value.", ""]
    if any(s.get("mark") for s in summary):
        lines[2] += f" {EXCLUDED_LEGEND}."
    by_table: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_table[(str(s["kind"]), str(s["task"]))].append(s)
    for (kind, task), items in by_table.items():
        metrics = list(dict.fromkeys(s["metric"] for s in items))
        extra = _condition_fields(items)
        primary = next((s["metric"] for s in items if s.get("primary") == s["metric"]), metrics[0])
        refs = list(dict.fromkeys(ref for s in items if s["metric"] == primary for ref in s.get("versus", {})))
        head = ["run", "init", "label_fraction", *extra, "n", *metrics, *(f"Δ vs {ref}" for ref in refs)]
        lines += [f"## {kind}: {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        for s in items:
            rows.setdefault((s["run"], s["init"], s["label_fraction"], *(s.get(f) for f in extra)), {})[s["metric"]] = s
        for key, cells in rows.items():
            n = max(c["n"] for c in cells.values())
            vals = []
            for m in metrics:
                c = cells.get(m)
                if c is None:
                    vals.append("")
                    continue
                cell = f"{c['mean']:.4f}{c.get('mark', '')} ± {c['std']:.4f}"
                if not math.isnan(c["ci_low"]):
                    cell += f" [{c['ci_low']:.4f}, {c['ci_high']:.4f}]"
                vals.append(cell)
            for ref in refs:
                v = (cells.get(primary) or {}).get("versus", {}).get(ref)
                vals.append("" if v is None else f"{v['delta']:+.4f} ± {v['delta_std']:.4f}, p = {v['p']:.3g}")
            lines.append("| " + " | ".join([*map(_fmt, key), str(n), *vals]) + " |")
        lines.append("")
    return "\n".join(lines)


def condition_curves(runs: Runs, kind: str, condition: str, metric: str) -> dict[tuple[str, str, str, float], dict[Any, list[float]]]:
    """(run, task, init, fraction) -> value of ``condition`` -> metric over seeds, for the rows of ``kind``
    whose other conditions are at their reference value (the reference row's), in the order tested."""
    curves: dict[tuple[str, str, str, float], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run, rows in runs.items():
        rows = [r for r in rows if r.kind == kind and condition in r.conditions]
        ref = next((r.conditions for r in rows if r.reference), None)
        if ref is None:
            continue
        for r in rows:
            v = r.value(metric)
            if v is not None and all(r.conditions.get(k) == ref.get(k) for k in r.conditions if k != condition):
                curves[(run, r.task, r.init, float(r.label_fraction))][r.conditions[condition]].append(v)
    return curves


def plot_condition(runs: Runs, kind: str, condition: str, metric: str, path: Path) -> Path | None:
    """Metric vs one test condition of a protocol (e.g. robustness: ``noise_level``, ``leads``), mean ± std
    over seeds; one line per run x task x init x label fraction, starting at the reference condition."""
    curves = condition_curves(runs, kind, condition, metric)
    return _condition_plot(curves, runs, metric, path, condition.replace("_", " "), f"{kind}: {metric} vs {condition}")


def _condition_plot(curves: dict[tuple[str, str, str, float], dict[Any, list[float]]], runs: dict[str, Any],
                    metric: str, path: Path, xlabel: str, title: str) -> Path | None:
    # The clean, 12-lead condition alone is the reference of both curves, not a curve: a recipe that tested no
    # noise level (or no lead subset) gets no figure rather than one point drawn as if it were a result.
    if len({x for by_x in curves.values() for x in by_x}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    tasks = {k[1] for k in curves}
    fracs = {k[3] for k in curves}
    colours = _Colours()
    order = list(runs)  # runs in the order given, as in the label-efficiency figure: a run keeps its colour
    for (run, task, init, frac), by_x in sorted(curves.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1:])):
        xs = list(by_x)  # the order tested: the reference condition first
        mean = np.array([np.mean(by_x[x]) for x in xs])
        std = np.array([_std(by_x[x]) for x in xs])
        label = " ".join([*([run] if len(runs) > 1 else []), *([task] if len(tasks) > 1 else []), init,
                          *([f"{frac:g} labels"] if len(fracs) > 1 else [])])
        pos = [str(x) for x in xs]  # categorical: a lead subset or a level, in the order tested
        colour = colours((run, task, frac))
        ax.plot(pos, mean, marker="o", lw=1.5, ls=_init_style(init), color=colour, label=label)
        ax.fill_between(pos, mean - std, mean + std, color=colour, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title + " (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a line
    return _save(fig, path)


def _result_plots(runs: Runs, out_dir: Path) -> list[Path]:
    made = []
    all_rows = [r for rows in runs.values() for r in rows]
    for metric in _primary_metrics(all_rows):
        # One label-efficiency figure per protocol: all of them on one axis is unreadable past a few runs.
        for kind in dict.fromkeys(r.kind for r in all_rows):
            p = plot_label_efficiency({n: [r for r in rows if r.kind == kind] for n, rows in runs.items()},
                                      metric, out_dir / f"label_efficiency_{kind}_{metric}.png")
            if p:
                made.append(p)
        kinds_conditions = dict.fromkeys((r.kind, c) for r in all_rows for c in r.conditions)
        for kind, condition in kinds_conditions:
            p = plot_condition(runs, kind, condition, metric, out_dir / f"{kind}_{condition}_{metric}.png")
            if p:
                made.append(p)
    return made


# ------------------------------------------------------------------------------ objective figures


@dataclass
class TrainedObjective:
    """A run's objective rebuilt from ``resolved.toml`` with the weights of its last complete checkpoint, and
    the run's plan (its cache, window and splits)."""

    objective: Any  # an ecgforge.objectives.base.Objective
    plan: RunPlan
    checkpoint: Path


def load_trained_objective(run_dir: str | Path) -> TrainedObjective | None:
    """The run's objective with its last checkpoint's weights, if the objective draws figures
    (``Objective.figures``); None otherwise (no resolved.toml, no [ssl], no figures, no checkpoint)."""
    from safetensors.torch import load_file

    from ecgforge.app.recipes import load_run_recipe
    from ecgforge.data.cache import Cache
    from ecgforge.encoders import ENCODERS
    from ecgforge.objectives import OBJECTIVES
    from ecgforge.objectives.base import Objective
    from ecgforge.registry import build

    rd = RunDir(run_dir)
    if not rd.resolved_toml.is_file():
        return None
    recipe = load_run_recipe(rd.resolved_toml)
    if recipe.ssl is None or OBJECTIVES[recipe.ssl.kind].figures is Objective.figures:
        return None
    ckpt = rd.latest_checkpoint()
    if ckpt is None:
        return None
    plan = RunPlan.build(recipe, Cache(recipe.data.cache))
    objective = build(OBJECTIVES, recipe.ssl, plan.ctx.replace(encoder=build(ENCODERS, recipe.model.encoder)))
    # A compiled encoder saves its weights under "_orig_mod."; the rebuilt one is not compiled.
    state = {k.replace("_orig_mod.", ""): v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    try:
        objective.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{ckpt}: checkpoint does not fit {recipe.ssl.kind}: {str(exc).splitlines()[0]}") from None
    return TrainedObjective(objective.eval(), plan, ckpt)


def plot_objective_figures(run_dir: str | Path, out_dir: Path, name: str, n_ecgs: int = 3) -> list[Path]:
    """The figures a run's objective draws (``Objective.figures``) over the first window of ``n_ecgs`` test
    (or pretraining) ECGs, with its last checkpoint's weights, as ``out_dir/<figure>_<name>.png``."""
    import torch

    from ecgforge.data.dataset import TiledWindows

    run = load_trained_objective(run_dir)
    if run is None:
        return []
    plan = run.plan
    idx = plan.split_indices["test" if "test" in plan.split_indices else plan.recipe.data.pretrain_split][:n_ecgs]
    if len(idx) == 0:
        return []
    tiles = TiledWindows(plan.cache, idx, plan.window)
    first = [int(np.flatnonzero(tiles.record_of == p)[0]) for p in range(len(idx))]  # first window of each ECG
    x = torch.stack([tiles[k]["x"] for k in first])
    with torch.no_grad():
        figures = run.objective.figures({"x": x}, fs_hz=plan.cache.fs_hz, leads=list(plan.cache.leads),
                                        title=f"{Path(run_dir).name}: {run.checkpoint.name} ")
    return [_save(fig, out_dir / f"{figure}_{name}.png") for figure, fig in figures.items()]


def make_report(run_dirs: list[str | Path], out_dir: str | Path, comparison: Comparison | None = None) -> list[Path]:
    """``report.md`` (with the score card and the paired differences between runs), ``report.csv``,
    ``paired.csv`` and ``paired.json`` (every metric of every compared row), the PNG plots (``scorecard.png``
    among them) and ``report.html`` (all of it on one self-contained page) comparing ``run_dirs`` into
    ``out_dir``. ``comparison``: the paired differences (`between.compare_runs`); default every run against
    the first (none for a single run)."""
    out_dir = Path(out_dir)
    runs = load_runs(run_dirs)
    summary = summarise(runs)
    cells = score_card(runs)
    if comparison is None and len(run_dirs) > 1:
        comparison = compare_runs(run_dirs)
    if comparison is not None and not comparison.pairs:
        comparison = None
    made = [out_dir / "report.md", out_dir / "report.csv"]
    between = "" if comparison is None else "\n" + comparison_markdown(comparison)
    atomic_write_text(made[0], table_markdown(summary) + card_markdown(runs, cells) + between)
    atomic_write_text(made[1], table_csv(summary))
    if comparison is not None:
        made += [out_dir / "paired.csv", out_dir / "paired.json"]
        atomic_write_text(made[-2], comparison_csv(comparison))
        atomic_write_json(made[-1], comparison_json(comparison))
    card_png = plot_card(runs, cells, out_dir / "scorecard.png")
    made += [card_png] if card_png else []
    made += _result_plots(runs, out_dir)
    for d, name in zip(run_dirs, runs, strict=True):
        p = plot_training(read_jsonl(RunDir(d).metrics_jsonl), out_dir / f"training_{name.replace('/', '_')}.png", name)
        made += [p] if p else []
    for d, name in zip(run_dirs, runs, strict=True):
        made += plot_objective_figures(d, out_dir, name.replace("/", "_"))
    made.append(write_html(out_dir / "report.html", runs, summary, cells, [p for p in made if p.suffix == ".png"], card_png,
                           comparison))
    return made
