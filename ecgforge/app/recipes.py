"""Loading a run recipe for the application: validated, then ``[model] init`` resolved from the saved encoder
(the one step that reads a file, kept out of the schema's validators)."""

from __future__ import annotations

from pathlib import Path

from ecgforge.config_files import RecipeError
from ecgforge.encoder_files import init_encoder_config
from ecgforge.recipe import Recipe, load_recipe


def resolve_init(recipe: Recipe, source: str) -> Recipe:
    """The recipe with ``[model] init`` resolved: the saved encoder's config read and, where the recipe
    gives ``[model.encoder]`` too, checked to be equal (RecipeError ``source: model: ...`` otherwise)."""
    if recipe.model.init is None:
        return recipe
    try:
        cfg = init_encoder_config(recipe.model.init, recipe.model.encoder)
    except ValueError as exc:
        raise RecipeError(f"{source}: model: {exc}") from None
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"encoder": cfg})})


def load_run_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a run recipe, then resolve ``[model] init``."""
    return resolve_init(load_recipe(path, overrides), str(path))
