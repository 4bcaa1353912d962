"""Registries: every table entry resolves to a class whose ``Config`` carries its kind, every default component
builds from its config and runs forward and backward, and a class that breaks the convention is named in one
line."""

from __future__ import annotations

import inspect
from typing import Literal

import pytest
import torch
from pydantic import BaseModel, TypeAdapter
from torch import nn

from ecgforge.app.catalog import CATEGORIES
from ecgforge.encoders import ENCODERS
from ecgforge.registry import BuildContext, ComponentError, Table, build

CASES = [(name, kind) for name, table in CATEGORIES.items() for kind in table]


def test_every_entry_resolves_and_its_config_carries_its_kind() -> None:
    for name, table in CATEGORIES.items():
        for kind in table:
            cfg_cls = table.config(kind)
            assert cfg_cls.model_fields["kind"].default == kind, f"{name}: {kind} -> {cfg_cls.__name__}"
            assert isinstance(table[kind], type)


@pytest.mark.parametrize(("category", "kind"), CASES)
def test_every_class_follows_the_convention(category: str, kind: str) -> None:
    """``Config`` names the config the table validates against; the constructor takes ``(cfg, ctx)`` only."""
    table: Table = CATEGORIES[category]
    cls = table[kind]
    assert cls.Config is table.config(kind)
    params = [n for n in inspect.signature(cls).parameters if n != "self"]
    assert params == ["cfg", "ctx"], f"{cls.__name__}{inspect.signature(cls)}"


def test_unknown_kind_names_the_category_and_the_kinds() -> None:
    with pytest.raises(KeyError, match="encoders: no kind 'resnet99'.*resnet1d"):
        ENCODERS["resnet99"]


# ----------------------------------------------------------------------------- classes against the convention


class NoConfig(nn.Module):
    """Registered without ``Config`` (and with no ``NoConfigConfig`` beside it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FlipConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["flip"] = "flip"


class WrongKind(nn.Module):
    Config = FlipConfig  # registered below as "wrong_kind"

    def __init__(self, cfg: FlipConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg


class NotAModel(nn.Module):
    Config = dict  # not a pydantic model


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("NoConfig", r"tests\.test_registry:NoConfig: a registered class names its config as a class attribute "
                     r"`Config = <Name>Config`.*cls\(cfg, ctx\)"),
        ("NotAModel", r"tests\.test_registry:NotAModel: a registered class names its config .*`Config = "),
        ("WrongKind", r"tests\.test_registry:WrongKind: FlipConfig\.kind must default to 'wrong_kind'.*'flip'"),
    ],
)
def test_a_class_against_the_convention_is_named_in_one_line(name: str, match: str) -> None:
    table = Table("augment", {"wrong_kind": f"tests.test_registry:{name}"})
    with pytest.raises(ComponentError, match=match) as info:
        table.config("wrong_kind")
    assert "\n" not in str(info.value)
    with pytest.raises(ComponentError, match=match):  # so does the recipe union, before any recipe is read
        _ = table.union


def test_an_unimportable_entry_is_named_in_one_line() -> None:
    table = Table("augment", {"gone": "tests.test_registry:Missing"})
    with pytest.raises(ComponentError, match=r"tests\.test_registry:Missing: cannot be imported \(AttributeError"):
        table["gone"]


# ---------------------------------------------------------------------------------- defaults build and run

# Objectives that need a particular encoder family get a small one of it.
_W2V = {"kind": "wav2vec2", "layers": 2, "dim": 32, "heads": 2, "ffn_dim": 64, "conv_pos": 16}
SMALL_ENCODER_FOR = {
    "cpc": {"kind": "cpc", "features": [16, 16], "hidden": 16},
    "wav2vec2": _W2V,
    "w2v_cmsc_rlm": _W2V,
}

# Minimal required fields for configs that have no full default.
REQUIRED = {
    "sources": {"path": "/nonexistent", "fs_hz": 500.0, "leads": ["I", "II"]},  # the last two: arrays
    "eval": {"task": "rhythm"},
    "ssl": {"task": "rhythm"},
}


@pytest.mark.parametrize(("category", "kind"), CASES)
def test_default_component_builds_and_runs(category: str, kind: str) -> None:
    table = CATEGORIES[category]
    cls = table.config(kind)
    required = {k: v for k, v in REQUIRED.get(category, {}).items() if k in cls.model_fields}
    cfg = TypeAdapter(table.union).validate_python({"kind": kind, **required})
    ctx = BuildContext(fs_hz=100.0, window=1000, n_leads=12)
    if category == "eval":
        assert build(table, cfg, ctx) is not None
        return
    if category == "sources":
        assert build(table, cfg, ctx) is not None
        return
    if category == "ssl":
        enc_cfg = TypeAdapter(ENCODERS.union).validate_python(SMALL_ENCODER_FOR.get(kind, {"kind": "resnet1d", "width": 8}))
        obj = build(table, cfg, ctx.replace(encoder=build(ENCODERS, enc_cfg), n_classes=2))
        n_seg = cfg.n_segments
        batch = {
            "x": torch.randn(4, n_seg, 12, 1000) if n_seg > 1 else torch.randn(4, 12, 1000),
            "lead_mask": torch.ones(4, 12, dtype=torch.bool),
            "patient": torch.tensor([0, 0, 1, 1]),
            "record": torch.arange(4),
            "y": torch.tensor([0, 1, 0, 1]),
        }
        for phase in cfg.phases:
            loss, logs = obj(batch, phase)
            assert loss.ndim == 0 and torch.isfinite(loss)
            loss.backward()
        return
    module = build(table, cfg, ctx)
    # A foundation-model encoder takes its own input contract's window (ECG-JEPA: exactly 2,500 samples); one
    # record of it, since the defaults are the released sizes (ViT-B: 85 M parameters).
    contract = getattr(module, "contract", None)
    x = torch.randn(4, 12, 1000, requires_grad=True) if contract is None else torch.randn(
        1, 12, contract.window, requires_grad=True)
    assert module.cfg is cfg  # the component reads its fields from the config it was given
    y = module(x)
    assert torch.isfinite(y).all()
    if not getattr(cfg, "learned", True):  # a random-mask control: drawn masks, nothing to learn or back-propagate
        assert not y.requires_grad and not list(module.parameters())
        return
    y.float().mean().backward()
    if category == "encoders":
        assert y.shape == (len(x), module.embed_dim)
    if getattr(module, "input_differentiable", True):  # HuBERT-ECG decimates its input with scipy
        assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable in its input
    else:
        assert all(p.grad is not None for p in module.parameters())
