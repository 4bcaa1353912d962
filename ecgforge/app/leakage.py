"""The leakage guard: a run refuses to test on what it trained on, unless the recipe says so and why.

Two checks, for every ``[[eval]]`` table, on the splits as the run selects them (``data.splits``, with CinC
``HR*`` records dropped when ``exclude_ptbxl_overlap``):

- ``pretrain`` / ``test``: the records (and patients) of ``data.pretrain_split`` against the table's test split,
  also across caches (PTB-XL ECGs inside a CinC cache are the same ECGs as in a PTB-XL cache);
- ``train`` / ``test``: the patients of the table's training split against its test split.

Any overlap stops ``ecgforge validate`` / ``run`` / ``eval`` (in their pre-flight, ``app.preflight``) with one
line per overlap naming the two splits and the count, unless ``data.allow_overlap`` names both roles (with
``allow_overlap_reason``); then results.json records it.

A third check warns rather than stops, since the records a public checkpoint saw are known by dataset only:
when ``model.init`` is (or derives from) a released foundation model (``data.pretraining_sets``), the test
splits' records of a dataset that model was pretrained or fine-tuned on are counted, and one line says so
(`pretraining_warnings`; printed, and kept in results.json ``warnings``).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.data.leakage import n_shared, patient_keys, record_keys
from ecgforge.data.pretraining_sets import Checkpoint, init_kind, pretraining_table
from ecgforge.data.splits import select

if TYPE_CHECKING:  # importing the schema builds the config unions; `preflight.load_recipe` does that first
    from ecgforge.recipe import Recipe


@dataclass(frozen=True)
class Overlap:
    """Two splits in two roles that share ``count`` records or patients."""

    roles: tuple[str, str]
    splits: tuple[str, str]
    unit: str  # "records" | "patients"
    count: int
    eval_index: int

    def pair(self) -> str:
        (ra, rb), (sa, sb) = self.roles, self.splits
        return f"{ra} split {sa!r} and {rb} split {sb!r} share {self.count} {self.unit}"

    def line(self) -> str:
        """As results.json's ``allowed_overlap`` records it."""
        return f"eval[{self.eval_index}]: {self.pair()}"


def _test_split(ev: Any) -> str | None:
    # Identification tests on its whole `split`; every other protocol has a `test_split`.
    return getattr(ev, "test_split", None) or getattr(ev, "split", None)


def find_overlaps(recipe: Recipe, cache: Cache, open_cache: Callable[[str], Cache]) -> list[Overlap]:
    """Every overlap of the recipe's roles; ``open_cache(path)`` opens an evaluation's other cache."""
    d = recipe.data
    memo: dict[tuple[str, str], np.ndarray] = {}

    def indices(c: Cache, split: str) -> np.ndarray:
        key = (str(c.path), split)
        if key not in memo:
            memo[key] = select(c, d.splits[split], d.exclude_ptbxl_overlap)
        return memo[key]

    out: list[Overlap] = []
    pre = indices(cache, d.pretrain_split) if recipe.ssl is not None else None
    for i, ev in enumerate(recipe.eval):
        test = _test_split(ev)
        if test is None or test not in d.splits:
            continue  # the protocol reports an unknown split itself
        tcache = cache if getattr(ev, "cache", None) is None else open_cache(ev.cache)
        te = indices(tcache, test)
        if pre is not None:
            n = n_shared(record_keys(cache, pre), record_keys(tcache, te))
            unit = "records"
            if n == 0:
                n, unit = n_shared(patient_keys(cache, pre), patient_keys(tcache, te)), "patients"
            if n:
                out.append(Overlap(("pretrain", "test"), (d.pretrain_split, test), unit, n, i))
        train = getattr(ev, "train_split", None)
        train_cache = getattr(ev, "train_cache", None)
        if train is not None and train in d.splits and train != test:
            rcache = tcache if train_cache is None else open_cache(train_cache)  # identification's arcface
            n = n_shared(patient_keys(rcache, indices(rcache, train)), patient_keys(tcache, te))
            if n:
                out.append(Overlap(("train", "test"), (train, test), "patients", n, i))
    return out


def check_leakage(recipe: Recipe, cache: Cache, source: str,
                  open_cache: Callable[[str], Cache] = Cache) -> tuple[list[str], dict[str, Any] | None]:
    """(one line per overlap the recipe does not allow, ``FILE: eval[i]: leakage: ...``; what results.json
    records of the allowed ones as ``allowed_overlap``, None when there is none). The pre-flight
    (``app.preflight``) reports the lines with its other problems."""
    d = recipe.data
    found = find_overlaps(recipe, cache, functools.cache(open_cache))  # each other cache opened once
    refused = [f"{source}: eval[{o.eval_index}]: leakage: {o.pair()}; make them disjoint or set data.allow_overlap = "
               f"{json.dumps(list(o.roles))} with data.allow_overlap_reason"
               for o in found if not set(o.roles) <= set(d.allow_overlap)]
    if refused or not found:
        return refused, None
    return [], {"roles": list(d.allow_overlap), "reason": d.allow_overlap_reason,
                "overlaps": [o.line() for o in found]}


# ------------------------------------------------------------------------ what a public checkpoint has seen


def saved_contract(init: str) -> dict[str, Any] | None:
    """The ``encoder.json`` of a local run directory, export or encoder file ``init`` (``KIND:PATH`` read at
    PATH); None for anything else (a checkpoint file or a Hub id is recognised by its name)."""
    p = Path(init_kind(init)[1]).expanduser()
    d = p.parent if p.name in ("encoder.json", "encoder.safetensors") else p
    try:
        meta = json.loads((d / "encoder.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def init_checkpoint(init: str | None, encoder_kind: str | None = None) -> Checkpoint | None:
    """The released foundation model that ``model.init`` is or derives from (None: none, or no init)."""
    if not init:
        return None
    return pretraining_table().identify(init, encoder_kind, saved_contract(init))


def derived_from(init: str | None, encoder_kind: str | None = None) -> dict[str, Any] | None:
    """What a saved encoder records of the released model it starts from (``encoder.json`` ``derived_from``),
    so that a further export or evaluation still knows its licence and pretraining data; None if none."""
    model = init_checkpoint(init, encoder_kind)
    if model is None:
        return None
    return {"model": model.id, "name": model.name, "licence": model.licence, "init": init}


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, start = [], indices[0]
    for a, b in zip(indices, [*indices[1:], None], strict=True):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def pretraining_warnings(recipe: Recipe, cache: Cache, open_cache: Callable[[str], Cache] = Cache) -> list[str]:
    """One line when ``model.init`` is (or derives from) a released foundation model and the recipe's test
    splits hold records of a dataset that model was pretrained or fine-tuned on (per the cache's ``source``
    column and ``data.pretraining_sets``); else none."""
    m = recipe.model
    model = init_checkpoint(m.init, getattr(m.encoder, "kind", None))
    if model is None:
        return []
    table, d = pretraining_table(), recipe.data
    seen = table.seen_by(model)
    tested: dict[tuple[str, int], str] = {}  # (cache, record) -> dataset seen by the model
    evals: list[int] = []
    for i, ev in enumerate(recipe.eval):
        test = _test_split(ev)
        if test is None or test not in d.splits:
            continue
        tcache = cache if getattr(ev, "cache", None) is None else open_cache(ev.cache)
        idx = select(tcache, d.splits[test], d.exclude_ptbxl_overlap)
        hit = False
        for r, source in zip(idx, np.asarray(tcache.source)[idx].astype(str), strict=True):
            ds = table.dataset_of_record(source)
            if ds is not None and ds in seen:
                tested[(str(tcache.path), int(r))] = ds
                hit = True
        if hit:
            evals.append(i)
    if not tested:
        return []
    counts = Counter(tested.values())
    held = ", ".join(f"{n} {table.datasets[ds].name}" for ds, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return [f"leakage: model.init {m.init!r} starts from {model.name}, trained on {table.names(model.trained_on)}; the test "
            f"splits of eval[{_ranges(evals)}] hold {held} records it may have seen, so their scores may be "
            f"optimistic (sources: ecgforge/data/pretraining_sets.toml, models.{model.id})"]
