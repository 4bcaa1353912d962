"""Registries: every table entry resolves to a class and its config, every config binds to its constructor's
signature (same fields, same defaults), and every default component builds, runs forward and backward."""

from __future__ import annotations

import inspect

import pytest
import torch
from pydantic import TypeAdapter
from pydantic_core import PydanticUndefined

from ecgforge.app.catalog import CATEGORIES
from ecgforge.encoders import ENCODERS
from ecgforge.registry import Table, build

CASES = [(name, kind) for name, table in CATEGORIES.items() for kind in table]


def test_every_entry_resolves_and_its_config_carries_its_kind() -> None:
    for name, table in CATEGORIES.items():
        for kind in table:
            cfg_cls = table.config(kind)
            assert cfg_cls.model_fields["kind"].default == kind, f"{name}: {kind} -> {cfg_cls.__name__}"
            assert isinstance(table[kind], type)


def test_unknown_kind_names_the_category_and_the_kinds() -> None:
    with pytest.raises(KeyError, match="encoders: no kind 'resnet99'.*resnet1d"):
        ENCODERS["resnet99"]


def _default(info) -> object:
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def _normalise(value: object) -> object:
    """Lists and tuples compare as lists; configs as their dumps (a constructor default cannot be a config)."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value


# Evaluation protocols take their validated config whole (they are never built field by field).
BOUND = [(name, kind) for name, kind in CASES if name != "eval"]


@pytest.mark.parametrize(("category", "kind"), BOUND)
def test_config_binds_to_its_constructor(category: str, kind: str) -> None:
    """torchtune-style config validation: every config field is a constructor parameter with the same default
    (component fields aside: the constructor receives them built), and every constructor parameter without a
    default is a config field or run context."""
    table: Table = CATEGORIES[category]
    cfg_cls, cls = table.config(kind), table[kind]
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, info in cfg_cls.model_fields.items():
        if name == "kind":
            continue
        assert name in params or takes_any, f"{cfg_cls.__name__}.{name} is not a parameter of {cls.__name__}"
        if name not in params:
            continue
        p = params[name]
        cfg_default = _default(info)
        if p.default is inspect.Parameter.empty:
            continue  # required by the constructor: the config always passes it
        if cfg_default is PydanticUndefined:
            continue  # required in the config, defaulted in the constructor: the config decides
        nested = hasattr(cfg_default, "model_dump") or (
            isinstance(cfg_default, list) and cfg_default and hasattr(cfg_default[0], "model_dump"))
        if nested or (isinstance(cfg_default, list) and not cfg_default and p.default in ((), [], None)):
            continue  # component fields arrive built (an nn.Module), so the constructor's default differs in type
        assert _normalise(p.default) == _normalise(cfg_default), (
            f"{cfg_cls.__name__}.{name}: config default {cfg_default!r} != {cls.__name__} default {p.default!r}")
    context = {"encoder", "fs_hz", "window", "n_leads", "n_classes", "self"}
    for name, p in params.items():
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty:
            assert name in cfg_cls.model_fields or name in context, f"{cls.__name__}({name}) has no config field"


@pytest.mark.parametrize("kind", list(CATEGORIES["eval"]))
def test_protocols_take_their_config(kind: str) -> None:
    table = CATEGORIES["eval"]
    assert table[kind].Config is table.config(kind)  # built as cls(cfg, ctx), the convention of issue #25
    assert list(inspect.signature(table[kind]).parameters) == ["cfg", "ctx"]


# Objectives that need a particular encoder family get a small one of it.
_W2V = {"kind": "wav2vec2", "layers": 2, "dim": 32, "heads": 2, "ffn_dim": 64, "conv_pos": 16}
SMALL_ENCODER_FOR = {
    "cpc": {"kind": "cpc", "features": [16, 16], "hidden": 16},
    "wav2vec2": _W2V,
    "w2v_cmsc_rlm": _W2V,
}

# Minimal required fields for configs that have no full default.
REQUIRED = {
    "sources": {"path": "/nonexistent"},
    "eval": {"task": "rhythm"},
    "ssl": {"task": "rhythm"},
}


@pytest.mark.parametrize(("category", "kind"), CASES)
def test_default_component_builds_and_runs(category: str, kind: str) -> None:
    table = CATEGORIES[category]
    cls = table.config(kind)
    required = {k: v for k, v in REQUIRED.get(category, {}).items() if k in cls.model_fields}
    cfg = TypeAdapter(table.union).validate_python({"kind": kind, **required})
    if category == "eval":
        assert table[kind](cfg) is not None
        return
    if category == "sources":
        assert build(table, cfg) is not None
        return
    x = torch.randn(4, 12, 1000, requires_grad=True)
    if category == "ssl":
        enc_cfg = TypeAdapter(ENCODERS.union).validate_python(SMALL_ENCODER_FOR.get(kind, {"kind": "resnet1d", "width": 8}))
        obj = build(table, cfg, encoder=build(ENCODERS, enc_cfg), fs_hz=100.0, window=1000, n_leads=12, n_classes=2)
        n_seg = obj.n_segments
        batch = {
            "x": torch.randn(4, n_seg, 12, 1000) if n_seg > 1 else torch.randn(4, 12, 1000),
            "lead_mask": torch.ones(4, 12, dtype=torch.bool),
            "patient": torch.tensor([0, 0, 1, 1]),
            "record": torch.arange(4),
            "y": torch.tensor([0, 1, 0, 1]),
        }
        for phase in obj.phases:
            loss, logs = obj(batch, phase)
            assert loss.ndim == 0 and torch.isfinite(loss)
            loss.backward()
        return
    module = build(table, cfg, fs_hz=100.0)
    y = module(x)
    assert torch.isfinite(y).all()
    y.float().mean().backward()
