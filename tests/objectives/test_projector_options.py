"""Issue 26's side-by-side reading: the projection heads of the reference code.

- jessica-bo/advmask_ecg ``model/base_model.py`` ``BaseModel.__init__``: ``nn.Sequential(nn.Linear(embedding_dim,
  proj_hidden_dim), nn.ReLU(), nn.Linear(proj_hidden_dim, output_dim))``, no batch norm; ``projector_bn = false``.
- fairseq-signals ``models/3kg/_3kg.py`` ``_3KGModel.get_logits`` and ``models/clocs/clocs.py``
  ``ClocsModel.get_logits`` (``aggregate=True``): the loss on the time-mean of the encoder output, no projector;
  ``projector_dim = 0``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from ecgforge.objectives.adv_mask import AdvMask
from ecgforge.objectives.cmsc import CMSC
from ecgforge.objectives.losses import cmsc_loss, three_kg_loss
from ecgforge.objectives.three_kg import ThreeKGObjective
from tests.objectives.test_adv_mask_reference import Tiny
from tests.objectives.test_objectives import make_objective

ROOT = Path(__file__).resolve().parents[2]


def layer_types(head: nn.Module) -> list[type]:
    return [type(m) for m in head]


def build(cls: type, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    extra = {"masker": {"kind": "unet1d", "n_masks": 1, "width": 4}} if cls is AdvMask else {}
    return make_objective(cls, Tiny(), **{"projector_hidden": 32, "projector_dim": 8, **extra, **kw})


@pytest.mark.parametrize("cls", [AdvMask, ThreeKGObjective])
def test_projector_bn_false_is_the_authors_linear_relu_linear(cls: type) -> None:
    default = build(cls).projector
    assert layer_types(default) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]  # unchanged default
    head = build(cls, projector_bn=False).projector
    assert layer_types(head) == [nn.Linear, nn.ReLU, nn.Linear]
    assert head[0].bias is not None and (head[0].in_features, head[0].out_features, head[2].out_features) == (16, 32, 8)


def test_three_kg_without_projector_scores_the_encoder_output() -> None:
    obj = build(ThreeKGObjective, projector_dim=0, patient_positives=False)
    assert not list(obj.projector.parameters())
    obj.view = nn.Identity()  # the 3KG views are random; the head is what is under test
    x = torch.randn(6, 12, 100, generator=torch.Generator().manual_seed(1))
    loss, _ = obj({"x": x}, "encoder")
    h = obj.encoder(x)
    ids = torch.arange(6)
    assert loss.item() == pytest.approx(three_kg_loss(torch.cat([h, h]), torch.cat([ids, ids]), 0.1).item(), rel=1e-6)


def test_cmsc_without_projector_scores_the_encoder_output() -> None:
    obj = build(CMSC, projector_dim=0)
    assert not list(obj.projector.parameters())
    x = torch.randn(5, 2, 12, 100, generator=torch.Generator().manual_seed(2))
    record = torch.arange(5)
    loss, _ = obj({"x": x, "record": record, "patient": record}, "encoder")
    want = cmsc_loss(obj.encoder(x[:, 0]), obj.encoder(x[:, 1]), record, record, 0.1)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    with_head = build(CMSC)
    assert with_head({"x": x, "record": record, "patient": record}, "encoder")[0].item() != pytest.approx(want.item())


def ssl_of(path: str) -> dict:
    return tomllib.loads((ROOT / path).read_text())["ssl"]


@pytest.mark.parametrize("path", [*sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes/papers/advmask").glob("*.toml")),
                                  "recipes/ptbxl_cpu/adv_mask_authors.toml"])
def test_recipes_of_the_authors_setting_use_their_projector(path: str) -> None:
    assert ssl_of(path)["projector_bn"] is False


def test_lead_agnostic_cmsc_has_no_projector_as_fairseq_signals() -> None:
    assert ssl_of("recipes/papers/lead_agnostic/cmsc.toml")["projector_dim"] == 0
