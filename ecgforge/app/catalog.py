"""Every component table by category: what ``ecgforge list`` prints (reading no component module)."""

from __future__ import annotations

from ecgforge.augment import AUGMENTS
from ecgforge.data.sources import SOURCES
from ecgforge.encoders import ENCODERS
from ecgforge.evaluation import PROTOCOLS
from ecgforge.maskers import MASKERS
from ecgforge.objectives import OBJECTIVES
from ecgforge.registry import Table

CATEGORIES: dict[str, Table] = {
    "sources": SOURCES,
    "encoders": ENCODERS,
    "maskers": MASKERS,
    "augment": AUGMENTS,
    "ssl": OBJECTIVES,
    "eval": PROTOCOLS,
}


def kinds() -> dict[str, list[str]]:
    """Category -> registered kinds."""
    return {name: sorted(table) for name, table in CATEGORIES.items()}
