"""The reliability ledger: what the suite tried, per category, and how each input ended.

Every case records itself *before* its assertions run, so a failing case still shows in the counts (as a
traceback or a lost result), and the summary printed at the end of the session is what actually happened.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

CATEGORIES = ("recipes", "records", "interruptions", "concurrency", "disk", "workers", "inputs", "launch", "corruption",
              "soak")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Tally:
    """Counts for one category."""

    tried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    lost: int = 0


LEDGER: dict[str, Tally] = {}


def record(category: str, outcome: str, *, output: str = "", traceback: bool = False, lost: int = 0) -> None:
    """Count one input of ``category`` that ended in ``outcome``.

    Args:
        output: the command's stdout + stderr; a Python traceback in it is counted.
        traceback: an exception escaped in-process (CliRunner's ``result.exception``).
        lost: results, records or files that the case found missing or changed.
    """
    assert category in CATEGORIES, category
    t = LEDGER.setdefault(category, Tally())
    t.tried += 1
    t.outcomes[outcome] += 1
    t.tracebacks += int(traceback or TRACEBACK in output)
    t.lost += lost


def summary_lines() -> list[str]:
    """The table printed at the end of the run (and copied into RELIABILITY.md)."""
    lines = [f"{'category':<14} {'tried':>6} {'tracebacks':>10} {'lost':>5}  outcomes"]
    total = Tally()
    for cat in CATEGORIES:
        t = LEDGER.get(cat)
        if t is None:
            continue
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(t.outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"{cat:<14} {t.tried:>6} {t.tracebacks:>10} {t.lost:>5}  {outcomes}")
        total.tried += t.tried
        total.tracebacks += t.tracebacks
        total.lost += t.lost
    lines.append(f"{'total':<14} {total.tried:>6} {total.tracebacks:>10} {total.lost:>5}")
    return lines
