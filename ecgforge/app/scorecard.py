"""The score card: one comparison of several runs across tasks and label fractions.

Per (protocol, task, label fraction) of the reference condition, the primary metric of every run's
``pretrained`` rows (mean ± std over seeds), the run references (``random``, ``supervised``) beside them, the
best run marked, and marks of doubt:

- † the run's paired difference to its own ``random`` row is not significant: the rows' ``versus.random``
  (same test records, same bootstrap resamples; evaluation/rows.py) averaged over seeds has a 95% interval
  that contains 0. Runs whose results.json has no ``versus`` get no † and the card says so.
- ‡ the run is not distinguishable from the best other run: results.json holds no paired data *across*
  runs, so this is the unpaired check that the two runs' seed-averaged 95% intervals of the metric overlap
  (conservative: overlapping intervals can still hide a significant paired difference).
- § the macro AUROC of some of the run's rows leaves classes out (``ResultRow.mark``: no training positives
  or negatives, or undefined in test), as in the results table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgforge.evaluation.rows import EXCLUDED_LEGEND, ResultRow  # noqa: E402
from ecgforge.evaluation.scoring import PRIMARY  # noqa: E402
from ecgforge.fsio import atomic_file  # noqa: E402

#: Metrics where lower is better (the regression task's primary metric is MAE).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse"})
#: The two marks, as the card's legend explains them.
NOT_VS_RANDOM, NOT_VS_BEST = "†", "‡"
#: What the card says of a report over one run.
ONE_RUN = ("One run: there is no other run to compare it with; the card compares it with its own reference "
           "initialisations only.")


@dataclass
class Entry:
    """One run's pretrained rows in one cell of the card (a seed group).

    Attributes:
        mean, std: the metric over seeds (std ddof = 1; 0 for one seed); n: seeds.
        ci: the rows' 95% interval of the metric, averaged over seeds; None where the rows have none.
        vs_random: the paired difference to the run's random rows over seeds: ``delta`` (mean), ``ci`` (mean
            [lo, hi]), ``p`` (median p-value), ``significant``; None where results.json carries no ``versus``.
        best: the best run of the cell; tied_with_best: its interval overlaps the best other run's.
        mark: ``ResultRow.mark`` of its rows (§ where a row's macro AUROC leaves classes out), else "".
    """

    run: str
    mean: float
    std: float
    n: int
    ci: tuple[float, float] | None
    vs_random: dict[str, Any] | None
    best: bool = False
    tied_with_best: bool = False
    mark: str = ""


@dataclass
class Cell:
    """(protocol, task, label fraction, metric): every run's entry and the references' means over runs."""

    kind: str
    task: str
    label_fraction: float
    metric: str
    entries: dict[str, Entry] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)  # init -> mean over every run's seeds


def _versus(row: ResultRow) -> dict[str, Any] | None:
    """The row's paired comparisons (``evaluation.paired``), None where results.json carries none."""
    return row.versus if isinstance(row.versus, dict) and row.versus else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _paired(rows: list[ResultRow], metric: str, reference: str) -> dict[str, Any] | None:
    deltas, cis, ps = [], [], []
    for r in rows:
        ref = (_versus(r) or {}).get(reference) or {}
        d = (ref.get("delta") or {}).get(metric)
        if _finite(d):
            deltas.append(float(d))
        ci = (ref.get("ci95") or {}).get(metric)
        if ci and len(ci) == 2 and all(_finite(c) for c in ci):
            cis.append((float(ci[0]), float(ci[1])))
        p = (ref.get("p_value") or {}).get(metric)
        if _finite(p):
            ps.append(float(p))
    if not deltas:
        return None
    ci_mean = (float(np.mean([c[0] for c in cis])), float(np.mean([c[1] for c in cis]))) if cis else None
    p_med = float(median(ps)) if ps else None
    # The interval decides where there is one (it is what the table shows); else the p-value at 5%.
    significant = (not ci_mean[0] <= 0.0 <= ci_mean[1]) if ci_mean else (p_med is not None and p_med < 0.05)
    return {"delta": float(np.mean(deltas)), "delta_std": float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0,
            "ci": ci_mean, "p": p_med, "significant": significant, "n": len(deltas)}


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def score_card(runs: dict[str, list[ResultRow]]) -> list[Cell]:
    """The card's cells: supervised tasks' reference-condition rows, primary metric; tasks in the order first
    seen, each task's label fractions ascending."""
    groups: dict[tuple[str, str, float, str], dict[tuple[str, str], list[ResultRow]]] = defaultdict(lambda: defaultdict(list))
    for run, rows in runs.items():
        for r in rows:
            if r.reference and r.task_type in PRIMARY and _finite(r.value(r.primary)):
                groups[(r.kind, r.task, float(r.label_fraction), r.primary)][(run, r.init)].append(r)
    cells = []
    for (kind, task, frac, metric), by_run_init in groups.items():
        cell = Cell(kind, task, frac, metric)
        refs: dict[str, list[float]] = defaultdict(list)
        for (run, init), rows in by_run_init.items():
            values = [float(r.value(metric)) for r in rows]
            if init != "pretrained":
                refs[init] += values
                continue
            cis = [tuple(r.ci95[metric]) for r in rows if len(r.ci95.get(metric) or []) == 2
                   and all(_finite(c) for c in r.ci95[metric])]
            ci = (float(np.mean([c[0] for c in cis])), float(np.mean([c[1] for c in cis]))) if cis else None
            cell.entries[run] = Entry(run, float(np.mean(values)),
                                      float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values), ci,
                                      _paired(rows, metric, "random"), mark=max(r.mark(metric) for r in rows))
        cell.references = {init: float(np.mean(v)) for init, v in refs.items()}
        if cell.entries:
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            ranked = sorted(cell.entries.values(), key=lambda e: -sign * e.mean)
            ranked[0].best = True
            for e in ranked if len(ranked) > 1 else []:  # a run alone in its cell is tied with no other
                other = ranked[1] if e is ranked[0] else ranked[0]  # the best run other than this one
                e.tied_with_best = _overlap(e.ci, other.ci)
        cells.append(cell)
    tables = list(dict.fromkeys((c.kind, c.task, c.metric) for c in cells))  # first-seen order of tasks
    return sorted(cells, key=lambda c: (tables.index((c.kind, c.task, c.metric)), c.label_fraction))


def runs_without_paired(runs: dict[str, list[ResultRow]]) -> list[str]:
    """Runs none of whose pretrained rows carry ``versus``: the card has no † for them."""
    return [run for run, rows in runs.items()
            if not any(_versus(r) for r in rows if r.init == "pretrained")]


def marks(e: Entry) -> str:
    """The entry's marks of doubt: † (not significant vs random), ‡ (not distinguishable from the best other),
    § (classes left out of a macro AUROC)."""
    out = NOT_VS_RANDOM if e.vs_random is not None and not e.vs_random["significant"] else ""
    return out + (NOT_VS_BEST if e.tied_with_best else "") + e.mark


def entry_text(e: Entry) -> str:
    """``0.8123 ± 0.0100`` and the marks, as the Markdown and HTML cards show it."""
    return f"{e.mean:.4f} ± {e.std:.4f}{marks(e)}"


def legend(runs: dict[str, list[ResultRow]]) -> list[str]:
    """The card's reading notes, one sentence per line."""
    lines = [
        "Per protocol, task and label fraction: each run's pretrained rows, mean ± std over seeds of the "
        "primary metric (lower is better for MAE); best in bold; random and supervised: the reference "
        "initialisations, mean over every run's seeds.",
        f"{NOT_VS_RANDOM} the paired difference to the run's own random reference is not significant (its "
        "95% interval, same test records and bootstrap resamples, averaged over seeds, contains 0).",
    ]
    if len(runs) > 1:
        lines.append(f"{NOT_VS_BEST} not distinguishable from the best other run: their 95% intervals of the metric "
                     "overlap (unpaired: results.json holds no paired data across runs).")
    else:
        lines.append(ONE_RUN)
    if any(r.mark(r.primary) for rows in runs.values() for r in rows if r.init == "pretrained"):
        lines.append(EXCLUDED_LEGEND + ".")
    missing = runs_without_paired(runs)
    if missing:
        lines.append(f"No paired comparison (`versus`) in the results.json of {', '.join(missing)}: no "
                     f"{NOT_VS_RANDOM} marks for {'it' if len(missing) == 1 else 'them'}.")
    return lines


def paired_rows(cells: list[Cell]) -> list[list[str]]:
    """The paired differences to random behind the † marks, one line per (cell, run) that has them: protocol,
    task, metric, fraction, run, delta mean ± std over seeds, its seed-averaged 95% interval, median p, seeds."""
    out = []
    for c in cells:
        for e in c.entries.values():
            v = e.vs_random
            if v is None:
                continue
            ci = f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]" if v["ci"] else ""
            p = f"{v['p']:.3g}" if v["p"] is not None else ""
            out.append([c.kind, c.task, c.metric, f"{c.label_fraction:g}", e.run,
                        f"{v['delta']:+.4f} ± {v['delta_std']:.4f}{'' if v['significant'] else NOT_VS_RANDOM}", ci, p,
                        str(v["n"])])
    return out


PAIRED_HEAD = ["protocol", "task", "metric", "label_fraction", "run", "delta vs random (mean ± std over seeds)",
               "95% interval", "p (median)", "seeds"]


def card_markdown(runs: dict[str, list[ResultRow]], cells: list[Cell]) -> str:
    """The score card as a Markdown section: one table, a row per (protocol, task, fraction), a column per run."""
    if not cells:
        return ""
    names = list(runs)
    refs = [i for i in ("random", "supervised") if any(i in c.references for c in cells)]
    head = ["protocol", "task", "metric", "label_fraction", *names, *refs]
    out = ["## Score card", "", *(f"{line}  " for line in legend(runs)), "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        vals = []
        for n in names:
            e = c.entries.get(n)
            vals.append("" if e is None else (f"**{entry_text(e)}**" if e.best else entry_text(e)))
        out.append("| " + " | ".join([c.kind, c.task, c.metric, f"{c.label_fraction:g}", *vals,
                                      *(f"{c.references[i]:.4f}" if i in c.references else "" for i in refs)]) + " |")
    paired = paired_rows(cells)
    if paired:
        out += ["", "Paired differences to random (pretrained minus random on the same test records and "
                "bootstrap resamples; lower is better for MAE, so there a negative delta is a gain):", "",
                "| " + " | ".join(PAIRED_HEAD) + " |", "|" + "---|" * len(PAIRED_HEAD),
                *("| " + " | ".join(r) + " |" for r in paired)]
    return "\n".join([*out, ""])


def plot_card(runs: dict[str, list[ResultRow]], cells: list[Cell], path: Path) -> Path | None:
    """One PNG grid, a row per (protocol, task) and a column per label fraction: in each panel a bar per
    run (mean, ± std over seeds), the best one dark-edged with its value in bold, hatched where its difference
    to random is not significant (†); random dashed and supervised dotted as vertical lines."""
    cells = [c for c in cells if c.entries]
    if not cells:
        return None
    rows = list(dict.fromkeys((c.kind, c.task, c.metric) for c in cells))
    fracs = sorted({c.label_fraction for c in cells})
    names = list(runs)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    at = {(c.kind, c.task, c.metric, c.label_fraction): c for c in cells}
    fig, axes = plt.subplots(len(rows), len(fracs), figsize=(3.3 * len(fracs) + 1.2, 0.45 * len(names) * len(rows) + 1.1 * len(rows) + 0.6),
                             squeeze=False)
    for i, (kind, task, metric) in enumerate(rows):
        for j, frac in enumerate(fracs):
            ax = axes[i, j]
            c = at.get((kind, task, metric, frac))
            ax.set_yticks(range(len(names)), names if j == 0 else [""] * len(names), fontsize=8)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=7)
            if i == 0:
                ax.set_title(f"label fraction {frac:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{kind}\n{task}\n{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)", fontsize=8)
            if c is None:
                ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="grey")
                ax.set_xticks([])
                continue
            lo, hi = math.inf, -math.inf
            for k, n in enumerate(names):
                e = c.entries.get(n)
                if e is None:
                    continue
                weak = e.vs_random is not None and not e.vs_random["significant"]
                ax.barh(k, e.mean, xerr=e.std, color=colours[k % len(colours)], alpha=0.85, hatch="//" if weak else None,
                        edgecolor="black" if e.best else "none", linewidth=1.6 if e.best else 0, error_kw={"lw": 0.8})
                ax.text(e.mean + e.std, k, f" {e.mean:.3f}{marks(e)}",
                        va="center", fontsize=7, fontweight="bold" if e.best else "normal")
                lo, hi = min(lo, e.mean - e.std), max(hi, e.mean + e.std)
            for init, ls in (("random", "--"), ("supervised", ":")):
                if init in c.references:
                    ax.axvline(c.references[init], color="black", ls=ls, lw=1.0, label=init)
                    lo, hi = min(lo, c.references[init]), max(hi, c.references[init])
            span = max(hi - lo, 1e-3)
            ax.set_xlim(lo - 0.15 * span, hi + 0.45 * span)  # room on the right for the value labels
            ax.grid(alpha=0.3, axis="x")
    fig.suptitle("score card: pretrained runs per task and label fraction (bold edge = best; hatched = "
                 f"{NOT_VS_RANDOM} not significant vs random; dashed = random, dotted = supervised)", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
