"""The guards every run gets: what would mislead a reader of the results is said so, not buried.

After the evaluations, for each ``[[eval]]`` table, the run prints one line naming the table and records it in
results.json ``"warnings"``:

- `worse_than_random`: its pretrained rows are compared with its random-init rows (same protocol, task and
  label fractions); the pretrained encoder is worse at every label fraction;
- `excluded_classes_line`: some rows' macro AUROC averages fewer classes than the task has (a training subset
  that never or always shows a class, a test split without a positive or a negative of one); those rows carry
  ``excluded_classes`` and the results table and report mark them (``rows.EXCLUDED_MARK``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ecgforge.evaluation.rows import EXCLUDED_MARK, ResultRow

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


def excluded_classes_line(rows: list[ResultRow], label: str) -> str | None:
    """One line if some rows of ``rows`` (one evaluation table) leave classes out of their macro AUROC: how many
    rows, and each reason with its classes (over all rows); else None."""
    marked = [r for r in rows if r.excluded_classes]
    if not marked:
        return None
    reasons: dict[str, list[str]] = {}
    for r in marked:
        for reason, classes in r.excluded_classes.items():
            reasons.setdefault(reason, [])
            reasons[reason] += [c for c in classes if c not in reasons[reason]]
    why = "; ".join(f"{reason.replace('_', ' ')}: {', '.join(classes)}" for reason, classes in reasons.items())
    return (f"{label}: macro_auroc leaves classes out in {len(marked)} of {len(rows)} rows ({why}); those rows are "
            f"marked {EXCLUDED_MARK} and their excluded_classes in results.json say which")


def table_label(i: int, ev: object) -> str:
    """How a warning names ``[[eval]]`` table ``i``: ``eval [1] linear_probe sex``."""
    return f"eval [{i}] {getattr(ev, 'kind', '')} {getattr(ev, 'task', '')}".rstrip()


def guard_tables(tables: list[tuple[str, list[ResultRow]]]) -> list[str]:
    """The `worse_than_random` and `excluded_classes_line` lines of each (label, rows) table that trips them,
    in table order."""
    return [line for label, rows in tables for guard in (worse_than_random, excluded_classes_line)
            if (line := guard(rows, label)) is not None]
