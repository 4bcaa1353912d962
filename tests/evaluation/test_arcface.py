"""Patient identification, Oh et al.'s protocol: the ArcFace logits against fairseq-signals' formula, the
trained head on held-out patients, and intervals that resample patients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ecgforge.data.cache import Cache
from ecgforge.errors import UserError
from ecgforge.evaluation.arcface import ArcFaceHead, arcface_logits, fit_arcface
from ecgforge.evaluation.identification import Identification
from ecgforge.evaluation.retrieval import identification_ranks, patient_bootstrap_ci
from tests.evaluation.test_protocols import N_PATIENTS, N_REC, Reader, _protocol, cache, context  # noqa: F401


def _reference_arcface(logits: torch.Tensor, target: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Jwoo5/fairseq-signals ``fairseq_signals/criterions/arcface_criterion.py::ArcFaceCriterion.compute_loss``,
    the logits it feeds to cross-entropy, step by step as the reference writes them."""
    cos_m = math.cos(margin)
    sin_m = math.sin(margin)
    mm = sin_m * margin
    threshold = math.cos(math.pi - margin)
    cos_theta = logits
    sin_theta = torch.sqrt(1 - torch.pow(cos_theta, 2))
    cos_theta_m = cos_theta * cos_m - sin_theta * sin_m
    cond_mask = (cos_theta - threshold) <= 0
    keep_val = cos_theta - mm
    cos_theta_m[cond_mask] = keep_val[cond_mask]
    out = cos_theta * 1.0
    idx = torch.arange(0, cos_theta.size(0))
    out[idx, target] = cos_theta_m[idx, target]
    return out * scale


@pytest.mark.parametrize(("scale", "margin"), [(192.0, 1.0), (32.0, 0.5)])
def test_arcface_logits_equal_fairseq_signals(scale: float, margin: float) -> None:
    gen = torch.Generator().manual_seed(0)
    cos = torch.rand(64, 7, generator=gen, dtype=torch.float64) * 2 - 1
    cos[:4, :] = -0.9  # below cos(pi - m) for both margins: the reference's cos - m sin(m) branch
    target = torch.randint(0, 7, (64,), generator=gen)
    ours = arcface_logits(cos, target, scale, margin)
    torch.testing.assert_close(ours, _reference_arcface(cos.clone(), target, scale, margin), rtol=0, atol=1e-9)
    # The loss is plain cross-entropy on them (reference: reduction "sum" over the sample size = mean).
    assert torch.isfinite(F.cross_entropy(ours, target))


def test_arcface_gradient_is_finite_at_cosine_one() -> None:
    cos = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], requires_grad=True)
    F.cross_entropy(arcface_logits(cos, torch.tensor([0, 1]), 192.0, 1.0), torch.tensor([0, 1])).backward()
    assert torch.isfinite(cos.grad).all()


def test_arcface_head_cosines_and_fit_separate_patients() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    patients = np.repeat(np.arange(6), 20)
    feats = centres[patients] + 0.3 * rng.normal(size=(120, 16))
    head, mean, std = fit_arcface(feats, patients, epochs=100, seed=0)
    with torch.no_grad():
        cos = head.cosines((torch.from_numpy(feats.astype(np.float32)) - mean) / std)
    assert cos.shape == (120, 6) and float(cos.abs().max()) <= 1.0
    assert (cos.argmax(1).numpy() == patients).mean() > 0.95
    assert ArcFaceHead(16, 3).kernel.shape == (3, 16)


def test_bootstrap_resamples_patients_not_probes() -> None:
    # 10 patients x 10 probes, 5 patients found on every probe, 5 on none: the uncertainty is that of 10
    # patients (interval about +-0.3), not of 100 independent probes (about +-0.1).
    hits = np.repeat([1, 0] * 5, 10)
    patients = np.repeat(np.arange(10), 10)
    low, high = patient_bootstrap_ci(hits, patients, n_boot=2000, seed=0)
    assert high - low > 0.45 and low < 0.5 < high
    one_each = patient_bootstrap_ci(hits, np.arange(100), n_boot=2000, seed=0)
    assert one_each[1] - one_each[0] < 0.25


def test_ranks_match_top1() -> None:
    rng = np.random.default_rng(1)
    emb, patients = rng.normal(size=(40, 8)), np.repeat(np.arange(10), 4)
    res, ranks, probe_patients = identification_ranks(emb, patients, seed=0)
    assert len(ranks) == res["n_probes"] == 30 and res["top1"] == pytest.approx((ranks == 0).mean())
    assert np.bincount(probe_patients).tolist() == [3] * 10


def test_arcface_mode_identifies_held_out_patients(cache: Cache) -> None:  # noqa: F811
    class Constant(nn.Module):
        embed_dim = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 4)

    ctx = context(cache, lambda init, seed: Reader(250, rhythm=False) if init == "pretrained" else Constant())
    rows = _protocol(Identification, mode="arcface", split="test", train_split="train", epochs=40,
                     bootstrap=100).run(ctx)
    by_init = {r["init"]: r for r in rows}
    held_out = N_PATIENTS - 12  # patients 12..15
    for r in rows:
        assert r["mode"] == "arcface" and r["condition_keys"] == ["mode"]
        assert r["n_train_patients"] == 8 and r["n_patients"] == held_out and r["n_probes"] == held_out * (N_REC - 1)
        assert (r["scale"], r["margin"]) == (192.0, 1.0)
        low, high = r["ci95"]["top1"]
        assert low <= r["metrics"]["top1"] <= high
    assert by_init["pretrained"]["metrics"]["top1"] >= 0.75  # chance: 1 / 4
    assert by_init["random"]["metrics"]["top1"] == 0.0  # a constant embedding ties everywhere


def test_arcface_mode_refuses_shared_patients(cache: Cache) -> None:  # noqa: F811
    ctx = context(cache, lambda init, seed: Reader(250, rhythm=False))
    with pytest.raises(UserError, match="share 16 patients"):
        _protocol(Identification, mode="arcface", split="all", train_split="all", inits=["pretrained"]).run(ctx)
