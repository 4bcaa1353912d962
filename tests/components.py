"""``make``: a component class built the way the registry builds it, for tests that construct one directly."""

from __future__ import annotations

from typing import Any

from ecgforge.registry import BuildContext


def make(cls: type, ctx: BuildContext | None = None, **fields: Any) -> Any:
    """``cls(cls.Config(**fields), ctx)``: the component with those config fields (the rest at their defaults)."""
    return cls(cls.Config(**fields), ctx if ctx is not None else BuildContext())
