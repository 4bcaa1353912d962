"""Reading recipe files: TOML, ``--set`` overrides, schema versions, and validation errors as one line each.

Both kinds of recipe (run and cache) go through `load_model`, so a typo reads the same everywhere:
``file: field.path: message (got value)``.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ecgforge.errors import UserError, resolved_against

SCHEMA_VERSION = 1
M = TypeVar("M", bound=BaseModel)


class RecipeError(UserError):
    """A recipe problem a user can fix. ``str(err)`` is one or more lines, each naming file and field."""


class Strict(BaseModel, extra="forbid", frozen=True):
    """Base of every recipe table: frozen, and unknown keys (typos) are errors."""



def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``file: field.path: message (got value)``."""
    lines = []
    for e in err.errors():
        # Tagged unions add the tag to the location ("ssl.simclr.temperature"): keep it, it says which kind.
        loc = _format_loc(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "union_tag_not_found":
            # pydantic says "Unable to extract tag": say which key is missing, and point at a misspelling of it.
            tag = str(e.get("ctx", {}).get("discriminator", "kind")).strip("'")
            msg = f"required key {tag!r} is missing"
            close = difflib.get_close_matches(tag, [str(k) for k in got], n=1) if isinstance(got, dict) else []
            if close:
                msg += f"; {close[0]!r} is an unknown key (misspelled?)"
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {loc}: {msg}{shown}")
    return "\n".join(lines)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such file{resolved_against(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: TOML syntax error: {exc}") from None


def parse_override(item: str) -> tuple[list[str | int], Any]:
    """``"train.optim.encoder.lr=3e-4"`` -> (["train", "optim", "encoder", "lr"], 0.0003).

    The value is parsed as a TOML value (numbers, booleans, arrays, inline tables, quoted strings); a bare
    word that is not valid TOML is taken as a string, so ``--set name=my-run`` works. List items are
    addressed by index: ``eval.0.seeds=[0,1]``.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected dotted.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[: i + 1]))} does not exist")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[:i]))} is not a table")
                node = node.setdefault(part, [] if isinstance(nxt, int) else {})
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path))} does not exist")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[:-1]))} is not a table")
    return raw


def migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring an older recipe to the current schema. Version 1 is the first; newer ones are refused."""
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RecipeError(f"{source}: schema_version: this ecgforge reads version {SCHEMA_VERSION}, got {version!r}")
    return raw


def load_model(model: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    """Read, override and validate the recipe at ``path`` as ``model``; RecipeError with one line per problem."""
    raw = migrate(apply_overrides(read_toml(path), overrides or []), str(path))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, str(path))) from None


def is_cache_recipe(path: str | Path) -> bool:
    """Cache recipes have [source], [signal] and ``out``; run recipes have [data] and [model].

    Any one of the cache keys decides, so that a cache recipe missing its [source] is reported as that,
    not as a run recipe missing [data] and [model].
    """
    raw = read_toml(path)
    return bool({"source", "signal", "out"} & raw.keys()) and not {"data", "model"} & raw.keys()


def to_toml_dict(model: BaseModel) -> dict[str, Any]:
    """A validated model as a TOML-writable dict (TOML has no null: None fields are left out). A table's ``kind``
    comes first, where a mixin's fields (an objective's ``augment``) would otherwise precede it."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            first = {"kind": v["kind"]} if "kind" in v else {}
            return {k: strip(x) for k, x in {**first, **v}.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v

    return strip(model.model_dump(mode="json"))
