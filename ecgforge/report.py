"""Pictures and tables of runs (PNG via matplotlib, headless; Markdown and CSV tables).

``make_report(run_dirs, out_dir)`` compares runs: a table of every results row group (mean ± std over seeds,
with the test-record bootstrap 95% interval averaged over seeds), label-efficiency curves, noise-robustness
and lead-subset curves (``robustness`` rows) and, for runs whose objective has a ``masks(x)`` method
(adversarial masking, Bo et al. 2022), the learned masks drawn over a few test ECGs.
"""

from __future__ import annotations

import csv
import io
import json
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

from ecgforge.artifacts import atomic_write_text, read_jsonl  # noqa: E402
from ecgforge.errors import UserError  # noqa: E402

#: The fields that, with the run, make one table row; seeds are what a group averages over.
GROUP_FIELDS = ("kind", "task", "init", "label_fraction", "noise_level", "leads")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
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


def label_efficiency(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str, str], dict[float, list[float]]]:
    """(protocol, task, init) -> fraction -> metric values over seeds."""
    out: dict[tuple[str, str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not _clean(r) or r.get("kind") == "robustness":
            continue  # robustness rows are plotted against their test condition, not here
        v = r.get("metrics", {}).get(metric)
        if isinstance(v, (int, float)):
            out[(r["kind"], r["task"], r["init"])][float(r.get("label_fraction", 1.0))].append(float(v))
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


def plot_label_efficiency(runs: dict[str, list[dict[str, Any]]], metric: str, path: Path) -> Path | None:
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
    run_dir = Path(run_dir)
    made = []
    loss = plot_losses(read_jsonl(run_dir / "metrics" / "train.jsonl"), run_dir / "plots" / "loss.png", run_dir.name)
    if loss:
        made.append(loss)
    results = run_dir / "results.json"
    if results.is_file():
        rows = json.loads(results.read_text()).get("eval", [])
        made += _result_plots({run_dir.name: rows}, run_dir / "plots")
    return made


# ------------------------------------------------------------------------------------ comparing runs


def _clean(row: dict[str, Any]) -> bool:
    """A row tested on clean, 12-lead inputs (every protocol's rows but the robustness conditions)."""
    return int(row.get("noise_level", 0) or 0) == 0 and str(row.get("leads", "12")) == "12"


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (ddof = 1); 0.0 for a single seed (the table shows n)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _primary_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The model-selection metric of each task type present (macro AUROC, MAE), in a stable order."""
    from ecgforge.evaluation.scoring import PRIMARY

    wanted = {PRIMARY[r["task_type"]] for r in rows if r.get("task_type") in PRIMARY}
    return [m for m in ("macro_auroc", "mae") if m in wanted]


def load_runs(run_dirs: list[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Run name (the directory's name, or ``parent/name`` where names repeat) -> its results.json rows."""
    dirs = [Path(d) for d in run_dirs]
    names = [d.name for d in dirs]
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        f = d / "results.json"
        if not f.is_file():
            raise UserError(f"{d}: no results.json (not a finished run directory?)")
        try:
            rows = json.loads(f.read_text()).get("eval", [])
        except json.JSONDecodeError as exc:
            raise UserError(f"{f}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        name = d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}"
        runs[name] = rows
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per (run, kind, task, init, label_fraction, noise_level, leads, metric).

    ``mean`` and ``std`` (ddof = 1) over the seeds' values, ``n`` seeds, and ``ci_low``/``ci_high``: each
    seed's bootstrap 95% interval over test records (results.json ``ci95``), averaged over the seeds
    (NaN where the rows carry none for that metric). Undefined (None) metric values are left out.
    """
    groups: dict[tuple[Any, ...], dict[str, list[Any]]] = {}
    for run, rows in runs.items():
        for r in rows:
            key = (run, *(r.get(f) for f in GROUP_FIELDS))
            g = groups.setdefault(key, defaultdict(list))
            for metric, v in r.get("metrics", {}).items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    g[metric].append(float(v))
                    ci = r.get("ci95", {}).get(metric)
                    if ci and all(isinstance(c, (int, float)) and math.isfinite(c) for c in ci):
                        g[f"ci:{metric}"].append(tuple(ci))
    out = []
    for key, g in groups.items():
        for metric, values in g.items():
            if metric.startswith("ci:"):
                continue
            cis = g.get(f"ci:{metric}", [])
            out.append({
                "run": key[0], **dict(zip(GROUP_FIELDS, key[1:], strict=True)), "metric": metric,
                "mean": float(np.mean(values)), "std": _std(values), "n": len(values),
                "ci_low": float(np.mean([c[0] for c in cis])) if cis else float("nan"),
                "ci_high": float(np.mean([c[1] for c in cis])) if cis else float("nan"),
            })
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def table_csv(summary: list[dict[str, Any]]) -> str:
    """The summary as CSV, full precision, one line per (group, metric)."""
    fields = ["run", *GROUP_FIELDS, "metric", "mean", "std", "n", "ci_low", "ci_high"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in summary:
        w.writerow({k: ("" if s.get(k) is None else (repr(s[k]) if isinstance(s[k], float) else s[k])) for k in fields})
    return buf.getvalue()


def table_markdown(summary: list[dict[str, Any]]) -> str:
    """One Markdown table per (protocol, task): a row per run x init x fraction x condition, a column per
    metric showing ``mean ± std`` (4 decimals) and, where the rows had one, the 95% bootstrap interval."""
    lines = ["# ecgforge report", "",
             "mean ± std over seeds (std with ddof = 1; n = seeds); [low, high] = the rows' 95% interval "
             "(bootstrap over test records; Wilson interval over probes for identification top-1), averaged "
             "over seeds.", ""]
    by_table: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_table[(str(s["kind"]), str(s["task"]))].append(s)
    for (kind, task), items in by_table.items():
        metrics = list(dict.fromkeys(s["metric"] for s in items))
        extra = [f for f in ("noise_level", "leads") if any(s.get(f) is not None for s in items)]
        head = ["run", "init", "label_fraction", *extra, "n", *metrics]
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
                cell = f"{c['mean']:.4f} ± {c['std']:.4f}"
                if not math.isnan(c["ci_low"]):
                    cell += f" [{c['ci_low']:.4f}, {c['ci_high']:.4f}]"
                vals.append(cell)
            lines.append("| " + " | ".join([*map(_fmt, key), str(n), *vals]) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_noise_robustness(runs: dict[str, list[dict[str, Any]]], metric: str, path: Path) -> Path | None:
    """Metric vs noise level (0 = clean, 1..6 = Mehari & Strodthoff's levels), mean ± std over seeds; one
    line per run x task x init x label fraction (12 leads)."""
    curves: dict[tuple[str, str, str, float], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run, rows in runs.items():
        for r in rows:
            v = r.get("metrics", {}).get(metric)
            if r.get("kind") == "robustness" and str(r.get("leads")) == "12" and isinstance(v, (int, float)):
                curves[(run, r["task"], r["init"], float(r.get("label_fraction", 1.0)))][int(r["noise_level"])].append(float(v))
    return _condition_plot(curves, runs, metric, path, "noise level (0 = clean)", f"noise robustness: {metric}")


def plot_lead_subsets(runs: dict[str, list[dict[str, Any]]], metric: str, path: Path) -> Path | None:
    """Metric vs number of leads kept (12, 6, 3, 2, 1; clean signal), mean ± std over seeds."""
    curves: dict[tuple[str, str, str, float], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run, rows in runs.items():
        for r in rows:
            v = r.get("metrics", {}).get(metric)
            if r.get("kind") == "robustness" and int(r.get("noise_level", 0)) == 0 and isinstance(v, (int, float)):
                curves[(run, r["task"], r["init"], float(r.get("label_fraction", 1.0)))][int(r["leads"])].append(float(v))
    return _condition_plot(curves, runs, metric, path, "leads kept (others zeroed)", f"reduced leads: {metric}",
                           invert=True)


def _condition_plot(curves: dict[tuple[str, str, str, float], dict[int, list[float]]], runs: dict[str, Any],
                    metric: str, path: Path, xlabel: str, title: str, invert: bool = False) -> Path | None:
    # The clean, 12-lead condition alone is the reference of both curves, not a curve: a recipe that tested no
    # noise level (or no lead subset) gets no figure rather than one point drawn as if it were a result.
    if len({x for by_x in curves.values() for x in by_x}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    tasks = {k[1] for k in curves}
    fracs = {k[3] for k in curves}
    colours = _Colours()
    xs_all: set[int] = set()
    order = list(runs)  # runs in the order given, as in the label-efficiency figure: a run keeps its colour
    for (run, task, init, frac), by_x in sorted(curves.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1:])):
        xs = sorted(by_x, reverse=invert)
        xs_all.update(xs)
        mean = np.array([np.mean(by_x[x]) for x in xs])
        std = np.array([_std(by_x[x]) for x in xs])
        label = " ".join([*([run] if len(runs) > 1 else []), *([task] if len(tasks) > 1 else []), init,
                          *([f"{frac:g} labels"] if len(fracs) > 1 else [])])
        pos = [str(x) for x in xs] if invert else xs
        colour = colours((run, task, frac))
        ax.plot(pos, mean, marker="o", lw=1.5, ls=_init_style(init), color=colour, label=label)
        ax.fill_between(pos, mean - std, mean + std, color=colour, alpha=0.15)
    if not invert:
        ax.set_xticks(sorted(xs_all))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title + " (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a line
    return _save(fig, path)


def _result_plots(runs: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    made = []
    all_rows = [r for rows in runs.values() for r in rows]
    for metric in _primary_metrics(all_rows):
        # One label-efficiency figure per protocol: all of them on one axis is unreadable past a few runs.
        kinds = dict.fromkeys(r["kind"] for r in all_rows if r.get("kind") not in ("robustness", "identification"))
        for kind in kinds:
            p = plot_label_efficiency({n: [r for r in rows if r.get("kind") == kind] for n, rows in runs.items()},
                                      metric, out_dir / f"label_efficiency_{kind}_{metric}.png")
            if p:
                made.append(p)
        for fn, stem in ((plot_noise_robustness, "noise_robustness"), (plot_lead_subsets, "lead_subsets")):
            p = fn(runs, metric, out_dir / f"{stem}_{metric}.png")
            if p:
                made.append(p)
    return made


# ---------------------------------------------------------------------------------------- masks


def _latest_checkpoint(run_dir: Path) -> Path | None:
    d = run_dir / "checkpoints"
    found = [p for p in d.glob("step_*") if (p / "model.safetensors").is_file()] if d.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("_")[1])) if found else None


@dataclass
class MaskerRun:
    """An adversarial-masking run's objective with its checkpoint weights, and the data it was trained on."""

    objective: Any
    cache: Any
    recipe: Any
    window: int
    checkpoint: Path


def load_masker_objective(run_dir: str | Path) -> MaskerRun | None:
    """The run's objective rebuilt from ``resolved.toml`` with its last checkpoint's weights, if that objective
    has a ``masks(x)`` method (adversarial masking); None otherwise (no [ssl], no checkpoint, no masks)."""
    from safetensors.torch import load_file

    from ecgforge.data.cache import Cache
    from ecgforge.recipe import load_recipe
    from ecgforge.registry import build

    run_dir = Path(run_dir)
    if not (run_dir / "resolved.toml").is_file():
        return None
    recipe = load_recipe(run_dir / "resolved.toml")
    ckpt = _latest_checkpoint(run_dir)
    if recipe.ssl is None or ckpt is None:
        return None
    from ecgforge.objectives import OBJECTIVES

    if not hasattr(OBJECTIVES.get(recipe.ssl.kind), "masks"):
        return None
    cache = Cache(recipe.data.cache)
    window = int(round(recipe.data.window_s * cache.fs_hz))
    objective = build(recipe.ssl, encoder=build(recipe.model.encoder), fs_hz=cache.fs_hz, window=window,
                      n_leads=cache.n_leads)
    # A compiled encoder saves its weights under "_orig_mod."; the rebuilt one is not compiled.
    state = {k.replace("_orig_mod.", ""): v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    try:
        objective.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{ckpt}: checkpoint does not fit {recipe.ssl.kind}: {str(exc).splitlines()[0]}") from None
    return MaskerRun(objective.eval(), cache, recipe, window, ckpt)


def plot_masks(x: np.ndarray, masks: np.ndarray, fs_hz: float, leads: list[str], path: Path, title: str = "",
               show_leads: tuple[str, ...] = ("II", "V1")) -> Path:
    """Learned masks over ECGs: one panel per ECG and lead, the signal in black, each mask's value (0..1)
    as a coloured line on the right axis and the time steps where it exceeds 0.5 shaded.

    Args:
        x: ``(B, leads, T)`` mV; masks: ``(B, M, T)`` in [0, 1] (Bo et al.: one mask for all leads).
    """
    shown = [lead for lead in show_leads if lead in leads] or [leads[0]]
    b, m = masks.shape[0], masks.shape[1]
    t = np.arange(x.shape[-1]) / fs_hz
    fig, axes = plt.subplots(b, len(shown), figsize=(5.2 * len(shown), 1.9 * b), squeeze=False, sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(b):
        for j, lead in enumerate(shown):
            ax = axes[i, j]
            sig = x[i, leads.index(lead)]
            ax.plot(t, sig, color="black", lw=0.8)
            lo, hi = float(sig.min()), float(sig.max())
            pad = 0.1 * (hi - lo + 1e-6)
            for k in range(m):
                ax.fill_between(t, lo - pad, hi + pad, where=masks[i, k] > 0.5, color=colours[k % len(colours)],
                                alpha=0.25, step="mid", lw=0)
            ax2 = ax.twinx()
            for k in range(m):
                ax2.plot(t, masks[i, k], color=colours[k % len(colours)], lw=1.0, label=f"mask {k}")
            ax2.set_ylim(-0.05, 1.05)
            ax2.set_ylabel("mask", fontsize=7)
            ax.set_ylabel(f"ECG {i} {lead} (mV)", fontsize=7)
            if i == 0 and j == len(shown) - 1:
                ax2.legend(frameon=False, fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.subplots_adjust(wspace=0.4, hspace=0.3)  # room for each panel's right-hand mask axis
    fig.suptitle(title or "learned masks (shaded where mask > 0.5)", fontsize=10)
    return _save(fig, path)


def plot_run_masks(run_dir: str | Path, path: Path, n_ecgs: int = 3) -> Path | None:
    """Draw the masks of an adversarial-masking run's last checkpoint over ``n_ecgs`` test (or first) ECGs."""
    import torch

    run = load_masker_objective(run_dir)
    if run is None:
        return None
    from ecgforge.data.dataset import TiledWindows, select

    cache, recipe = run.cache, run.recipe
    split = "test" if "test" in recipe.data.splits else recipe.data.pretrain_split
    idx = select(cache, recipe.data.splits[split], recipe.data.exclude_ptbxl_overlap)[:n_ecgs]
    if len(idx) == 0:
        return None
    tiles = TiledWindows(cache, idx, run.window)
    first = [int(np.flatnonzero(tiles.record_of == p)[0]) for p in range(len(idx))]  # first window of each ECG
    x = torch.stack([tiles[k]["x"] for k in first])
    with torch.no_grad():
        masks = run.objective.masks(x).float().numpy()
    return plot_masks(x.numpy(), masks, cache.fs_hz, list(cache.leads), path,
                      f"{Path(run_dir).name}: {run.checkpoint.name} masks (shaded where > 0.5)")


def make_report(run_dirs: list[str | Path], out_dir: str | Path) -> list[Path]:
    """``report.md``, ``report.csv`` and the PNG plots comparing ``run_dirs`` into ``out_dir``."""
    out_dir = Path(out_dir)
    runs = load_runs(run_dirs)
    summary = summarise(runs)
    made = [out_dir / "report.md", out_dir / "report.csv"]
    atomic_write_text(made[0], table_markdown(summary))
    atomic_write_text(made[1], table_csv(summary))
    made += _result_plots(runs, out_dir)
    for d, name in zip(run_dirs, runs, strict=True):
        p = plot_run_masks(d, out_dir / f"masks_{name.replace('/', '_')}.png")
        if p:
            made.append(p)
    return made
