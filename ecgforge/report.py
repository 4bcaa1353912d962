"""Pictures and tables of runs: loss curves, label-efficiency curves (PNG via matplotlib, headless)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgforge.artifacts import read_jsonl  # noqa: E402


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
        v = r.get("metrics", {}).get(metric)
        if isinstance(v, (int, float)):
            out[(r["kind"], r["task"], r["init"])][float(r.get("label_fraction", 1.0))].append(float(v))
    return out


def plot_label_efficiency(runs: dict[str, list[dict[str, Any]]], metric: str, path: Path) -> Path | None:
    """Metric vs label fraction (log x), mean +- std over seeds; one line per run x protocol x init."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = 0
    for run_name, rows in runs.items():
        for (kind, task, init), by_frac in sorted(label_efficiency(rows, metric).items()):
            fr = sorted(by_frac)
            mean = np.array([np.mean(by_frac[f]) for f in fr])
            std = np.array([np.std(by_frac[f]) for f in fr])
            label = f"{run_name} {kind} {init}" if len(runs) > 1 else f"{kind} {init}"
            line = ax.plot(fr, mean, marker="o", lw=1.5, ls="-" if init == "pretrained" else "--", label=label)[0]
            ax.fill_between(fr, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of the training split")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"label efficiency: {metric}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
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
        metrics = list(dict.fromkeys(k for r in rows for k in r.get("metrics", {})))
        for metric in metrics[:1]:
            p = plot_label_efficiency({run_dir.name: rows}, metric, run_dir / "plots" / f"label_efficiency_{metric}.png")
            if p:
                made.append(p)
    return made
