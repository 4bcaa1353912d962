"""Hand-edited recipes: property-based mutations of every shipped recipe, in the file and as ``--set``.

Each mutation (a required key deleted, a key misspelled, a value of the wrong type or out of range, an unknown
``kind``, broken TOML syntax) must end in exit code 2 and one line per problem, ``error: FILE: FIELD: message``,
where FIELD is the TOML path of the mutated field; never a traceback. What counts as required, which values
are out of range and which kinds exist is read from the pydantic schema, not restated here, so the mutations
follow the schema as it grows. The CLI runs in-process (typer's CliRunner) so that hundreds of inputs take
seconds; a few real subprocesses check stderr where a traceback would show.
"""

from __future__ import annotations

import math
import os
import re
import string
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from ecgforge.app.catalog import kinds
from ecgforge.app.recipes import load_run_recipe as load_recipe
from ecgforge.cli import app
from ecgforge.config_files import RecipeError
from ecgforge.data.cache_spec import CacheRecipe, load_cache_recipe
from ecgforge.recipe import Recipe
from tests.reliability.ledger import record

ROOT = Path(__file__).resolve().parents[2]
RUN_RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.toml") if "caches" not in p.parts)
CACHE_RECIPES = sorted((ROOT / "recipes" / "caches").glob("*.toml"))
ALL_RECIPES = RUN_RECIPES + CACHE_RECIPES
KIND_TAGS = {k for ks in kinds().values() for k in ks}
runner = CliRunner()

# Reproducible in CI (derandomize), bounded, and no deadline: a CLI call on a loaded 2-core machine varies.
# Function-scoped fixtures (the suite's autouse seeding) are fine to share across examples: nothing here uses
# the global RNGs, and each example writes its own mutated recipe before reading it.
EXAMPLES = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------------------- schema walk


@dataclass(frozen=True)
class Node:
    """One key of a recipe, located in the schema.

    Attributes:
        path: TOML path (``("train", "optim", "encoder", "lr")``, list items by index).
        value: the value as the recipe has it.
        field: the pydantic field the key fills; None for free keys (split names, optimiser groups) and list items.
        required: deleting the key must be an error.
        annotation: the field's (or the free value's) type annotation.
        siblings: the field names of the model the key belongs to (a misspelling must not hit one).
        tagged: the value is a table of a discriminated union (selected by its ``kind``).
    """

    path: tuple[str | int, ...]
    value: Any
    field: FieldInfo | None
    required: bool
    annotation: Any
    siblings: frozenset[str]
    tagged: bool


def _flatten(ann: Any) -> list[Any]:
    """The members of a (nested, optional, annotated) union; a non-union is its own single member."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(ann) for m in _flatten(a)]
    return [ann]


def _models(ann: Any) -> list[type[BaseModel]]:
    return [m for m in _flatten(ann) if isinstance(m, type) and issubclass(m, BaseModel)]


def _is_tagged(ann: Any, field: FieldInfo | None) -> bool:
    if field is not None and field.discriminator:
        return True
    if typing.get_origin(ann) is typing.Annotated:
        return any(isinstance(m, FieldInfo) and m.discriminator for m in typing.get_args(ann)[1:])
    return any(_is_tagged(m, None) for m in typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType))


def _container(ann: Any) -> tuple[str, Any] | None:
    for m in _flatten(ann):
        origin = typing.get_origin(m)
        if origin is list:
            return "list", typing.get_args(m)[0]
        if origin is dict:
            return "dict", typing.get_args(m)[1]
    return None


def walk(value: Any, ann: Any, path: tuple[str | int, ...] = (), field: FieldInfo | None = None,
         required: bool = False, siblings: frozenset[str] = frozenset()) -> Iterator[Node]:
    """Every key of ``value`` (a recipe table parsed as ``ann``) with what the schema says about it."""
    tagged = _is_tagged(ann, field)
    if path:
        yield Node(path, value, field, required, ann, siblings, tagged and isinstance(value, dict))
    if isinstance(value, dict):
        models = _models(ann)
        if tagged:
            models = [m for m in models if m.model_fields["kind"].default == value.get("kind")]
        if models:
            model = models[0]
            names = frozenset(model.model_fields)
            for key, sub in value.items():
                f = model.model_fields.get(key)
                if f is None:
                    continue
                # In a tagged union the `kind` default cannot choose the member: deleting it is an error. The
                # model's encoder is required by a validator unless `init` is given (no shipped recipe has it).
                req = f.is_required() or (tagged and key == "kind") or (model.__name__ == "ModelConfig"
                                                                         and key == "encoder" and "init" not in value)
                yield from walk(sub, f.annotation, (*path, key), f, req, names)
            return
        cont = _container(ann)
        if cont is not None and cont[0] == "dict":
            for key, sub in value.items():
                yield from walk(sub, cont[1], (*path, key))
    elif isinstance(value, list):
        cont = _container(ann)
        if cont is not None and cont[0] == "list":
            for i, sub in enumerate(value):
                if isinstance(sub, dict):
                    yield from walk(sub, cont[1], (*path, i))


def schema_of(path: Path) -> type[BaseModel]:
    return CacheRecipe if path in CACHE_RECIPES else Recipe


def nodes(path: Path) -> list[Node]:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return list(walk(raw, schema_of(path)))


def _kinds(ann: Any) -> set[str]:
    """What a (possibly optional, union) annotation accepts: ``int``, ``float``, ``bool``, ``str``, ``list``, ``other``."""
    found = set()
    for m in _flatten(ann):
        origin = typing.get_origin(m)
        if m is type(None):
            continue
        if origin in (list, tuple):
            found.add("list")
        elif origin is typing.Literal:
            vals = typing.get_args(m)
            found.add("int" if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) else "other")
        elif m in (bool, int, float, str):
            found.add(m.__name__)
        else:
            found.add("other")
    return found


def _scalar_kind(ann: Any) -> str:
    """The one kind of a field that accepts a single kind of value, else ``other``."""
    k = _kinds(ann)
    return k.pop() if len(k) == 1 else "other"


# --------------------------------------------------------------------------------------- mutations


def delete(raw: dict[str, Any], path: tuple[str | int, ...]) -> None:
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]


def put(raw: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


def rename(raw: dict[str, Any], path: tuple[str | int, ...], new: str) -> None:
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    parent[new] = parent.pop(path[-1])


@st.composite
def misspelling(draw: st.DrawFn, key: str) -> str:
    """A typo of ``key``: a character dropped, doubled, swapped with its neighbour, replaced, or case changed."""
    op = draw(st.sampled_from(["drop", "double", "swap", "replace", "case"]))
    i = draw(st.integers(0, len(key) - 1))
    if op == "drop" and len(key) > 1:
        return key[:i] + key[i + 1:]
    if op == "double":
        return key[:i] + key[i] + key[i:]
    if op == "swap" and len(key) > 1:
        j = min(i, len(key) - 2)
        return key[:j] + key[j + 1] + key[j] + key[j + 2:]
    if op == "case":
        return key[:i] + key[i].swapcase() + key[i + 1:]
    return key[:i] + draw(st.sampled_from(string.ascii_lowercase + "_")) + key[i + 1:]


# Values of each TOML type, and the field kinds that accept them (pydantic's lax mode turns 123 into 123.0
# for a float and "64" into 64 for an int: a wrong type is one that no member of the field's type accepts).
_WRONG = [("oops", {"str", "other"}), (123, {"int", "float", "other"}), (2.5, {"float", "other"}),
          ({"oops": 1}, {"other"}), ([1, 2], {"list", "other"})]


def wrong_type_values(node: Node) -> list[Any]:
    """Values of a TOML type the field does not take (a table where a number goes, a number for a string, ...)."""
    if isinstance(node.value, dict):
        return ["oops", 5, [1, 2]]  # a table given as a scalar or a list
    kinds_ = _kinds(node.annotation)
    return [v for v, accepted in _WRONG if not kinds_ & accepted]


@st.composite
def out_of_range(draw: st.DrawFn, node: Node) -> Any:
    """A value of the right type that the field's constraints (gt/ge/lt/le, length, Literal set, pattern) refuse."""
    f, kind = node.field, _scalar_kind(node.annotation)
    options: list[st.SearchStrategy[Any]] = []
    is_int = kind == "int"

    def below(bound: float, strict: bool) -> st.SearchStrategy[Any]:
        if is_int:
            return st.integers(max_value=int(math.ceil(bound)) - (0 if strict else 1), min_value=-10**6)
        return st.one_of(st.floats(max_value=bound, exclude_max=not strict, allow_nan=False, min_value=-1e9),
                         st.just(math.nan))

    def above(bound: float, strict: bool) -> st.SearchStrategy[Any]:
        if is_int:
            return st.integers(min_value=int(math.floor(bound)) + (0 if strict else 1), max_value=10**6)
        return st.one_of(st.floats(min_value=bound, exclude_min=not strict, allow_nan=False, max_value=1e9),
                         st.just(math.nan))

    for m in f.metadata if f is not None else []:
        if isinstance(m, at.Gt):
            options.append(below(m.gt, strict=True))  # x <= gt is refused
        elif isinstance(m, at.Ge):
            options.append(below(m.ge, strict=False))
        elif isinstance(m, at.Lt):
            options.append(above(m.lt, strict=True))
        elif isinstance(m, at.Le):
            options.append(above(m.le, strict=False))
        elif isinstance(m, at.MinLen) and m.min_length >= 1:
            options.append(st.just("" if isinstance(node.value, str) else []))
        elif hasattr(m, "pattern") and m.pattern:
            options.append(st.sampled_from(["has space", "slash/name", "star*"]))
    literals = [v for mem in _flatten(node.annotation) if typing.get_origin(mem) is typing.Literal
                for v in typing.get_args(mem)]
    if literals and all(isinstance(v, int) and not isinstance(v, bool) for v in literals):
        options.append(st.integers(-1000, 1000).filter(lambda v: v not in literals))
    assume(options)
    return draw(st.one_of(options))


def broken_toml(text: str, draw: st.DrawFn) -> str:
    """The recipe text with one syntax error: a deleted ``=``/``]``/``"``, a stray character, a repeated key."""
    lines = text.splitlines()
    code = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    i = draw(st.sampled_from(code))
    line = lines[i]
    op = draw(st.sampled_from(["drop_eq", "drop_bracket", "drop_quote", "stray", "repeat"]))
    if op == "drop_eq" and "=" in line:
        lines[i] = line.replace("=", " ", 1)
    elif op == "drop_bracket" and "]" in line:
        lines[i] = line[: line.rindex("]")] + line[line.rindex("]") + 1:]
    elif op == "drop_quote" and '"' in line:
        lines[i] = line.replace('"', "", 1)
    elif op == "repeat" and "=" in line and not line.lstrip().startswith("["):
        lines.insert(i + 1, line)
    else:
        lines[i] = draw(st.sampled_from(["=", "[", '"', "}", "= ="])) + " " + line
    return "\n".join(lines) + "\n"


def toml_value(v: Any) -> str:
    """A Python value as a TOML value literal, as ``--set key=VALUE`` takes it (tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


# ------------------------------------------------------------------------------------------ checks


_LOC = re.compile(r"\[(\d+)\]")


def names_field(loc: str, msg: str, path: tuple[str | int, ...]) -> bool:
    """Does an error location (``eval[0].task``, ``ssl.simclr.temperature``) name the TOML path ``path``?

    Union tags (the ``kind`` pydantic adds to the location) are skipped. A location deeper than ``path``
    still names it; a shallower one (a table-level error, e.g. a missing ``kind``) must say the rest of the
    path in its message.
    """
    tokens = [t for t in _LOC.sub(r".\1", loc).split(".") if t]
    j = 0
    for t in tokens:
        if j == len(path):
            return True
        if t == str(path[j]):
            j += 1
        elif t not in KIND_TAGS:
            return False
    return all(str(p) in msg for p in path[j:])


def invoke(args: list[str]) -> tuple[int, list[str], bool]:
    """Run the CLI in-process; returns (exit code, non-empty stderr lines, whether an exception escaped)."""
    res = runner.invoke(app, args)
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    return res.exit_code, [x for x in res.stderr.splitlines() if x.strip()], escaped


def check_refused(mutation: str, recipe: Path, args: list[str], path: tuple[str | int, ...] | None,
                  *, syntax: bool = False) -> None:
    """Assert exit 2, one ``error: FILE: FIELD: message`` line per problem, one of them naming ``path``."""
    code, lines, escaped = invoke(args)
    good = not escaped and code == 2 and bool(lines) and all(x.startswith(f"error: {recipe}: ") for x in lines)
    named = False
    if good and syntax:
        # tomllib says where: "(at line 12, column 5)", or "(at end of document)" for an unclosed array or table
        named = len(lines) == 1 and "TOML syntax error" in lines[0] and ("line" in lines[0] or "end of document" in lines[0])
    elif good and path is not None:
        for x in lines:
            loc, _, msg = x.removeprefix(f"error: {recipe}: ").partition(": ")
            named = named or names_field(loc, msg, path)
    via = "--set" if "--set" in args else "file"
    outcome = "exception" if escaped else f"exit {code}" + ("" if named else ", field not named")
    record("recipes", f"{mutation} ({via}): {outcome}", output="\n".join(lines), traceback=escaped)
    assert not escaped, f"{args}: exception escaped"
    assert code == 2, f"{args}: exit {code}: {lines}"
    assert lines and all(x.startswith(f"error: {recipe}: ") for x in lines), lines
    assert named, f"{args}: no line names {dotted(path or ())}: {lines}"


def command(recipe: Path, mutated: Path, draw: st.DrawFn, overrides: list[str], check: Any = None) -> list[str]:
    """``validate``, or the command that would act on the recipe (``run`` / ``cache build``).

    The acting command is chosen only when the recipe is certainly refused (checked first: by the schema, and
    by ``check(recipe, source)`` where given, the pre-flight run does before the cache is built), so that a
    mutation the schema accepts fails this test instead of starting a training run or a build.
    """
    is_cache = recipe in CACHE_RECIPES
    loader = load_cache_recipe if is_cache else load_recipe
    try:
        loaded = loader(mutated, overrides)
        if check is not None:
            check(loaded, str(mutated))
        refused = False
    except RecipeError:
        refused = True
    sets = [a for o in overrides for a in ("--set", o)]
    if refused and draw(st.booleans()):
        out = mutated.parent / ("out.h5" if is_cache else "run")
        return (["cache", "build", str(mutated), "--out", str(out)] if is_cache
                else ["run", str(mutated), "--out", str(out)]) + sets
    return ["validate", str(mutated), *sets]


# -------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module", autouse=True)
def _at_root() -> Iterator[None]:
    """Recipes name their cache recipes (``data.build``) relative to the project root."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recipes")


def test_the_walk_sees_every_shipped_recipe() -> None:
    """Guard for the property tests below: every recipe is found and its keys are located in the schema."""
    assert len(RUN_RECIPES) >= 10
    import tomllib

    from ecgforge.data.sources import SOURCES

    # every source kind ships a cache recipe, so every source's schema is walked
    shipped = {tomllib.loads(p.read_text())["source"]["kind"] for p in CACHE_RECIPES}
    assert shipped == set(SOURCES), sorted(set(SOURCES) ^ shipped)
    for path in ALL_RECIPES:
        ns = nodes(path)
        assert any(n.required for n in ns) and any(n.path[-1] == "kind" for n in ns), path
        assert any(wrong_type_values(n) for n in ns) and any(n.field is not None and n.field.metadata for n in ns), path


def _target(path: Path, scratch: Path) -> Path:
    d = scratch / path.relative_to(ROOT / "recipes").with_suffix("").as_posix().replace("/", "__")
    d.mkdir(exist_ok=True)
    return d / "recipe.toml"


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@EXAMPLES
@given(data=st.data())
def test_deleted_required_key(recipe: Path, scratch: Path, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from([n for n in nodes(recipe) if n.required]))
    raw = tomllib.loads(recipe.read_text(encoding="utf-8"))
    delete(raw, node.path)
    target = _target(recipe, scratch)
    target.write_text(tomli_w.dumps(raw))
    check_refused("deleted key", target, command(recipe, target, data.draw, []), node.path)


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.parametrize("via", ["file", "set"])
@EXAMPLES
@given(data=st.data())
def test_misspelled_key(recipe: Path, via: str, scratch: Path, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from([n for n in nodes(recipe) if n.field is not None and n.path[-1] != "schema_version"]))
    key = str(node.path[-1])
    typo = data.draw(misspelling(key))
    assume(typo not in node.siblings and typo.strip() == typo and typo)
    target = _target(recipe, scratch)
    raw = tomllib.loads(recipe.read_text(encoding="utf-8"))
    new_path = (*node.path[:-1], typo)
    if via == "file":
        rename(raw, node.path, typo)
        overrides = []
    else:  # --set adds the misspelled key beside the right one
        overrides = [f"{dotted(new_path)}={toml_value(node.value)}"]
    target.write_text(tomli_w.dumps(raw))
    check_refused("misspelled key", target, command(recipe, target, data.draw, overrides), new_path)


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.parametrize("via", ["file", "set"])
@EXAMPLES
@given(data=st.data())
def test_wrong_type(recipe: Path, via: str, scratch: Path, data: st.DataObject) -> None:
    candidates = [n for n in nodes(recipe) if wrong_type_values(n) and n.path[-1] != "schema_version"]
    node = data.draw(st.sampled_from(candidates))
    value = data.draw(st.sampled_from(wrong_type_values(node)))
    _mutate_and_check("wrong type", recipe, via, scratch, data, node.path, value)


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.parametrize("via", ["file", "set"])
@EXAMPLES
@given(data=st.data())
def test_out_of_range(recipe: Path, via: str, scratch: Path, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from([n for n in nodes(recipe) if n.field is not None and not isinstance(n.value, dict)]))
    value = data.draw(out_of_range(node))
    _mutate_and_check("out of range", recipe, via, scratch, data, node.path, value)


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.parametrize("via", ["file", "set"])
@EXAMPLES
@given(data=st.data())
def test_unknown_kind(recipe: Path, via: str, scratch: Path, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from([n for n in nodes(recipe) if n.path[-1] == "kind"]))
    kind = data.draw(st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=12))
    assume(kind not in KIND_TAGS and kind not in ("adam", "adamw", "sgd", "constant", "cosine", "linear"))
    _mutate_and_check("unknown kind", recipe, via, scratch, data, node.path, kind)


@pytest.mark.parametrize("recipe", RUN_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.parametrize("via", ["file", "set"])
@EXAMPLES
@given(data=st.data())
def test_misspelled_split_name(recipe: Path, via: str, scratch: Path, data: st.DataObject) -> None:
    """A split an ``[[eval]]`` table (or pretraining) names, misspelled: the schema accepts the string, the
    pre-flight refuses it, and ``run`` does so before it builds the cache or makes the run directory."""
    from ecgforge.app import preflight

    loaded = load_recipe(recipe)
    splits = loaded.data.splits
    uses = [(("eval", i, f), name) for i, ev in enumerate(loaded.eval) for f, name in preflight.split_fields(ev).items()]
    if loaded.ssl is not None:
        uses.append((("data", "pretrain_split"), loaded.data.pretrain_split))
    path, name = data.draw(st.sampled_from(uses))
    typo = data.draw(misspelling(name))
    assume(typo not in splits and typo.strip() == typo and typo)
    _mutate_and_check("misspelled split name", recipe, via, scratch, data, path, typo, preflight.check)


def _mutate_and_check(mutation: str, recipe: Path, via: str, scratch: Path, data: st.DataObject,
                      path: tuple[str | int, ...], value: Any, check: Any = None) -> None:
    target = _target(recipe, scratch)
    raw = tomllib.loads(recipe.read_text(encoding="utf-8"))
    overrides = []
    if via == "file":
        put(raw, path, value)
    else:
        overrides = [f"{dotted(path)}={toml_value(value)}"]
    target.write_text(tomli_w.dumps(raw))
    check_refused(mutation, target, command(recipe, target, data.draw, overrides, check), path)
    assert not (target.parent / "run").exists()  # a refused run makes no run directory


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@EXAMPLES
@given(data=st.data())
def test_broken_toml_syntax(recipe: Path, scratch: Path, data: st.DataObject) -> None:
    text = broken_toml(recipe.read_text(encoding="utf-8"), data.draw)
    try:
        tomllib.loads(text)
        assume(False)  # the edit happened to stay valid TOML (e.g. inside a string)
    except tomllib.TOMLDecodeError:
        pass
    target = _target(recipe, scratch)
    target.write_text(text)
    check_refused("broken TOML", target, ["validate", str(target)], None, syntax=True)


@pytest.mark.parametrize("recipe", RUN_RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
@EXAMPLES
@given(data=st.data())
def test_set_value_that_is_not_toml(recipe: Path, scratch: Path, data: st.DataObject) -> None:
    """A --set value that does not parse as TOML is taken as a bare string: a numeric or list field refuses it."""
    candidates = [n for n in nodes(recipe) if _scalar_kind(n.annotation) in ("int", "float", "list")
                  and not isinstance(n.value, dict) and n.path[-1] != "schema_version"]
    node = data.draw(st.sampled_from(candidates))
    raw_value = data.draw(st.sampled_from(["[1,", "{ a = ", "1..2", "0x", '"unterminated', "1e", "[[]"]))
    target = _target(recipe, scratch)
    target.write_text(recipe.read_text(encoding="utf-8"))
    check_refused("value that is not TOML", target, command(recipe, target, data.draw,
                                                            [f"{dotted(node.path)}={raw_value}"]), node.path)


BAD_SETS = [
    ("=3", "expected dotted.key=value"),
    ("train.epochs", "expected dotted.key=value"),
    ("eval.9.seeds=[0]", "does not exist"),
    ("train.epochs.depth=1", "is not a table"),
    ("eval.kind=1", "is not a table"),
    ("train.epochs.0=1", "does not exist"),
]


@pytest.mark.parametrize(("item", "why"), BAD_SETS)
def test_malformed_set_names_the_override(item: str, why: str, tmp_path: Path) -> None:
    code, lines, escaped = invoke(["validate", str(ROOT / "recipes" / "quickstart.toml"), "--set", item])
    record("recipes", f"malformed --set: {'exception' if escaped else f'exit {code}'}", output="\n".join(lines),
           traceback=escaped)
    assert not escaped and code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"error: --set {item!r}: ") and why in lines[0], lines


def test_missing_and_unreadable_recipe_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    latin = tmp_path / "latin.toml"
    latin.write_bytes((ROOT / "recipes" / "quickstart.toml").read_bytes().replace(b"quickstart", b"quick\xe9"))
    for path, why in ((missing, "no such file"), (latin, "cannot read"), (tmp_path, "cannot read")):
        code, lines, escaped = invoke(["validate", str(path)])
        record("recipes", f"missing/unreadable file: {'exception' if escaped else f'exit {code}'}",
               output="\n".join(lines), traceback=escaped)
        assert not escaped and code == 2, (path, lines)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and why in lines[0], lines


@pytest.mark.parametrize(
    ("args", "edit", "field"),
    [
        (["validate"], ("lr = 1e-3", "lr = -1e-3"), "train.optim.encoder.lr"),
        (["run"], ("depth = 18", "depth = 19"), "model.encoder.resnet1d.depth"),
        (["run", "--set", "train.batch_size=[64"], None, "train.batch_size"),
        (["validate"], ("[train]", "[train"), "TOML syntax error"),
    ],
)
def test_real_process_prints_one_line_and_no_traceback(args: list[str], edit: tuple[str, str] | None, field: str,
                                                       tmp_path: Path) -> None:
    """As a user sees it: a separate process, stderr as written, exit status from the OS."""
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    recipe = tmp_path / "r.toml"
    recipe.write_text(text.replace(*edit, 1) if edit else text)
    cmd = [sys.executable, "-m", "ecgforge", args[0], str(recipe), *args[1:]]
    if args[0] == "run":
        cmd += ["--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    record("recipes", f"real process: exit {proc.returncode}", output=proc.stdout + proc.stderr)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    # COLUMNS=80 and a long temporary path: the message must still be one line (no wrapping).
    assert len(lines) == 1 and lines[0].startswith(f"error: {recipe}: ") and field in lines[0], lines
    assert not (tmp_path / "run").exists()
