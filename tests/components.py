"""Helpers for tests of components: ``make`` builds a class the way the registry does; ``contributing_example``
reads the code a newcomer is shown in CONTRIBUTING.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ecgforge.registry import BuildContext

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
# A fenced block right after its marker line: <!-- example: NAME -->
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```\w*\n(.*?)\n```", re.DOTALL)


def make(cls: type, ctx: BuildContext | None = None, **fields: Any) -> Any:
    """``cls(cls.Config(**fields), ctx)``: the component with those config fields (the rest at their defaults)."""
    return cls(cls.Config(**fields), ctx if ctx is not None else BuildContext())


def contributing_examples() -> dict[str, str]:
    """``name -> code`` of every marked example block in CONTRIBUTING.md."""
    found: dict[str, str] = {}
    for name, code in _EXAMPLE.findall(CONTRIBUTING.read_text(encoding="utf-8")):
        assert name not in found, f"CONTRIBUTING.md: example {name!r} marked twice"
        found[name] = code + "\n"
    return found


def contributing_example(name: str) -> str:
    examples = contributing_examples()
    assert name in examples, f"CONTRIBUTING.md: no block marked <!-- example: {name} --> (found {sorted(examples)})"
    return examples[name]
