"""Registries: every union tag has a class, and every default component builds, runs forward and backward."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter

from ecgforge.registry import build, categories, config_classes

CASES = [
    (name, cls.model_fields["kind"].default)
    for name, (union, _) in categories().items()
    for cls in config_classes(union)
]


def test_union_tags_and_dicts_agree() -> None:
    for name, (union, table) in categories().items():
        tags = {cls.model_fields["kind"].default for cls in config_classes(union)}
        assert tags == set(table), f"{name}: union {sorted(tags)} vs dict {sorted(table)}"


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
    union, _ = categories()[category]
    (cls,) = [c for c in config_classes(union) if c.model_fields["kind"].default == kind]
    required = {k: v for k, v in REQUIRED.get(category, {}).items() if k in cls.model_fields}
    cfg = TypeAdapter(union).validate_python({"kind": kind, **required})
    if category in ("sources", "eval"):
        assert build(cfg) is not None
        return
    x = torch.randn(4, 12, 1000, requires_grad=True)
    if category == "ssl":
        from ecgforge.encoders import EncoderConfig

        enc_cfg = TypeAdapter(EncoderConfig).validate_python(SMALL_ENCODER_FOR.get(kind, {"kind": "resnet1d", "width": 8}))
        obj = build(cfg, encoder=build(enc_cfg), fs_hz=100.0, window=1000, n_leads=12, n_classes=2)
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
    module = build(cfg, fs_hz=100.0)
    y = module(x)
    assert torch.isfinite(y).all()
    y.float().mean().backward()
