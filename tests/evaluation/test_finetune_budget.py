"""Fine-tuning in optimiser steps, its reference options (head, discriminative rates, wav2vec2 front end),
and the frozen MLP probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from ecgforge.evaluation.finetune import Classifier, Finetune, budget_steps, param_groups
from ecgforge.evaluation.heads import reference_mlp_head
from ecgforge.evaluation.linear_probe import LinearProbe
from ecgforge.layers.weights import state_dict_hash
from ecgforge.registry import BuildContext
from tests.evaluation.test_protocols import _protocol, cache, context, tiny_encoder  # noqa: F401 (fixture)


def test_budget_rule() -> None:
    assert budget_steps(10, 3, 500, None) == 500  # 1 % of the labels: the floor rules
    assert budget_steps(10, 272, 500, None) == 2720  # all of them: epochs rule, as before
    assert budget_steps(10, 272, 500, 40) == 40  # `steps` is exact


def test_rows_carry_steps_and_the_chosen_step(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: tiny_encoder(seed))
    rows = _protocol(Finetune, task="label", inits=["supervised", "random"], label_fractions=[0.3, 1.0],
                     head_epochs=1, epochs=1, min_steps=12, val_every_steps=4, bootstrap=0, batch_size=8).run(ctx)
    for r in rows:
        assert r["head_steps"] >= 1 and r["steps"] >= r["head_steps"] + (12 if r["init"] == "supervised" else 0)
        assert 0 < r["selected_step"] <= r["steps"] and 0 <= r["val_score"] <= 1
        if r["init"] == "supervised":  # candidates: every 4th whole-network step and the last
            assert r["selected_step"] > r["head_steps"]
            assert (r["selected_step"] - r["head_steps"]) % 4 == 0 or r["selected_step"] == r["steps"]
    small = [r for r in rows if r["init"] == "supervised" and r["label_fraction"] == 0.3][0]
    assert small["steps"] == small["head_steps"] + 12  # the floor does not shrink with the fraction


def test_reference_mlp_head_is_create_head1d() -> None:
    """hhi-aml/ecg-selfsupervised ``clinical_ts/basic_conv1d.py``: ``create_head1d(nf, nc, lin_ftrs=[512],
    ps=0.5, bn=True)`` builds, after pooling, ``bn_drop_lin`` per layer (BatchNorm1d, Dropout(p), Linear, act)
    with ``ps = [ps/2] * (len(lin_ftrs) - 2) + [ps]`` and ReLU on all but the last."""
    nf, nc, ps, lin_ftrs = 64, 5, 0.5, [64, 512, 5]
    ps_list = [ps / 2] * (len(lin_ftrs) - 2) + [ps]
    actns = ["relu"] * (len(lin_ftrs) - 2) + [None]
    want: list[tuple[str, object]] = []
    for ni, no, p, act in zip(lin_ftrs[:-1], lin_ftrs[1:], ps_list, actns, strict=True):
        want += [("BatchNorm1d", ni), ("Dropout", p), ("Linear", (ni, no))]
        if act:
            want.append(("ReLU", None))
    head = reference_mlp_head(nf, nc, 512, 0.5)
    got = []
    for m in head:
        arg = {"BatchNorm1d": lambda m: m.num_features, "Dropout": lambda m: m.p,
               "Linear": lambda m: (m.in_features, m.out_features), "ReLU": lambda m: None}[type(m).__name__](m)
        got.append((type(m).__name__, arg))
    assert got == want


class Stack(nn.Module):
    """An encoder of five named blocks, like ecg-selfsupervised's ``features.0 .. features.4``."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        for i in range(5):
            self.add_module(f"b{i}", nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(5):
            x = getattr(self, f"b{i}")(x)
        return x


def test_discriminative_groups_follow_ecg_selfsupervised() -> None:
    """``configure_optimizer`` of hhi-aml/ecg-selfsupervised ``eval.py`` (xresnet1d, discriminative_lr):
    layer numbers sorted descending, taken in pairs (the last alone), groups = [linears] + pairs, and the
    lr starts at lr for the head and is divided by 4 for each next group."""
    model = Classifier(Stack(), 3)
    lr = 0.01
    layer_nrs = sorted(range(5), reverse=True)
    pairs = []
    while layer_nrs:
        pairs.append(layer_nrs[:2])
        del layer_nrs[:2]
    want, tmp = [(["head"], lr)], lr / 4
    for pair in pairs:
        want.append(([f"b{i}" for i in pair], tmp))
        tmp /= 4
    names = {id(p): n.split(".")[1] if n.startswith("encoder.") else "head" for n, p in model.named_parameters()}
    got = [(sorted({names[id(p)] for p in g["params"]}), g["lr"]) for g in param_groups(model, lr, 1.0, 0.25)]
    assert [(sorted(n), pytest.approx(v)) for n, v in want] == got
    plain = param_groups(model, lr, 0.1, None)
    assert [g["lr"] for g in plain] == [pytest.approx(1e-3), lr]


def test_wav2vec2_front_end_is_frozen_when_fine_tuning(cache) -> None:  # noqa: ANN001, F811
    """fairseq-signals ``examples/*/config/finetuning/ecg_transformer/diagnosis.yaml``: ``feature_grad_mult:
    0.0``; ``fairseq_signals/models/ecg_transformer.py`` then runs the feature extractor under ``no_grad``."""
    made: list[Wav2Vec2] = []

    def make(init: str, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        made.append(Wav2Vec2(Wav2Vec2Config(conv_layers=[(16, 2, 2)] * 2, layers=1, dim=16, heads=2, ffn_dim=32,
                                             conv_pos=8, conv_pos_groups=2, feature_grad_mult=0.1), BuildContext()))
        return made[-1]

    ctx = context(cache, make)

    def run(mult: float | None) -> tuple[str, str]:
        made.clear()
        _protocol(Finetune, task="label", inits=["pretrained"], head_epochs=0, epochs=1, min_steps=3, bootstrap=0,
                  batch_size=8, feature_grad_mult=mult).run(ctx)
        return made[0].feature_extractor, made[0].encoder

    fe, enc = run(0.0)
    torch.manual_seed(0)
    ref = Wav2Vec2(Wav2Vec2Config(conv_layers=[(16, 2, 2)] * 2, layers=1, dim=16, heads=2, ffn_dim=32, conv_pos=8,
                                  conv_pos_groups=2, feature_grad_mult=0.1), BuildContext())
    assert state_dict_hash(fe) == state_dict_hash(ref.feature_extractor)
    assert state_dict_hash(enc) != state_dict_hash(ref.encoder)
    fe, _ = run(None)  # the encoder's own 0.1: the front end trains
    assert state_dict_hash(fe) != state_dict_hash(ref.feature_extractor)


def test_mlp_probe_rows(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: tiny_encoder(seed))
    rows = _protocol(LinearProbe, task="label", head="mlp", head_hidden=16, epochs=5, bootstrap=0).run(ctx)
    assert {r["kind"] for r in rows} == {"mlp_probe"} and {r["init"] for r in rows} == {"pretrained", "random"}
    assert all(r["metrics"]["macro_auroc"] is not None for r in rows)
