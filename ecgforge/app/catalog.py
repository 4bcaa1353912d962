"""Every component table by category: what ``ecgforge list`` prints (reading no component module: the kinds
and the packages they come from are known from the tables' strings and the installed entry points)."""

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


def origins() -> dict[str, dict[str, str]]:
    """Category -> ``{kind: package}``, sorted by kind: ``"ecgforge"`` for built-in kinds, else the installed
    distribution whose ``ecgforge.components`` entry point registers it."""
    return {name: {kind: table.origin(kind) for kind in sorted(table)} for name, table in CATEGORIES.items()}
