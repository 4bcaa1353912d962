"""The ECG foundation-model benchmark's heads (Al-Masud, Lopez Alcaraz & Strodthoff, ICLR 2026): a frozen
encoder under a learnable-query attention-pooling head, fine-tuning with layer-wise learning rates, and frozen
encoders that stay frozen (BatchNorm running statistics included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecgforge.errors import UserError
from ecgforge.evaluation.finetune import Classifier, Finetune, FinetuneConfig, layer_halves, param_groups
from ecgforge.evaluation.heads import AttentionPoolHead, fit_linear_head
from ecgforge.evaluation.linear_probe import LinearProbe
from ecgforge.evaluation.robustness import Robustness
from tests.evaluation.test_protocols import Reader, _protocol, cache, context  # noqa: F401 (fixture)


class TinySeq(nn.Module):
    """Conv, BatchNorm, ReLU; ``forward_features`` gives the token sequence (B, 8, T'), ``forward`` its mean."""

    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(12, 8, 9, stride=4), nn.BatchNorm1d(8), nn.ReLU())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(-1)


class PooledOnly(nn.Module):
    """An encoder that gives only a pooled embedding (no forward_features)."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean(-1))


class HalfReader(nn.Module):
    """Two tokens per window: the `Reader` features (per-lead RMS, low-frequency spectrum) of each half."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.reader = Reader(window // 2)
        self.embed_dim = self.reader.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.stack([self.reader(x[..., :half]), self.reader(x[..., half:2 * half])], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(-1)


def seeded(cls: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return cls()


def bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every buffer (BatchNorm running mean / var / batches tracked), copied."""
    return {k: v.detach().clone() for k, v in module.named_buffers()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ attention pooling head


def test_attention_pool_is_the_benchmarks_multi_head_attention_forward() -> None:
    """ecg-fm-benchmarking ``clinical_ts/utils/heads.py`` ``LearnableQueryAttentionPool1d(bias=False)``: the
    learned query through ``F.multi_head_attention_forward`` with separate q/k/v projections and the output
    projection to the classes; ours must give the same logits with the same weights."""
    torch.manual_seed(0)
    head = AttentionPoolHead(dim=32, n_out=5, heads=4)
    tokens = torch.randn(3, 7, 32)
    x = tokens.permute(1, 0, 2)  # (T, B, C), as the reference calls it
    want, _ = F.multi_head_attention_forward(
        query=head.query.repeat(1, x.shape[1], 1), key=x, value=x, embed_dim_to_check=32, num_heads=4,
        q_proj_weight=head.q_proj.weight, k_proj_weight=head.k_proj.weight, v_proj_weight=head.v_proj.weight,
        in_proj_weight=None, in_proj_bias=None, bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=head.c_proj.weight, out_proj_bias=None, use_separate_proj_weight=True, training=False,
        need_weights=False)
    torch.testing.assert_close(head(tokens), want[0], rtol=1e-5, atol=1e-6)
    assert not any(n.endswith("bias") for n, _ in head.named_parameters())
    with pytest.raises(ValueError, match="do not divide"):
        AttentionPoolHead(dim=30, n_out=2, heads=4)


def test_attention_head_learns_from_tokens_alone() -> None:
    """The label is in the second token only; the learned query must find it."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 3, 8)).astype(np.float32)
    x[:, 1, 0] += 3.0 * (2 * y - 1)
    head = fit_linear_head(x[:300], y[:300], "multiclass", 2, epochs=40, lr=1e-2, seed=0, attention_heads=2)
    assert head.sequence
    accuracy = (head.scores(x[300:]).argmax(1) == y[300:]).mean()
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="token sequences"):
        fit_linear_head(x[:, 0], y, "multiclass", 2, epochs=1, attention_heads=2)


def test_attention_probe_rows_read_the_rhythm_from_the_token_sequence(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: HalfReader(250) if init == "pretrained" else seeded(TinySeq, seed))
    rows = _protocol(LinearProbe, task="label", head="attention", head_heads=2, epochs=60, lr=3e-3, seeds=[0],
                     bootstrap=0).run(ctx)
    assert {r["kind"] for r in rows} == {"attention_probe"} and {r["init"] for r in rows} == {"pretrained", "random"}
    reader = next(r for r in rows if r["init"] == "pretrained")
    assert reader["metrics"]["macro_auroc"] > 0.9
    # The tokens were embedded (windows x tokens x channels) and cached apart from the pooled embeddings.
    shapes = {v.shape[1:] for k, v in ctx.features._features.items() if k[-1] is True}
    assert shapes == {(2, HalfReader(250).embed_dim), (61, 8)}  # HalfReader's 2 tokens, TinySeq's (250-9)//4+1
    assert not any(k[-1] is False for k in ctx.features._features)  # no pooled embedding was computed


def test_attention_head_on_an_encoder_without_tokens_is_one_line(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: seeded(PooledOnly, seed))
    with pytest.raises(UserError, match="linear_probe head = 'attention' needs the encoder's token sequence"):
        _protocol(LinearProbe, task="label", head="attention", head_heads=2, epochs=1, bootstrap=0).run(ctx)


def test_heads_that_do_not_divide_the_width_name_the_field(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: seeded(TinySeq, seed))
    with pytest.raises(UserError, match=r"linear_probe\.head_heads: 3 heads do not divide .* width 8"):
        _protocol(LinearProbe, task="label", head="attention", head_heads=3, epochs=1, bootstrap=0).run(ctx)


def test_robustness_scores_an_attention_head_on_noisy_tokens(cache) -> None:  # noqa: ANN001, F811
    ctx = context(cache, lambda init, seed: seeded(TinySeq, seed))
    rows = _protocol(Robustness, task="label", head="attention", head_heads=2, epochs=2, inits=["pretrained"],
                     noise_levels=[3], lead_subsets=["1"], bootstrap=0).run(ctx)
    assert [(r["noise_level"], r["leads"]) for r in rows] == [(0, "12"), (3, "12"), (0, "1")]
    assert all(r["metrics"]["macro_auroc"] is not None for r in rows)


# ------------------------------------------------------------------------------- frozen means frozen (BN)


def test_training_mode_would_move_the_running_statistics() -> None:
    """The control of the tests below: one forward pass in training mode changes TinySeq's BatchNorm buffers."""
    enc = seeded(TinySeq, 0)
    before = bn_state(enc)
    enc.train()(torch.randn(4, 12, 250))
    assert not same(before, bn_state(enc))


@pytest.mark.parametrize("head", ["linear", "mlp", "attention"])
def test_a_frozen_encoder_probe_leaves_batchnorm_statistics_unchanged(cache, head: str) -> None:  # noqa: ANN001, F811
    shared = seeded(TinySeq, 0).train()  # handed out as is, in training mode, as a freshly loaded encoder is
    before = bn_state(shared)
    ctx = context(cache, lambda init, seed: shared)
    rows = _protocol(LinearProbe, task="label", inits=["pretrained"], head=head, head_heads=2, head_hidden=8,
                     epochs=2, bootstrap=0).run(ctx)
    assert len(rows) == 1 and same(before, bn_state(shared))
    assert shared.training  # the mode it came in is given back


def test_the_frozen_random_init_and_the_head_warm_up_leave_batchnorm_statistics_unchanged(cache) -> None:  # noqa: ANN001, F811
    made: list[nn.Module] = []

    def make(init: str, seed: int) -> nn.Module:
        made.append(seeded(TinySeq, seed).train())
        return made[-1]

    ctx = context(cache, make)
    reference = bn_state(seeded(TinySeq, 0))
    rows = _protocol(Finetune, task="label", inits=["random"], head_epochs=2, epochs=1, min_steps=4, bootstrap=0,
                     batch_size=8).run(ctx)
    assert not rows[0]["encoder_changed"] and same(reference, bn_state(made[0]))
    # The whole network trains after the warm-up; with no whole-network step (steps = 0) the warm-up alone
    # must leave the pretrained encoder's statistics as they were.
    made.clear()
    _protocol(Finetune, task="label", inits=["pretrained"], head_epochs=2, steps=0, bootstrap=0,
              batch_size=8).run(ctx)
    assert same(reference, bn_state(made[0]))


# ------------------------------------------------------------------------------- layer-wise learning rates


class Net(nn.Module):
    """A stem, a stack of four blocks (``layer1`` ... ``layer4``, as MERL's ResNet-18 names them) and a norm."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(12, 4, 3)
        self.bn1 = nn.BatchNorm1d(4)
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)))
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        for i in range(1, 5):
            h = getattr(self, f"layer{i}")(h)
        return self.norm(h.mean(-1))


def names(module: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n.split(".")[0] for n, p in module.named_parameters() if id(p) in ids}


def test_layer_halves_split_the_main_stack_as_the_benchmark_does() -> None:
    """ecg-fm-benchmarking ``fm_ecg.py`` ``MerlWrapper.get_params``: conv1, bn1, layer1, layer2 early (x0.01);
    layer3, layer4 late (x0.1)."""
    net = Net()
    early, late, line = layer_halves(net)
    assert names(net, early) == {"conv1", "bn1", "layer1", "layer2"}
    assert names(net, late) == {"layer3", "layer4", "norm"}
    assert "2 of 4 blocks" in line and len(early) + len(late) == len(list(net.parameters()))

    class Seven(nn.Module):  # ECGFounder: first_conv + stage_list of 7 -> stem and stages 0-2 early
        def __init__(self) -> None:
            super().__init__()
            self.first_conv = nn.Conv1d(12, 4, 3)
            self.stage_list = nn.ModuleList(nn.ModuleList([nn.Linear(4, 4)] * 2) for _ in range(7))

    seven = Seven()
    early, late, _ = layer_halves(seven)
    want = {n for n, _ in seven.named_parameters() if n.startswith(("first_conv", "stage_list.0.", "stage_list.1.",
                                                                     "stage_list.2."))}
    got = {n for n, p in seven.named_parameters() if any(p is q for q in early)}
    assert got == want and len(late) == len(list(seven.parameters())) - len(early)

    class Hooked(Net):
        def layerwise_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
            return list(self.conv1.parameters()), [p for n, p in self.named_parameters() if not n.startswith("conv1")]

    early, _, line = layer_halves(Hooked())
    assert len(early) == 2 and line == "Hooked.layerwise_groups()"


def test_layerwise_groups_are_x1_x01_x001() -> None:
    model = Classifier(Net(), 3)
    groups = param_groups(model, 1e-3, 1.0, None, 0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3), ("late", pytest.approx(1e-4)),
                                                      ("early", pytest.approx(1e-5))]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert names(model.encoder, groups[2]["params"]) == {"conv1", "bn1", "layer1", "layer2"}
    with pytest.raises(ValueError, match="not both"):
        FinetuneConfig(task="label", lr_group_factor=0.25, layerwise_lr_factor=0.1)


def test_finetune_rows_report_the_layerwise_rates(cache) -> None:  # noqa: ANN001, F811
    made: list[nn.Module] = []

    def make(init: str, seed: int) -> nn.Module:
        made.append(seeded(Net, seed))
        return made[-1]

    ctx = context(cache, make)
    rows = _protocol(Finetune, task="label", inits=["pretrained"], head_epochs=0, steps=3, lr=1e-2,
                     layerwise_lr_factor=0.1, bootstrap=0, batch_size=8).run(ctx)
    r = rows[0]
    assert r["lr_groups"] == {"head": 1e-2, "late": pytest.approx(1e-3), "early": pytest.approx(1e-4)}
    assert r["encoder_lr"] == pytest.approx(1e-3) and r["encoder_changed"]
    n = {k: sum(p.numel() for p in v) for k, v in zip(("early", "late"), layer_halves(made[0])[:2], strict=True)}
    assert {k: r["lr_group_parameters"][k] for k in n} == n and "2 of 4 blocks" in r["layer_split"]
