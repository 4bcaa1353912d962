"""The run's claim in words: what pretraining bought over a random encoder, with its paired 95% interval.

`ecgforge run` ends with these lines, so the first thing a user reads is the point of the run: for the first
``[[eval]]`` table whose pretrained rows carry ``versus.random`` (evaluation/paired.py), the primary metric's
paired difference at each label fraction (mean over seeds of the delta and of the interval's ends, as the
score card averages them), and whether each interval lies above 0, below it, or contains it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from ecgforge.evaluation.rows import ResultRow, rows_from_json

#: Primary metrics where lower is better (a negative delta is a gain).
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def paired_by_fraction(rows: list[ResultRow]) -> tuple[ResultRow, dict[float, dict[str, float]]] | None:
    """The first table's paired differences to random, per label fraction: ``delta``, ``lo``, ``hi`` (means over
    seeds), ``n`` seeds; with the first pretrained row (its protocol, task, metric). None where no pretrained
    row carries ``versus.random`` for its primary metric."""
    def paired(r: ResultRow, metric: str) -> tuple[float, float, float] | None:
        v = r.versus.get("random") or {}
        delta, ci = (v.get("delta") or {}).get(metric), (v.get("ci95") or {}).get(metric)
        found = (delta, *ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else ()
        ok = found and all(isinstance(x, (int, float)) and math.isfinite(x) for x in found)
        return tuple(map(float, found)) if ok else None  # undefined where the test split has one class

    first = next((r for r in rows if r.init == "pretrained" and r.reference and paired(r, r.primary)), None)
    if first is None:
        return None
    acc: dict[float, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        if (r.kind, r.task, r.init, r.reference) == (first.kind, first.task, "pretrained", True):
            if (found := paired(r, first.primary)) is not None:
                acc[float(r.label_fraction)].append(found)
    by = {f: {"delta": float(np.mean([d for d, _, _ in v])), "lo": float(np.mean([lo for _, lo, _ in v])),
              "hi": float(np.mean([hi for _, _, hi in v])), "n": len(v)} for f, v in sorted(acc.items())}
    return first, by


def versus_random_lines(results: dict[str, Any]) -> list[str]:
    """The run's closing sentences (none where no row carries ``versus.random``), e.g. ``Pretraining bought
    +0.085 macro AUROC over a random encoder at 5 % of the labels (95 % CI +0.032 to +0.150), ...``."""
    rows = rows_from_json(results.get("eval", []))
    found = paired_by_fraction(rows)
    if found is None:
        return []
    first, by = found
    metric = first.primary.replace("_", " ").replace("auroc", "AUROC").replace("mae", "MAE")
    gain = -1.0 if first.primary in LOWER_IS_BETTER else 1.0
    verdict = {f: "ahead" if gain * v["lo"] > 0 and gain * v["hi"] > 0 else
               "behind" if gain * v["lo"] < 0 and gain * v["hi"] < 0 else "level" for f, v in by.items()}
    ahead_everywhere = all(x == "ahead" for x in verdict.values())
    parts = []
    for i, (f, v) in enumerate(by.items()):
        interval = f"{v['lo']:+.3f} to {v['hi']:+.3f}"
        over = " over a random encoder" if ahead_everywhere else ""
        parts.append(f"{v['delta']:+.3f} {metric}{over} at {_percent(f)} of the labels (95 % CI {interval})"
                     if i == 0 else f"{v['delta']:+.3f} at {_percent(f)} ({interval})")
    if ahead_everywhere:
        head = f"Pretraining bought {_joined(parts)}."
    else:
        head = f"Pretrained minus random encoder: {_joined(parts)}."
        named = {x: [_percent(f) for f, y in verdict.items() if y == x] for x in ("ahead", "level", "behind")}
        head += "".join([
            f" Ahead at {_joined(named['ahead'])}." if named["ahead"] else "",
            f" No difference shown at {_joined(named['level'])} (the interval contains 0)." if named["level"] else "",
            f" Worse than a random encoder at {_joined(named['behind'])}." if named["behind"] else "",
        ])
    seeds = max(v["n"] for v in by.values())
    tested = f"{first.n_test_records} test records, " if first.n_test_records else ""
    means = ", means over seeds" if seeds > 1 else ""
    return [head, f"{first.kind} on {first.task}, {tested}{seeds} seed{'s' if seeds > 1 else ''}{means}; the "
                  "intervals are paired bootstraps over patients, both encoders scored on the same resamples "
                  "(versus.random in results.json)."]
