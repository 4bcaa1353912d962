"""Component tables, the build context, and the one way a validated config becomes a component.

The convention, for every registered kind (sources, encoders, maskers, augmentations, objectives, evaluation
protocols):

- a pydantic config class with a ``kind: Literal["<kind>"]`` field holds every field, once, with its default;
  metadata derived from the fields (an objective's ``phases``, a protocol's ``task_types``) are properties or
  class variables of the config, so they are known before anything is built;
- the component class names it as ``Config`` and is constructed as ``cls(cfg, ctx)``: the config whole, and a
  `BuildContext` of run facts (sampling rate, window, leads, the encoder, the number of classes);
- one line in its category's `Table`: ``"resnet1d": "ecgforge.encoders.resnet1d:ResNet1d"``.

Entries are strings, so listing the kinds imports no component (``ecgforge list`` never loads torch); the
config union that a recipe validates against is made on first use. Installed packages add kinds through the
``ecgforge.components`` entry-point group: an entry named ``<category>.<kind>`` (``augment.polarity_flip``)
whose value is ``"package.module:Class"``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

ENTRY_POINT_GROUP = "ecgforge.components"


class ComponentError(TypeError):
    """A registered class that does not follow the convention (a developer's mistake, named in one line)."""


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Run facts a component may need, known only once the cache (and the encoder) are.

    Every field is optional: a component asks for what it needs with `need`, which names the missing fact.
    """

    fs_hz: float | None = None  # sampling rate of the cache (Hz)
    window: int | None = None  # training window (samples)
    n_leads: int | None = None  # leads of the cache
    encoder: Any = None  # the encoder (nn.Module) an objective trains
    n_classes: int | None = None  # width of a supervised head

    def need(self, name: str) -> Any:
        """The fact ``name``; ValueError where the caller did not supply it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"BuildContext.{name} is needed here but was not given")
        return value

    def replace(self, **changes: Any) -> BuildContext:
        return dataclasses.replace(self, **changes)


class Table(Mapping[str, type]):
    """``kind -> component class`` for one category, resolved lazily from ``"module:Class"`` strings."""

    def __init__(self, category: str, entries: Mapping[str, str]) -> None:
        self.category = category
        self.builtin = dict(entries)

    @functools.cached_property
    def entries(self) -> dict[str, str]:
        """Built-in kinds and those installed packages register (entry points, read once, nothing imported)."""
        merged = dict(self.builtin)
        for kind, (target, _package) in self.plugins.items():
            merged[kind] = target
        return merged

    @functools.cached_property
    def plugins(self) -> dict[str, tuple[str, str]]:
        """``kind -> ("module:Class", distribution name)`` for this category's entry points."""
        found: dict[str, tuple[str, str]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            category, _, kind = ep.name.partition(".")
            if category != self.category or not kind:
                continue
            package = ep.dist.name if ep.dist is not None else "?"
            if kind in self.builtin:
                raise ComponentError(f"entry point {ep.name!r} of package {package!r}: kind {kind!r} is built "
                                     f"into ecgforge ({self.builtin[kind]}); choose another name")
            if kind in found:
                raise ComponentError(f"entry point {ep.name!r}: registered by both {found[kind][1]!r} and "
                                     f"{package!r}")
            found[kind] = (ep.value, package)
        return found

    def origin(self, kind: str) -> str:
        """Where ``kind`` comes from: ``"ecgforge"`` or the installed package that registers it."""
        return self.plugins[kind][1] if kind in self.plugins else "ecgforge"

    def __getitem__(self, kind: str) -> type:
        if kind not in self.entries:
            raise KeyError(f"{self.category}: no kind {kind!r}; registered: {sorted(self.entries)}")
        return _resolve(self.entries[kind])

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def config(self, kind: str) -> type[BaseModel]:
        """The pydantic config class of ``kind``: the class's ``Config``, whose ``kind`` must be ``kind``."""
        cls, target = self[kind], self.entries[kind]
        cfg = getattr(cls, "Config", None)
        if not (isinstance(cfg, type) and issubclass(cfg, BaseModel)):
            raise ComponentError(
                f"{target}: a registered class names its config as a class attribute `Config = <Name>Config` "
                f"(a pydantic model with a kind field), and is built as cls(cfg, ctx); see CONTRIBUTING.md")
        declared = cfg.model_fields.get("kind")
        if declared is None or declared.default != kind:
            raise ComponentError(f"{target}: {cfg.__name__}.kind must default to {kind!r}, the name it is "
                                 f"registered under (found {None if declared is None else declared.default!r})")
        return cfg

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
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ComponentError(f"{target}: cannot be imported ({type(exc).__name__}: {exc})") from exc


def build(table: Table, cfg: BaseModel, ctx: BuildContext | None = None) -> Any:
    """The component of ``table`` that ``cfg`` describes: ``cls(cfg, ctx)``."""
    cls = table[cfg.kind]  # type: ignore[attr-defined]
    return cls(cfg, ctx if ctx is not None else BuildContext())


def build_all(table: Table, cfgs: Sequence[BaseModel], ctx: BuildContext | None = None) -> Any:
    """``nn.Sequential`` of the components ``cfgs`` describe, in order (empty: the identity)."""
    from torch import nn  # only components that hold other components need torch here

    return nn.Sequential(*(build(table, c, ctx) for c in cfgs))
