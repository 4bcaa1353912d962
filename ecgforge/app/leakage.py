"""The leakage guard: a run refuses to test on what it trained on, unless the recipe says so and why.

Two checks, for every ``[[eval]]`` table, on the splits as the run selects them (``data.splits``, with CinC
``HR*`` records dropped when ``exclude_ptbxl_overlap``):

- ``pretrain`` / ``test``: the records (and patients) of ``data.pretrain_split`` against the table's test split,
  also across caches (PTB-XL ECGs inside a CinC cache are the same ECGs as in a PTB-XL cache);
- ``train`` / ``test``: the patients of the table's training split against its test split.

Any overlap stops ``ecgforge validate`` / ``run`` / ``eval`` (in their pre-flight, ``app.preflight``) with one
line per overlap naming the two splits and the count, unless ``data.allow_overlap`` names both roles (with
``allow_overlap_reason``); then results.json records it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.data.leakage import n_shared, patient_keys, record_keys
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
