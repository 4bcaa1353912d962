"""Objectives: properties from the papers on small seeded models (not shapes)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ecgforge.augment.leads import RandomLeadMask
from ecgforge.augment.noise import GaussianNoise
from ecgforge.augment.three_kg_views import ThreeKG
from ecgforge.encoders.cpc import CPC
from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.encoders.wav2vec2 import Wav2Vec2
from ecgforge.encoders.xresnet1d import XResNet1d
from ecgforge.errors import UserError
from ecgforge.maskers.unet1d import UNet1d
from ecgforge.objectives import OBJECTIVES
from ecgforge.objectives.adv_mask import AdvMask
from ecgforge.objectives.byol import BYOL, cosine_tau
from ecgforge.objectives.cmsc import CMSC
from ecgforge.objectives.cpc import CPCObjective
from ecgforge.objectives.losses import nt_xent
from ecgforge.objectives.supervised import Supervised
from ecgforge.objectives.three_kg import ThreeKGObjective
from ecgforge.objectives.w2v_cmsc_rlm import W2VCMSCRLM
from ecgforge.objectives.wav2vec2 import GumbelQuantiser, Wav2Vec2Objective, compute_mask_indices
from ecgforge.registry import build
from tests.components import make

# ------------------------------------------------------------------------------------------ helpers


def ecg_like(b: int, t: int, fs: float = 100.0, seed: int = 0) -> Tensor:
    """(B, 12, T) quasi-periodic signals with per-sample rate, phase and lead gains (mV scale)."""
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t) / fs
    rate = 1.0 + 1.0 * torch.rand(b, 1, 1, generator=g)  # beats per second
    phase = 2 * math.pi * torch.rand(b, 1, 1, generator=g)
    gains = torch.randn(b, 12, 1, generator=g)
    beat = torch.sin(2 * math.pi * rate * time + phase) ** 15  # narrow peaks, QRS-like
    return gains * beat + 0.05 * torch.randn(b, 12, t, generator=g)


def small_resnet() -> ResNet1d:
    return make(ResNet1d, depth=18, width=8)


def small_wav2vec2() -> Wav2Vec2:
    return make(Wav2Vec2, conv_layers=[(32, 2, 2)] * 4, layers=1, dim=32, heads=2, ffn_dim=64, conv_pos=16,
                    conv_pos_groups=4, dropout=0.0, attention_dropout=0.0, dropout_input=0.0, dropout_features=0.0)


def small_cpc() -> CPC:
    return make(CPC, frontend="conv", features=[32, 32], strides=[2, 2], kernel_sizes=[4, 4], hidden=32, lstm_layers=1)


def batch_of(x: Tensor, **extra: Tensor) -> dict[str, Tensor]:
    b = x.shape[0]
    return {"x": x, "patient": torch.arange(b), "record": torch.arange(b), **extra}


def loss_at(obj: nn.Module, batch: dict[str, Tensor], phase: str, seed: int = 123) -> float:
    """The objective's loss with fixed random draws (augmentations, masks, negatives)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(obj(batch, phase)[0])


def train(obj: nn.Module, batch: dict[str, Tensor], steps: int, lr: float = 1e-3, phase: str = "encoder",
          params: list[nn.Parameter] | None = None, opt: str = "adam") -> None:
    params = params if params is not None else obj.param_groups()[phase]
    optim = torch.optim.Adam(params, lr=lr) if opt == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    for step in range(steps):
        loss, _ = obj(batch, phase)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        obj.on_step_end(step + 1, steps)


# -------------------------------------------------------------------------------------- registry


def test_every_objective_kind_is_registered_and_builds_from_defaults() -> None:
    kinds = {c.model_fields["kind"].default for c in OBJECTIVES.configs()}
    assert kinds == set(OBJECTIVES)
    built = build(OBJECTIVES, OBJECTIVES.config("adv_mask")(), encoder=small_resnet(), fs_hz=100.0, window=250, n_leads=12)
    assert isinstance(built, AdvMask) and isinstance(built.masker, UNet1d)


def test_cpc_and_wav2vec2_refuse_other_encoders_naming_the_field() -> None:
    with pytest.raises(UserError, match="model.encoder.kind"):
        CPCObjective(small_resnet(), nn.Sequential())
    with pytest.raises(UserError, match="model.encoder.kind"):
        Wav2Vec2Objective(small_resnet(), nn.Sequential())


# ------------------------------------------------------------------------------------ adversarial


class TinyEncoder(nn.Module):
    """Two strided convs + mean: enough for the masker tests, which are about the masker and the penalty."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(12, 32, 9, 2), nn.BatchNorm1d(32), nn.ReLU(), nn.Conv1d(32, 32, 9, 2))
        self.embed_dim = 32

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean(-1)


def small_advmask(alpha: float = 1.0, binarization: float = 50.0, n_masks: int = 1, encoder: nn.Module | None = None) -> AdvMask:
    return AdvMask(encoder or TinyEncoder(), make(UNet1d, n_masks=n_masks, width=4), nn.Sequential(), temperature=0.1,
                   sparsity_alpha=alpha, binarization=binarization, projector_hidden=32, projector_dim=16)


def nce_of(obj: AdvMask, batch: dict[str, Tensor]) -> float:
    """NT-Xent(view1, masked view2) as both phases see it (no augmentation: views are x)."""
    torch.manual_seed(7)
    with torch.no_grad():
        x = batch["x"]
        z1 = obj.projector(obj.encoder(x))
        z2 = obj.projector(obj.encoder(obj.apply_mask(x, obj.masker(x))))
        return float(nt_xent(z1, z2, obj.temperature))


def test_adv_mask_masker_step_raises_and_encoder_step_lowers_the_contrastive_loss() -> None:
    obj = small_advmask(alpha=0.0, binarization=0.0)
    batch = batch_of(ecg_like(16, 250))
    before = nce_of(obj, batch)
    train(obj, batch, 1, lr=1e-2, phase="masker")
    after_masker = nce_of(obj, batch)
    train(obj, batch, 1, lr=1e-3, phase="encoder")
    after_encoder = nce_of(obj, batch)
    assert after_masker > before
    assert after_encoder < after_masker


def test_adv_mask_phases_only_train_their_own_group() -> None:
    obj = small_advmask()
    batch = batch_of(ecg_like(8, 250))
    loss, _ = obj(batch, "masker")
    loss.backward()
    assert all(p.grad is None for p in [*obj.encoder.parameters(), *obj.projector.parameters()])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.masker.parameters())
    obj.zero_grad(set_to_none=True)
    loss, _ = obj(batch, "encoder")
    loss.backward()
    assert all(p.grad is None for p in obj.masker.parameters())
    assert all(p.requires_grad for p in obj.encoder.parameters())  # the freeze was undone


def mean_mask_after_masker_steps(alpha: float, steps: int = 30) -> float:
    torch.manual_seed(0)
    obj = small_advmask(alpha=alpha)
    batch = batch_of(ecg_like(16, 250))
    train(obj, batch, steps, lr=2e-2, phase="masker")
    with torch.no_grad():
        return float(obj.masks(batch["x"]).mean())


@pytest.mark.slow  # ~20-60 s on a busy 2-core CPU
def test_adv_mask_sparsity_penalty_keeps_masks_partial() -> None:
    with_penalty = mean_mask_after_masker_steps(alpha=1.0)
    without = mean_mask_after_masker_steps(alpha=0.0)
    # ADIOS's failure mode: maximising the loss alone, masks grow toward all-on (erasing view 2).
    assert 0.2 < with_penalty < 0.8
    assert without > with_penalty + 0.1
    assert abs(with_penalty - 0.5) < abs(without - 0.5)  # the penalty is smallest at half coverage


def test_adv_mask_applies_one_mask_to_every_lead_and_binarises() -> None:
    obj = small_advmask(n_masks=3)
    x = torch.ones(4, 12, 50)
    masks = torch.rand(4, 3, 50)
    out = obj.apply_mask(x, masks)
    assert torch.allclose(out, out[:, :1].expand_as(out))  # identical across leads
    soft = 1 - out[:, 0]
    hard = [torch.sigmoid(50 * (masks[:, m] - 0.5)) for m in range(3)]
    for i in range(4):  # each sample used exactly one of its masks, binarised
        assert any(torch.allclose(soft[i], h[i], atol=1e-6) for h in hard)


# ------------------------------------------------------------------------------------------- BYOL


def test_byol_target_gets_no_gradient_and_follows_the_ema_formula() -> None:
    obj = BYOL(small_resnet(), make(GaussianNoise, std_mv=0.05), base_tau=0.9, projector_hidden=64, projector_dim=32,
               predictor_hidden=64)
    batch = batch_of(ecg_like(8, 250))
    target_ids = {id(p) for p in [*obj.target_encoder.parameters(), *obj.target_projector.parameters()]}
    assert not any(id(p) in target_ids for p in obj.param_groups()["encoder"])
    optim = torch.optim.SGD(obj.param_groups()["encoder"], lr=0.5)
    loss, _ = obj(batch, "encoder")
    loss.backward()
    assert all(p.grad is None for p in [*obj.target_encoder.parameters(), *obj.target_projector.parameters()])
    optim.step()
    online = [p.detach().clone() for p in [*obj.encoder.parameters(), *obj.projector.parameters()]]
    target = [p.detach().clone() for p in [*obj.target_encoder.parameters(), *obj.target_projector.parameters()]]
    assert any(not torch.equal(o, t) for o, t in zip(online, target, strict=True))  # the step moved the online net
    tau = float(obj.tau)
    obj.on_step_end(1, 10)
    new_target = [*obj.target_encoder.parameters(), *obj.target_projector.parameters()]
    for o, t, n in zip(online, target, new_target, strict=True):
        torch.testing.assert_close(n.detach(), tau * t + (1 - tau) * o)
    assert float(obj.tau) == pytest.approx(cosine_tau(0.9, 1, 10))


def test_byol_tau_schedule_rises_from_base_to_one() -> None:
    taus = [cosine_tau(0.99, k, 100) for k in range(101)]
    assert taus[0] == pytest.approx(0.99) and taus[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))


# ---------------------------------------------------------------------------------------- wav2vec2


def test_span_masking_covers_the_expected_fraction() -> None:
    t, length, prob = 156, 10, 0.65
    free = compute_mask_indices(512, t, prob, length, require_same_masks=False)
    # Spans placed independently: P(step uncovered) ≈ (1 − L/(T − L))^n with n = p·T/L spans, so the
    # fraction masked is mask_prob less the overlaps (≈ 0.51 here, not 0.65).
    n_spans = prob * t / length
    expected = 1 - (1 - length / (t - length)) ** n_spans
    assert free.float().mean().item() == pytest.approx(expected, abs=0.04)
    same = compute_mask_indices(8, t, prob, length)
    counts = same.sum(dim=1)
    assert (counts == counts[0]).all()  # require_same_masks: every row masks the same number of tokens
    assert 0.3 < same.float().mean().item() <= free.float().mean().item() + 0.05


def test_quantiser_uses_more_than_one_code_and_anneals_temperature() -> None:
    q = GumbelQuantiser(dim=32, groups=2, entries=320, vq_dim=64, temp=(2.0, 0.5, 0.999995))
    out, prob_ppl, code_ppl = q(torch.randn(500, 32))
    assert out.shape == (500, 64)
    assert code_ppl.item() > 2.0  # perplexity summed over 2 groups: > 2 means more than one code per group
    q.set_num_updates(10**7)
    assert float(q.curr_temp) == pytest.approx(0.5)
    q.set_num_updates(1000)
    assert float(q.curr_temp) == pytest.approx(2.0 * 0.999995**1000)


@pytest.mark.slow  # ~20-60 s on a busy 2-core CPU
def test_wav2vec2_objective_masks_configured_fraction_and_learns() -> None:
    obj = Wav2Vec2Objective(small_wav2vec2(), nn.Sequential(), final_dim=32, n_negatives=20, quantiser_entries=16)
    batch = batch_of(ecg_like(8, 2000, fs=500.0))
    _, logs = obj(batch, "encoder")
    assert 0.35 < logs["mask_frac"].item() < 0.6
    assert logs["code_perplexity"].item() > 2.0
    before = loss_at(obj, batch, "encoder")
    train(obj, batch, 15, lr=1e-3)
    assert loss_at(obj, batch, "encoder") < before


# --------------------------------------------------------------------------------------------- CPC


@pytest.mark.slow  # ~20-60 s on a busy 2-core CPU
def test_cpc_multi_step_loss_falls_on_predictable_signals() -> None:
    obj = CPCObjective(small_cpc(), nn.Sequential(), form="multi_step", n_steps=4, n_negatives=16, negatives_from_same_seq_only=True)
    batch = batch_of(ecg_like(16, 400))
    before = loss_at(obj, batch, "encoder")
    train(obj, batch, 30, lr=0.05, opt="sgd")
    after = loss_at(obj, batch, "encoder")
    assert after < before - 0.3
    assert after < math.log(17)  # better than chance among 1 + 16 candidates


def test_cpc_multi_step_batch_negatives_also_learn() -> None:
    obj = CPCObjective(small_cpc(), nn.Sequential(), form="multi_step", n_steps=2, n_negatives=32, negatives_from_same_seq_only=False)
    batch = batch_of(ecg_like(4, 128))
    before = loss_at(obj, batch, "encoder")
    train(obj, batch, 20, lr=0.05, opt="sgd")
    assert loss_at(obj, batch, "encoder") < before


@pytest.mark.parametrize("same_seq", [True, False])
def test_cpc_single_step_loss_falls_below_chance(same_seq: bool) -> None:
    obj = CPCObjective(small_cpc(), nn.Sequential(), n_steps=4, n_negatives=16, negatives_from_same_seq_only=same_seq)
    batch = batch_of(ecg_like(8, 200))
    n_positions = 200 // 4 - 4  # 50 latents, predicted 4 ahead
    before = loss_at(obj, batch, "encoder")
    train(obj, batch, 30, lr=1e-3, opt="adam")
    after = loss_at(obj, batch, "encoder")
    assert after < before and after < n_positions * math.log(17)  # summed over positions, 1 + 16 candidates


# -------------------------------------------------------------------------------------------- CMSC


def test_cmsc_treats_segments_of_one_record_as_positives() -> None:
    obj = CMSC(small_resnet(), nn.Sequential(), projector_hidden=64, projector_dim=32)
    x = ecg_like(16, 250)
    same = batch_of(torch.stack([x, x], dim=1))
    shuffled = batch_of(torch.stack([x, x[torch.roll(torch.arange(16), 1)]], dim=1))
    assert loss_at(obj, same, "encoder") < loss_at(obj, shuffled, "encoder") - 0.5


def test_cmsc_per_patient_groups_records_of_a_patient() -> None:
    obj = CMSC(small_resnet(), nn.Sequential(), per_patient=True, projector_hidden=64, projector_dim=32)
    x = ecg_like(8, 250)
    seg = torch.stack([x, x], dim=1)
    # Records 0 and 1 (different signals) belong to patient 0: per patient, each is a positive of the other,
    # which a random encoder does not yet map together, so the loss is higher than with records alone.
    by_patient = {"x": seg, "patient": torch.tensor([0, 0, 1, 2, 3, 4, 5, 6]), "record": torch.arange(8)}
    alone = {**by_patient, "patient": torch.arange(8)}
    assert loss_at(obj, by_patient, "encoder") > loss_at(obj, alone, "encoder") + 0.1


# ------------------------------------------------------------------------------------- supervised


@pytest.mark.parametrize("kind", ["multilabel", "multiclass", "regression"])
def test_supervised_loss_falls(kind: str) -> None:
    x = ecg_like(8, 128)
    amp = x.abs().amax(dim=(1, 2))
    if kind == "multilabel":
        y, n = torch.stack([amp > amp.median(), x[:, 0].mean(-1) > 0], dim=1).float(), 2
    elif kind == "multiclass":
        y, n = (amp > amp.median()).long(), 2
    else:
        y, n = amp.float(), 1
    obj = Supervised(small_resnet(), "task", nn.Sequential(), n_classes=n)
    batch = batch_of(x, y=y)
    before = loss_at(obj, batch, "encoder")
    train(obj, batch, 10, lr=1e-3)
    assert loss_at(obj, batch, "encoder") < 0.8 * before


# ----------------------------------------------------------------- encoder × objective of the recipes


def make_pair(name: str) -> tuple[nn.Module, dict[str, Tensor], str]:
    small_proj = dict(projector_hidden=64, projector_dim=32)
    x100 = ecg_like(8, 128)
    if name == "resnet1d-adv_mask":
        return small_advmask(encoder=small_resnet()), batch_of(x100), "encoder"
    if name == "resnet1d-simclr":
        from ecgforge.objectives.simclr import SimCLR

        return SimCLR(small_resnet(), make(GaussianNoise, std_mv=0.05), **small_proj), batch_of(x100), "encoder"
    if name == "resnet1d-three_kg":
        obj = ThreeKGObjective(small_resnet(), make(ThreeKG), nn.Sequential(), patient_positives=True, **small_proj)
        return obj, batch_of(x100), "encoder"
    if name == "xresnet1d-simclr":
        from ecgforge.objectives.simclr import SimCLR

        return SimCLR(make(XResNet1d, depth=50, width=4), make(GaussianNoise, std_mv=0.05), **small_proj), batch_of(x100[:4]), "encoder"
    if name == "xresnet1d-byol":
        obj = BYOL(make(XResNet1d, depth=50, width=4), make(GaussianNoise, std_mv=0.05), projector_hidden=64, projector_dim=32,
                   predictor_hidden=64)
        return obj, batch_of(x100[:4]), "encoder"
    if name == "cpc-cpc":
        return CPCObjective(small_cpc(), nn.Sequential(), n_steps=4, n_negatives=16), batch_of(x100), "encoder"
    x500 = ecg_like(8, 1000, fs=500.0)
    seg = torch.stack([x500, torch.roll(x500, 100, dims=-1)], dim=1)
    w2v = dict(final_dim=32, n_negatives=20, quantiser_entries=16)
    if name == "wav2vec2-wav2vec2":
        return Wav2Vec2Objective(small_wav2vec2(), nn.Sequential(), **w2v), batch_of(x500), "encoder"
    if name == "wav2vec2-cmsc":
        return CMSC(small_wav2vec2(), nn.Sequential(), **small_proj), batch_of(seg), "encoder"
    if name == "wav2vec2-w2v_cmsc_rlm":
        return W2VCMSCRLM(small_wav2vec2(), nn.Sequential(), make(RandomLeadMask, p_lead=0.5), **w2v), batch_of(seg), "encoder"
    raise KeyError(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["resnet1d-adv_mask", "resnet1d-simclr", "resnet1d-three_kg", "xresnet1d-simclr", "xresnet1d-byol", "cpc-cpc",
     "wav2vec2-wav2vec2", "wav2vec2-cmsc", "wav2vec2-w2v_cmsc_rlm"],
)
def test_recipe_pairs_train_with_falling_loss(name: str) -> None:
    obj, batch, phase = make_pair(name)
    before = loss_at(obj, batch, phase)
    train(obj, batch, 5, lr=1e-3, phase=phase)
    after = loss_at(obj, batch, phase)
    assert math.isfinite(after) and after < before
