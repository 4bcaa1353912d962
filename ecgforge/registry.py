"""Component tables, and the one function that turns a validated config into a component.

Each component category (sources, encoders, maskers, augmentations, objectives, evaluation protocols) keeps a
`Table` in its package's ``__init__``: one line per kind, ``"resnet1d": "ecgforge.encoders.resnet1d:ResNet1d"``.
The class's config is the class of the same name plus ``Config`` in the same module (``ResNet1dConfig``).
Entries are strings, so listing the kinds imports no component (``ecgforge list`` never loads torch); the
config union that a recipe validates against is made on first use.

``build(table, cfg, **context)``: the caller names the table, so this module knows no component. A field that
is itself a component config (or a list of them) is built first, from the table its type annotation names
(``Table.union`` puts the table in the union's ``Annotated`` metadata).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field


class Table(Mapping[str, type]):
    """``kind -> component class`` for one category, resolved lazily from ``"module:Class"`` strings."""

    def __init__(self, category: str, entries: Mapping[str, str]) -> None:
        self.category = category
        self.entries = dict(entries)

    def __getitem__(self, kind: str) -> type:
        if kind not in self.entries:
            raise KeyError(f"{self.category}: no kind {kind!r}; registered: {sorted(self.entries)}")
        return _resolve(self.entries[kind])

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def config(self, kind: str) -> type[BaseModel]:
        """The pydantic config class of ``kind`` (``<Class>Config`` beside the class)."""
        module, _, name = self.entries[kind].partition(":")
        return _resolve(f"{module}:{name}Config")

    def configs(self) -> tuple[type[BaseModel], ...]:
        return tuple(self.config(kind) for kind in self.entries)

    @functools.cached_property
    def union(self) -> Any:
        """``Annotated[Union[configs...], Field(discriminator="kind"), self]``: the type a recipe field uses."""
        configs = self.configs()
        inner = Union[configs] if len(configs) > 1 else configs[0]  # noqa: UP007 - a runtime-built union
        return Annotated[inner, Field(discriminator="kind"), self]

    def module_getattr(self, union_name: str) -> Any:
        """A module ``__getattr__`` (PEP 562) that gives this table's config union as ``union_name`` on first use:
        the union imports every component module (and so torch), which listing the kinds must not."""

        def __getattr__(name: str) -> Any:
            if name == union_name:
                return self.union
            raise AttributeError(f"no attribute {name!r}")

        return __getattr__

    # A table is one object (it sits in type annotations, which typing hashes): identity, not contents.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"Table({self.category!r}, {sorted(self.entries)})"


@functools.cache
def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def is_component(value: Any) -> bool:
    return isinstance(value, BaseModel) and "kind" in type(value).model_fields


def _table_in(annotation: Any) -> Table | None:
    """The `Table` in an annotation's ``Annotated`` metadata, looking inside ``list[...]`` / ``X | None``."""
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Table):
                return meta
    for arg in get_args(annotation):
        found = _table_in(arg)
        if found is not None:
            return found
    return None


def field_table(cfg: BaseModel, name: str) -> Table | None:
    """The table of component field ``name`` of ``cfg`` (pydantic keeps top-level metadata apart)."""
    info = type(cfg).model_fields[name]
    for meta in info.metadata:
        if isinstance(meta, Table):
            return meta
    return _table_in(info.annotation)


def build(table: Mapping[str, type], cfg: BaseModel, **context: Any) -> Any:
    """Construct the component of ``table`` that ``cfg`` describes.

    The constructor receives the config's fields (minus ``kind``) as keyword arguments. Fields that are
    themselves component configs are built first (a list of them becomes an ``nn.Sequential``, empty for an
    empty list). ``context`` carries run facts such as ``fs_hz``, ``window`` (samples), ``n_leads`` or
    ``encoder``; each constructor receives only the context keys its signature names.
    """
    cls = table[cfg.kind]  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {}
    for name in type(cfg).model_fields:
        if name == "kind":
            continue
        value = getattr(cfg, name)
        sub = field_table(cfg, name)
        if sub is not None and is_component(value):
            value = build(sub, value, **context)
        elif sub is not None and isinstance(value, (list, tuple)) and all(is_component(v) for v in value):
            from torch import nn  # only components that hold other components need torch here

            value = nn.Sequential(*(build(sub, v, **context) for v in value))
        kwargs[name] = value
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs.update({k: v for k, v in context.items() if (takes_any or k in params) and k not in kwargs})
    return cls(**kwargs)
