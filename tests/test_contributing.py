"""CONTRIBUTING.md's examples are whole files that work: each is imported as a module, registered by its registry
line in a copy of its table, validated from a recipe-style table, built as the registry builds it and run."""

from __future__ import annotations

import ast
import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest
import torch
from pydantic import TypeAdapter

from ecgforge.augment import AUGMENTS
from ecgforge.encoders import ENCODERS
from ecgforge.maskers import MASKERS
from ecgforge.registry import BuildContext, Table, build, build_all
from tests.components import contributing_example, contributing_examples

TABLES = {"encoder": ENCODERS, "masker": MASKERS, "augment": AUGMENTS}


def test_every_category_has_its_examples() -> None:
    names = set(contributing_examples())
    assert {f"{c}{suffix}" for c in TABLES for suffix in ("", "-registry")} | {"plugin-pyproject"} <= names


def load_example(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Table, str]:
    """The example file as a fresh module, and its table with the example's registry line added.

    The module gets a unique name (the registry caches resolved targets by their string), and the registry
    line's ``module:Class`` points at it with the class name the line gives."""
    code = contributing_example(name)
    ((kind, target),) = ast.literal_eval("{" + contributing_example(f"{name}-registry") + "}").items()
    module_name = f"contributing_{name}_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{module_name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    base = TABLES[name]
    assert kind not in base, f"the example's kind {kind!r} is already registered"
    table = Table(base.category, {**base.builtin, kind: f"{module_name}:{target.split(':')[1]}"})
    assert table.config(kind).model_fields["kind"].default == kind
    return module, table, kind


def test_encoder_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, table, kind = load_example("encoder", tmp_path, monkeypatch)
    cfg = TypeAdapter(table.union).validate_python({"kind": kind, "width": 8, "kernel_size": 5})
    enc = build(table, cfg, BuildContext(fs_hz=100.0, window=250, n_leads=12))
    x = torch.randn(2, 12, 250, requires_grad=True)
    feats = enc.forward_features(x)
    assert feats.shape == (2, 8, -(-250 // enc.downsample))
    z = enc(x)
    assert z.shape == (2, enc.embed_dim)
    z.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    # receptive_field is what it claims: one middle feature step depends on exactly that many input samples.
    x = torch.randn(1, 12, 256, requires_grad=True)
    enc.forward_features(x)[0, :, 32].sum().backward()
    seen = (x.grad[0].abs().sum(0) > 0).nonzero().flatten()
    assert int(seen[-1] - seen[0] + 1) == enc.receptive_field


@pytest.mark.parametrize("n_masks", [1, 3])
def test_masker_example(n_masks: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, table, kind = load_example("masker", tmp_path, monkeypatch)
    cfg = TypeAdapter(table.union).validate_python({"kind": kind, "n_masks": n_masks})
    masker = build(table, cfg, BuildContext())
    x = torch.randn(2, 12, 301, requires_grad=True)
    m = masker(x)
    assert m.shape == (2, n_masks, 301) and (m >= 0).all() and (m <= 1).all()
    if n_masks > 1:
        torch.testing.assert_close(m.sum(dim=1), torch.ones(2, 301))
    (m[:, 0] * x[:, 0]).sum().backward()  # the kind of loss adversarial masking back-propagates
    assert x.grad is not None and all(p.grad is not None for p in masker.parameters())


def test_augment_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, table, kind = load_example("augment", tmp_path, monkeypatch)
    x = torch.randn(4000, 12, 50)
    always = build_all(table, [TypeAdapter(table.union).validate_python({"kind": kind, "p": 1.0})])
    assert torch.equal(always(x), -x)
    never = build(table, table.config(kind)(p=0.0))
    assert torch.equal(never(x), x)
    half = build(table, table.config(kind)(), BuildContext(fs_hz=100.0))  # the default p is 0.5
    y = half(x)
    flipped = (y == -x).all(dim=(1, 2))
    assert torch.equal(flipped | (y == x).all(dim=(1, 2)), torch.ones(4000, dtype=torch.bool))  # whole samples
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    assert isinstance(half, module.PolarityFlip)
