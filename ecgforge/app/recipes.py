"""Loading a run recipe for the application: validated, then ``[model] init`` resolved from the saved encoder,
and ``[data] fallback_splits`` applied where the cache lacks a split (the steps that read files, kept out of
the schema's validators)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.data.splits import select
from ecgforge.encoder_files import init_encoder_config
from ecgforge.recipe import Recipe, load_recipe


def resolve_init(recipe: Recipe, source: str) -> Recipe:
    """The recipe with ``[model] init`` resolved: the saved encoder's config read and, where the recipe
    gives ``[model.encoder]`` too, checked to be equal (RecipeError ``source: model: ...`` otherwise)."""
    if recipe.model.init is None:
        return recipe
    try:
        given = None if recipe.model.encoder_is_default else recipe.model.encoder
        cfg = init_encoder_config(recipe.model.init, given)
    except ValueError as exc:
        raise RecipeError(f"{source}: model: {exc}") from None
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"encoder": cfg})})


def load_run_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a run recipe, then resolve ``[model] init``."""
    return resolve_init(load_recipe(path, overrides), str(path))


def resolve_splits(recipe: Recipe, cache: Cache, note: Callable[[str], None] | None = None) -> Recipe:
    """The recipe with ``[data] fallback_splits`` in place of ``splits`` where some split of ``splits``
    selects no record of ``cache`` (a full-dataset suite on a subset of its folds); unchanged otherwise.

    ``note`` gets one line naming the empty splits and the record count of each split used.
    """
    d = recipe.data
    if not d.fallback_splits:
        return recipe
    empty = [n for n, sel in d.splits.items() if len(select(cache, sel, d.exclude_ptbxl_overlap)) == 0]
    if not empty:
        return recipe
    counts = {n: len(select(cache, sel, d.exclude_ptbxl_overlap)) for n, sel in d.fallback_splits.items()}
    if note is not None:
        note(f"{cache.path}: splits {empty} select no record; using fallback_splits ("
             + ", ".join(f"{n}: {c} records" for n, c in counts.items()) + ")")
    data = d.model_copy(update={"splits": dict(d.fallback_splits)})
    return recipe.model_copy(update={"data": data})
