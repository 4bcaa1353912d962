"""The pre-flight: what a run recipe can get wrong, found before anything is built, trained or embedded.

``ecgforge validate``, ``ecgforge run`` (on the recipe before the cache is built, then on recipe and cache
before pretraining) and ``ecgforge eval`` share it. Every problem is one line, ``FILE: TOML.path: message``,
and all of them are reported together (one RecipeError, exit 2):

- every split an ``[[eval]]`` table names (its protocol's ``split_fields()``) is one of ``data.splits``
  (``data.pretrain_split`` is checked by the schema);
- with the cache: each split's selector names columns of the cache it selects from; each ``[[eval]] task``,
  the online monitor's ``train.monitor.task`` and a supervised objective's ``ssl.task`` is a label set of its
  cache or a meta task (`META_TASKS`), of a type the protocol supports (its config's ``task_types``), with
  labelled records in its train and test splits (the objective's: in ``data.pretrain_split``; the monitor's:
  in ``train.monitor.split``);
- every training subset an ``[[eval]]`` table trains on (each label fraction x seed, drawn as the protocol
  draws it: ``evaluation.training_classes``) holds two classes (multiclass) or a class with positive and
  negative records (multilabel); otherwise a head could learn nothing from it;
- leakage (``app.leakage``): no test split shares records or patients with pretraining or training, unless
  ``data.allow_overlap`` allows it; and a warning (not a problem) where ``model.init`` starts from a public
  foundation model that was trained on a dataset the test splits hold records of.

Only cache metadata is read (`Cache` leaves the signals on disk). A component class that breaks the
construction convention surfaces when the recipe schema is first made: `load_recipe` names it in one line.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgforge.app.leakage import check_leakage, pretraining_warnings
from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache, CacheError
from ecgforge.data.splits import DatasetError, Targets, patient_codes, select, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.training_classes import first_unlearnable, unlearnable_line
from ecgforge.registry import ComponentError

if TYPE_CHECKING:  # importing the schema builds the config unions, which `load_recipe` guards
    from ecgforge.recipe import Recipe

#: Tasks read from every cache's metadata columns rather than a label set (``data.splits.task_targets``).
META_TASKS = ("sex", "age")
#: Where a protocol config without ``split_fields()`` (a plugin's that does not derive from ProtocolConfig)
#: names its splits.
_SPLIT_FIELDS = ("train_split", "val_split", "test_split", "split")


@contextlib.contextmanager
def naming_component_errors(path: str | Path) -> Iterator[None]:
    """A `ComponentError` (a registered class named against the convention) as a one-line RecipeError."""
    try:
        yield
    except ComponentError as exc:
        raise RecipeError(f"{path}: {' '.join(str(exc).split())}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """``app.recipes.load_run_recipe`` with a misnamed component class reported as a RecipeError line."""
    with naming_component_errors(path):
        from ecgforge.app.recipes import load_run_recipe

        return load_run_recipe(path, overrides)


def split_fields(cfg: Any) -> dict[str, str]:
    """TOML field -> split name, of the splits an ``[[eval]]`` config uses."""
    declared = getattr(cfg, "split_fields", None)
    if callable(declared):
        return dict(declared())
    found = {f: getattr(cfg, f) for f in _SPLIT_FIELDS if isinstance(getattr(cfg, f, None), str)}
    if getattr(cfg, "mode", None) == "zero_shot":  # identification trains nothing in this mode
        found.pop("train_split", None)
    return found


@dataclass
class Checked:
    """What a pre-flight that found no problem says: ``notes`` (what it could not check yet and why),
    ``allowed_overlap`` (``app.leakage``'s record for results.json, None when nothing overlaps) and
    ``warnings`` (lines a run prints as warnings and keeps in results.json: a foundation model tested on data
    it was trained on)."""

    notes: list[str] = field(default_factory=list)
    allowed_overlap: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


class _Flight:
    """One pre-flight's problems, notes and the caches and split selections it has read."""

    def __init__(self, recipe: Recipe, source: str, open_cache: Callable[[str], Cache], strict: bool) -> None:
        self.recipe, self.source, self.strict = recipe, source, strict
        self.open_cache = open_cache
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.caches: dict[str, Cache | None] = {}
        self.selected: dict[tuple[str, str], np.ndarray | None] = {}
        self.unreadable = False  # a cache or a split selector failed: the leakage check would fail on it too

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    # --------------------------------------------------------------------------------- without the cache

    def split_names(self) -> None:
        splits = self.recipe.data.splits
        for i, ev in enumerate(self.recipe.eval):
            for name_field, name in split_fields(ev).items():
                if name not in splits:
                    self.fail(f"eval[{i}].{name_field}", f"split {name!r} is not one of data.splits "
                              f"({', '.join(splits)}){_did_you_mean(name, splits)}")
            declared, types = getattr(ev, "task_type", None), getattr(ev, "task_types", None)
            if declared is not None and types is not None and declared not in types:
                self.fail(f"eval[{i}].task_type", f"{ev.kind} supports {', '.join(sorted(types))} tasks, "
                          f"not {declared}")

    # ------------------------------------------------------------------------------------ with the cache

    def cache_at(self, where: str, path: str | None, main: Cache) -> Cache | None:
        """``path`` opened once (metadata only; ``main`` for None); None, with a problem or note, where it
        cannot be."""
        if path is None or Path(path) == main.path:
            return main
        if path not in self.caches:
            self.caches[path] = None
            if not Path(path).is_file() and not self.strict:
                self.notes.append(f"{where}: {path} not built yet: its tasks and leakage not checked (run checks them)")
            else:
                try:
                    self.caches[path] = self.open_cache(path)
                except CacheError as exc:
                    self.unreadable = True
                    self.fail(where, str(exc))
        return self.caches[path]

    def indices(self, cache: Cache, name: str) -> np.ndarray | None:
        """The records of split ``name`` in ``cache``; None, with one problem, where its selector fails."""
        key = (str(cache.path), name)
        if key not in self.selected:
            d = self.recipe.data
            try:
                self.selected[key] = select(cache, d.splits[name], d.exclude_ptbxl_overlap)
            except DatasetError as exc:
                self.selected[key] = None
                self.unreadable = True
                self.fail(f"data.splits.{name}", str(exc))
        return self.selected[key]

    def known_task(self, where: str, task: str, cache: Cache) -> bool:
        if task in cache.labels or task in META_TASKS:
            return True
        sets, meta = sorted(cache.labels), [t for t in META_TASKS if t not in cache.labels]
        self.fail(where, f"{task!r} is not a label set of {cache.path} (has: {', '.join(sets) or 'no label set'}; "
                  f"meta tasks: {', '.join(meta)}){_did_you_mean(task, [*sets, *meta])}")
        return False

    def labelled(self, where: str, cache: Cache, task: str, split: str, task_type: Any = None,
                 type_where: str = "") -> Targets | None:
        """The task's targets on split ``split`` (named at TOML path ``where``); None, with a problem, where it
        has no labelled record there, or cannot be of ``task_type`` (named at ``type_where``)."""
        idx = self.indices(cache, split)
        if idx is None:
            return None
        try:
            t = task_targets(cache, task, idx, task_type)
        except DatasetError as exc:  # a label set asked to be a regression target
            self.fail(type_where, str(exc))
            return None
        if len(t.indices) == 0:
            self.fail(where, f"task {task!r} has no labelled record in split {split!r} of {cache.path} "
                      f"({len(idx)} records selected)")
            return None
        return t

    def monitor_subset(self, cache: Cache) -> None:
        """A problem where the online monitor's subset, drawn as the run will draw it, cannot teach a probe."""
        from ecgforge.train.monitor import draw_positions

        m, idx = self.recipe.train.monitor, self.indices(cache, self.recipe.train.monitor.split)
        try:
            draw_positions(m, cache, idx, self.recipe.seed)
        except UserError as exc:  # its message starts with "train.monitor: "
            self.fail("train.monitor", str(exc).removeprefix("train.monitor: "))

    def learnable(self, i: int, ev: Any, cache: Cache, split: str, train: Targets) -> None:
        """A problem where a label fraction x seed draw of ``train`` (``[[eval]]`` table ``i``'s records of split
        ``split``, drawn as `tasks.TaskData.positions` draws them) teaches a head nothing: at ``train_split``
        where the whole split does, else at ``label_fractions``."""
        fractions, seeds = getattr(ev, "label_fractions", None) or [1.0], getattr(ev, "seeds", None) or [0]
        bad = first_unlearnable(train, patient_codes(cache)[train.indices], fractions, seeds)
        if bad is not None:
            where = "label_fractions" if not bad.whole_split and hasattr(ev, "label_fractions") else "train_split"
            self.fail(f"eval[{i}].{where}", unlearnable_line(ev.kind, ev.task, split, bad))

    def with_cache(self, cache: Cache) -> None:
        r, splits = self.recipe, self.recipe.data.splits
        for name in splits:  # every selector against the data cache
            self.indices(cache, name)
        if r.ssl is not None and isinstance(task := getattr(r.ssl, "task", None), str):
            if self.known_task("ssl.task", task, cache):
                self.labelled("data.pretrain_split", cache, task, r.data.pretrain_split)
        if (m := r.train.monitor) is not None and r.ssl is not None and self.known_task("train.monitor.task", m.task, cache):
            if self.labelled("train.monitor.split", cache, m.task, m.split) is not None:
                self.monitor_subset(cache)
        for i, ev in enumerate(r.eval):
            fields = {f: s for f, s in split_fields(ev).items() if s in splits}  # others failed above
            c = self.cache_at(f"eval[{i}].cache", getattr(ev, "cache", None), cache)
            train_cache = getattr(ev, "train_cache", None)
            tc = c if train_cache is None else self.cache_at(f"eval[{i}].train_cache", train_cache, cache)
            for f, name in fields.items():
                if (on := tc if f == "train_split" else c) is not None:
                    self.indices(on, name)
            task = getattr(ev, "task", None)
            if c is None or not isinstance(task, str) or not self.known_task(f"eval[{i}].task", task, c):
                continue
            found = {f: self.labelled(f"eval[{i}].{f}", c, task, fields[f], getattr(ev, "task_type", None),
                                      f"eval[{i}].task_type") for f in ("train_split", "test_split") if f in fields}
            train, types = found.get("train_split"), getattr(ev, "task_types", None)
            if train is not None and types is not None and train.task_type not in types:
                self.fail(f"eval[{i}].task", f"{task!r} is a {train.task_type} task; {ev.kind} supports "
                          f"{', '.join(sorted(types))}")
            elif train is not None:
                self.learnable(i, ev, c, fields["train_split"], train)

    def leakage(self, cache: Cache) -> dict[str, Any] | None:
        if self.unreadable:
            return None
        if any(c is None for c in self.caches.values()):  # not built yet: noted by `cache_at`
            return None
        # Every cache the leakage check opens is open by now (`cache_at` returns it, or the data cache).
        lines, allowed = check_leakage(self.recipe, cache, self.source, lambda p: self.cache_at("", p, cache))
        self.problems += lines
        self.warnings += pretraining_warnings(self.recipe, cache, lambda p: self.cache_at("", p, cache))
        return allowed


def _did_you_mean(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check(recipe: Recipe, source: str, cache: Cache | None = None, *,
          open_cache: Callable[[str], Cache] = Cache, strict: bool = True) -> Checked:
    """The pre-flight of ``recipe`` (read from ``source``), with ``cache`` (its ``data.cache``, splits as the
    run uses them) where given; RecipeError with one line per problem.

    ``open_cache(path)`` opens an evaluation's other cache. ``strict`` False (``validate``): an evaluation
    cache that is not built yet is a note, not a problem.
    """
    flight = _Flight(recipe, source, open_cache, strict)
    flight.split_names()
    allowed = None
    if cache is not None:
        flight.with_cache(cache)
        allowed = flight.leakage(cache)
    if flight.problems:
        raise RecipeError("\n".join(dict.fromkeys(flight.problems)))  # train and test may fail alike
    return Checked(flight.notes, allowed, flight.warnings)


def validate(recipe: Recipe, source: str) -> Checked:
    """``ecgforge validate``'s pre-flight: with the data cache where it is built (from ``data.build`` as it
    is now), else the checks that need no cache and a note saying what the run will check."""
    from ecgforge.app.recipes import resolve_splits
    from ecgforge.data.cache_spec import load_cache_recipe

    d = recipe.data
    spec_hash = None
    if d.build is not None:  # the cache recipe a run would build from must exist and be valid too
        try:
            spec_hash = load_cache_recipe(d.build).spec_hash()
        except RecipeError as exc:
            raise RecipeError(f"{source}: data.build: {str(exc).splitlines()[0]}") from None
    why = None
    if not Path(d.cache).is_file():
        why = f"{d.cache} not built yet"
    else:
        try:
            cache = Cache(d.cache)
        except CacheError as exc:
            raise RecipeError(f"{source}: data.cache: {exc}") from None
        if spec_hash is not None and cache.spec_hash != spec_hash:
            why = (f"{d.cache} was built from another spec than {d.build}: `run` refuses it, `run --rebuild-cache` "
                   "replaces it")
    if why is not None:
        checked = check(recipe, source)
        checked.notes.append(f"tasks, split sizes and leakage not checked: {why} (run checks them)")
        return checked
    notes: list[str] = []
    checked = check(resolve_splits(recipe, cache, notes.append), source, cache, strict=False)
    checked.notes[:0] = notes
    checked.notes += [f"warning: {w}" for w in checked.warnings]  # `validate` prints notes
    return checked
