"""The guard every run gets: a pretrained encoder that is worse than a random one is said so, not buried.

After the evaluations, every ``[[eval]]`` table's pretrained rows are compared with its random-init rows (same
protocol, task and label fractions). For each table where the pretrained encoder is worse at every label
fraction, the run prints one line naming the table and records it in results.json ``"warnings"``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ecgforge.evaluation.rows import ResultRow

#: Primary metrics where lower is better; every other primary metric (AUROC, accuracy, top-1) is higher-better.
_LOWER_IS_BETTER = {"mae"}


def worse_than_random(rows: list[ResultRow], label: str) -> str | None:
    """One line if the pretrained rows of ``rows`` (one evaluation table) are worse than its random-init rows
    at every label fraction both have (mean of the primary metric over seeds, reference condition only);
    else None (also when the table has no random-init reference).

    Args:
        rows: the rows of one ``[[eval]]`` table.
        label: how the line names the table, e.g. ``eval [0] linear_probe superdiagnostic``.
    """
    by: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    primary = None
    for row in rows:
        value = row.metrics.get(row.primary)
        if not row.reference or row.init not in ("pretrained", "random") or value is None:
            continue
        primary = row.primary
        by[row.init][row.label_fraction].append(float(value))
    fractions = sorted(set(by["pretrained"]) & set(by["random"]))
    if not fractions or primary is None:
        return None
    sign = -1.0 if primary in _LOWER_IS_BETTER else 1.0
    pre = {f: float(np.mean(by["pretrained"][f])) for f in fractions}
    rnd = {f: float(np.mean(by["random"][f])) for f in fractions}
    if not all(sign * (pre[f] - rnd[f]) < 0 for f in fractions):
        return None
    pairs = ", ".join(f"{f:g}: {pre[f]:.3f} vs {rnd[f]:.3f}" for f in fractions)
    return (f"the pretrained encoder is worse than a random one at every label fraction of {label} "
            f"({primary}, pretrained vs random: {pairs})")


def table_label(i: int, ev: object) -> str:
    """How a warning names ``[[eval]]`` table ``i``: ``eval [1] linear_probe sex``."""
    return f"eval [{i}] {getattr(ev, 'kind', '')} {getattr(ev, 'task', '')}".rstrip()


def guard_tables(tables: list[tuple[str, list[ResultRow]]]) -> list[str]:
    """The `worse_than_random` line of each (label, rows) table that trips it, in table order."""
    return [line for label, rows in tables if (line := worse_than_random(rows, label)) is not None]
