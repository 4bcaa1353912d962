"""What the public ECG foundation-model checkpoints were trained on, and under which licence.

The facts are data: ``pretraining_sets.toml`` beside this module (each model with its sources), validated on
load into a `PretrainingTable`. Two readers: the leakage guard (``app.leakage.pretraining_warnings``) warns
when a run tests such a model on records of a dataset the model saw (ECG-FM was pretrained on PhysioNet 2021,
which contains PTB-XL), and an export of a model derived from one (``app.export``) carries its licence.

A checkpoint is recognised (`PretrainingTable.identify`) by, in this order: the KIND of ``model.init =
"KIND:PATH"``; what a saved ``encoder.json`` records (``derived_from``, the foundation encoder's
``input_contract.model``, its encoder kind, its ``source``); the encoder kind; the released file name or
Hugging Face repository in the path.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from ecgforge.errors import UserError

TABLE_FILE = "pretraining_sets.toml"


class Dataset(BaseModel, extra="forbid", frozen=True):
    name: str
    records: tuple[str, ...] = Field((), description="per-record `source` values an ecgforge cache stores for it")
    includes: tuple[str, ...] = Field((), description="datasets it contains")


class Checkpoint(BaseModel, extra="forbid", frozen=True):
    """One released model: how it is named, what its weights saw, and their licence."""

    id: str = ""  # the table key, set on load
    name: str
    aliases: tuple[str, ...]
    encoder_kinds: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    hub: tuple[str, ...] = ()
    trained_on: tuple[str, ...] = Field(min_length=1)
    licence: str
    licence_id: str
    commercial: bool
    sources: tuple[str, ...] = Field(min_length=1)
    notes: str = ""


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def init_kind(init: str) -> tuple[str | None, str]:
    """``(KIND, PATH)`` of ``model.init = "KIND:PATH"``; ``(None, init)`` for a plain path, an ``hf://`` id or a
    Windows drive letter (a KIND has two characters at least and no slash)."""
    head, sep, rest = init.partition(":")
    if not sep or rest.startswith("//") or len(head) < 2 or "/" in head or "\\" in head:
        return None, init
    return head, rest


class PretrainingTable(BaseModel, extra="forbid", frozen=True):
    datasets: dict[str, Dataset]
    models: dict[str, Checkpoint]

    @model_validator(mode="before")
    @classmethod
    def _ids(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = {**data, "models": {k: {**v, "id": k} if isinstance(v, dict) else v
                                       for k, v in data["models"].items()}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PretrainingTable:
        for key, ds in self.datasets.items():
            if unknown := [i for i in ds.includes if i not in self.datasets]:
                raise ValueError(f"datasets.{key}.includes: unknown dataset {unknown[0]!r}")
        for key, m in self.models.items():
            if unknown := [i for i in m.trained_on if i not in self.datasets]:
                raise ValueError(f"models.{key}.trained_on: unknown dataset {unknown[0]!r}")
        for what in ("aliases", "encoder_kinds", "files", "hub"):
            seen: dict[str, str] = {}
            for key, m in self.models.items():
                for value in getattr(m, what):
                    v = _norm(value)
                    if seen.setdefault(v, key) != key:
                        raise ValueError(f"models.{key}.{what}: {value!r} also names models.{seen[v]}")
        records: dict[str, str] = {}
        for key, ds in self.datasets.items():
            for r in ds.records:
                if records.setdefault(r, key) != key:
                    raise ValueError(f"datasets.{key}.records: {r!r} also belongs to datasets.{records[r]}")
        for key in self.datasets:
            self.contents([key])  # an include cycle raises
        return self

    def contents(self, ids: Iterable[str]) -> frozenset[str]:
        """``ids`` and every dataset they include, transitively."""
        out: set[str] = set()

        def add(i: str, path: tuple[str, ...]) -> None:
            if i in path:
                raise ValueError(f"datasets.{i}.includes: a cycle ({' -> '.join((*path, i))})")
            out.add(i)
            for j in self.datasets[i].includes:
                add(j, (*path, i))

        for i in ids:
            add(i, ())
        return frozenset(out)

    def dataset_of_record(self, source: str) -> str | None:
        """The dataset of a record whose cache ``source`` column says ``source`` (None: not a known dataset)."""
        for key, ds in self.datasets.items():
            if source in ds.records:
                return key
        return None

    def seen_by(self, model: Checkpoint) -> frozenset[str]:
        """Every dataset whose records ``model``'s weights may have seen."""
        return self.contents(model.trained_on)

    def names(self, ids: Iterable[str]) -> str:
        return ", ".join(self.datasets[i].name for i in ids)

    def identify(self, init: str | None = None, encoder_kind: str | None = None,
                 meta: Mapping[str, Any] | None = None) -> Checkpoint | None:
        """The released model that weights come from, or None when nothing names one (see the module docstring)."""
        by_alias = {_norm(a): m for m in self.models.values() for a in (*m.aliases, m.name)}
        by_kind = {_norm(k): m for m in self.models.values() for k in m.encoder_kinds}
        path = init
        if init:
            kind, path = init_kind(init)
            if kind is not None and _norm(kind) in by_alias:
                return by_alias[_norm(kind)]
        meta = meta or {}
        derived = meta.get("derived_from")
        if isinstance(derived, Mapping) and derived.get("model") in self.models:
            return self.models[derived["model"]]
        contract = meta.get("input_contract")
        if isinstance(contract, Mapping):  # "MERL ResNet-18", "ECGFounder (12-lead)": the model is the first word
            first = _norm((str(contract.get("model", "")).split() or [""])[0])
            if first in by_alias:
                return by_alias[first]
        config = meta.get("config")
        for kind in (config.get("kind") if isinstance(config, Mapping) else None, encoder_kind):
            if kind and _norm(str(kind)) in by_kind:
                return by_kind[_norm(str(kind))]
        return self._by_name(" ".join(str(s) for s in (path, meta.get("source")) if s))

    def _by_name(self, text: str) -> Checkpoint | None:
        """A released file name or Hub repository named in ``text`` (a path, an hf:// id, a source line)."""
        words = text.replace("hf://", " ").replace("\\", "/").split()
        for word in words:
            repo = word.split("@")[0].strip("/").lower()
            base = PurePath(word).name.lower()
            for m in self.models.values():
                if base in {f.lower() for f in m.files} or repo in {h.lower() for h in m.hub}:
                    return m
        return None


@functools.cache
def pretraining_table() -> PretrainingTable:
    """The table shipped with ecgforge, validated (UserError naming the file and field where it is broken)."""
    text = resources.files("ecgforge.data").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    try:
        return PretrainingTable.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError, ValueError) as exc:
        raise UserError(f"ecgforge/data/{TABLE_FILE}: {' '.join(str(exc).split())[:300]}") from None


def licence_line(model: Checkpoint) -> str:
    """One sentence for a model card: which checkpoint the weights derive from and what its licence allows."""
    use = "non-commercial use only" if not model.commercial else "commercial use permitted under its terms"
    return f"Derived from {model.name}, whose weights are released under {model.licence} ({use})."


__all__ = ["Checkpoint", "Dataset", "PretrainingTable", "init_kind", "licence_line", "pretraining_table"]
