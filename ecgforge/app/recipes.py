"""Loading a run recipe for the application: validated, then ``[model] init`` resolved from the saved encoder,
and ``[data] fallback_splits`` applied where the cache lacks a split (the steps that read files, kept out of
the schema's validators)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.data.cache_spec import CacheRecipe, load_cache_recipe
from ecgforge.data.splits import select
from ecgforge.encoder_files import init_encoder_config
from ecgforge.encoders.foundation import InputContract
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


def derived_cache_path(path: str, from_hz: float, to_hz: float) -> str:
    """Where the cache of ``path``'s spec at ``to_hz`` goes, beside it: ``cache/ptbxl-100hz.h5`` at 500 Hz ->
    ``cache/ptbxl-500hz.h5``; a name that does not say its rate gets ``-500hz`` appended."""
    p = Path(path)
    was, now = f"{from_hz:g}hz", f"{to_hz:g}hz"
    stem = p.stem.replace(was, now) if was in p.stem else p.stem if p.stem.endswith(now) else f"{p.stem}-{now}"
    return str(p.with_name(stem + p.suffix))


def spec_at(spec: CacheRecipe, cache: str, fs_hz: float) -> CacheRecipe:
    """``spec``, the spec of the cache at ``cache``, at ``fs_hz``: the same source, its records resampled polyphase
    from it, written beside that cache (`derived_cache_path`). How a run derives a cache at a model's rate
    (`follow_contract`), and ``ecgforge embed`` and a protocol's own cache too (`app.run.derive_cache`)."""
    out = derived_cache_path(cache, spec.signal.fs_hz, fs_hz)
    return spec.model_copy(update={"signal": spec.signal.model_copy(update={"fs_hz": fs_hz}), "out": out,
                                   "name": Path(out).stem})


def follow_contract(recipe: Recipe, contract: InputContract,
                    note: Callable[[str], None] | None = None) -> tuple[Recipe, CacheRecipe | None]:
    """The recipe fed as ``contract`` says (the input contract of its ``model.init``): ``data.window_s`` and
    ``data.eval_stride_s`` set to the contract's, and, where ``data.build`` gives the cache at another rate,
    ``data.cache`` moved to a cache of the same source spec at the contract's rate (built beside it by the cache
    builder's polyphase resampling when absent). Returns the recipe and that cache's spec (None: the recipe's
    own cache and spec stand). ``note`` gets one line per change."""
    d = recipe.data
    changes: dict[str, Any] = {"window_s": contract.window_s, "eval_stride_s": contract.stride_s}
    spec = None
    if d.build is not None:
        spec = load_cache_recipe(d.build)
        if abs(spec.signal.fs_hz - contract.fs_hz) > 1e-6:
            spec = spec_at(spec, d.cache, contract.fs_hz)
            if note is not None:
                note(f"{contract.model} takes {contract.fs_hz:g} Hz: data.cache {d.cache} -> {spec.out} (the spec of "
                     f"{d.build} at {contract.fs_hz:g} Hz; records resampled polyphase from the source)")
            changes["cache"] = spec.out
        else:
            spec = None
    if note is not None and (d.window_s, d.eval_stride_s or d.window_s) != (contract.window_s, contract.stride_s):
        note(f"{contract.model} takes {contract.window_s:g} s windows every {contract.stride_s:g} s: data.window_s "
             f"{d.window_s:g} -> {contract.window_s:g}, data.eval_stride_s -> {contract.stride_s:g}")
    return recipe.model_copy(update={"data": d.model_copy(update=changes)}), spec
