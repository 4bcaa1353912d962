"""Evaluation protocols end to end on a tiny WFDB-built cache: finetune, knn, identification, robustness."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from ecgforge.data.cache import Cache, seal_metadata
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.finetune import Finetune
from ecgforge.evaluation.identification import Identification, wilson_interval
from ecgforge.evaluation.knn import KNN, knn_scores
from ecgforge.evaluation.linear_probe import LinearProbe
from ecgforge.evaluation.robustness import LEAD_SUBSETS, Robustness, lead_subset_transform, noise_transform
from ecgforge.layers.weights import state_dict_hash
from tests.data.test_cache import write_record


class _AsJSON:
    """A protocol whose ``run`` returns the results.json rows (dicts), as the tests read them."""

    def __init__(self, protocol: object) -> None:
        self.protocol = protocol

    def run(self, ctx: EvalContext) -> list[dict]:
        return [row.to_json() for row in self.protocol.run(ctx)]


def _protocol(cls: type, **cfg: object) -> _AsJSON:
    """``cls`` built from its config, as the registry builds it."""
    from ecgforge.evaluation import PROTOCOLS
    from ecgforge.registry import build

    kind = next(k for k in PROTOCOLS if PROTOCOLS[k] is cls)
    return _AsJSON(build(PROTOCOLS, PROTOCOLS.config(kind)(**cfg)))


FS = 100
N_PATIENTS, N_REC = 16, 3


class Reader(nn.Module):
    """A fixed encoder that reads the signal: per-lead RMS (patient-specific gains) and the log spectrum of
    the lead sum below 5 Hz (the rhythm). z (B, 12 + n_bins)."""

    def __init__(self, window: int, rhythm: bool = True) -> None:
        super().__init__()
        self.n_bins = int(5.0 * window / FS) if rhythm else 0
        self.embed_dim = 12 + self.n_bins
        self.scale = nn.Parameter(torch.ones(1))  # a parameter, so weight hashes have something to hash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(-1).sqrt()
        spec = torch.fft.rfft(x.sum(1), dim=-1).abs()[:, 1 : self.n_bins + 1]
        return self.scale * torch.cat([rms, torch.log1p(spec)], dim=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """16 patients x 3 records of 10 s: each patient has its own lead gains; each record is 'slow' (1 Hz) or
    'fast' (2.2 Hz) pulses plus a little noise."""
    root = tmp_path_factory.mktemp("protocols")
    d = root / "wfdb"
    d.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(10 * FS) / FS
    rows = []
    for p in range(N_PATIENTS):
        gains = rng.uniform(0.2, 1.5, size=(12, 1)) * rng.choice([-1, 1], size=(12, 1))
        for r in range(N_REC):
            label = "fast" if (p + r) % 2 else "slow"
            f = 2.2 if label == "fast" else 1.0
            pulse = np.maximum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)), 0) ** 8
            x = gains * pulse[None] + 0.02 * rng.standard_normal((12, len(t)))
            name = f"p{p:02d}_r{r}"
            write_record(d, name, x.astype(np.float32), fs=FS)
            rows.append((name, label))
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("record", "label"), *rows])
    spec = CacheRecipe.model_validate({
        "name": "t", "out": str(root / "c.h5"),
        "source": {"kind": "wfdb_folder", "path": str(d), "labels_csv": str(root / "labels.csv")},
        "signal": {"fs_hz": FS},
    })
    path = build_cache(spec, workers=1).path
    # The folder source has one patient per record; give records their patient (p00_r1 -> p00).
    with h5py.File(path, "r+") as h5:
        ids = [v.decode() if isinstance(v, bytes) else v for v in h5["record_id"][()]]
        h5["patient_id"][...] = np.array([i.split("_")[0].encode() for i in ids], dtype=h5py.string_dtype())
        seal_metadata(h5)  # an edit on purpose: new metadata checksums, or readers refuse it as damage
    return Cache(path)


def _ids(patients: range) -> list[str]:
    return [f"p{p:02d}_r{r}" for p in patients for r in range(N_REC)]


SPLITS = {"train": {"record_id": _ids(range(0, 8))}, "val": {"record_id": _ids(range(8, 12))},
          "test": {"record_id": _ids(range(12, 16))}, "all": {}}


def context(cache: Cache, make_encoder) -> EvalContext:  # noqa: ANN001
    return EvalContext(cache=cache, splits=SPLITS, window=250, stride=250, make_encoder=make_encoder,
                       device=torch.device("cpu"), batch_size=32)


class TinyConv(nn.Module):
    """A trainable encoder small enough for two CPU cores: conv, BatchNorm, ReLU, mean over time."""

    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(12, 8, 9, stride=4), nn.BatchNorm1d(8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(-1)


def tiny_encoder(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConv()


def test_finetune_changes_encoder_weights_and_linear_probe_does_not(cache: Cache) -> None:
    shared = tiny_encoder(0)  # make_encoder hands out this very module: any training shows in its hash
    before = state_dict_hash(shared)
    ctx = context(cache, lambda init, seed: shared if init == "pretrained" else tiny_encoder(seed))
    lp = _protocol(LinearProbe, task="label", inits=["pretrained"], epochs=5, bootstrap=0).run(ctx)
    assert state_dict_hash(shared) == before and len(lp) == 1

    rows = _protocol(Finetune, task="label", inits=["pretrained", "supervised", "random"], head_epochs=1, epochs=2,
                    encoder_lr_ratio=0.1, bootstrap=10, batch_size=8).run(ctx)
    assert state_dict_hash(shared) != before
    by_init = {r["init"]: r for r in rows}
    assert set(by_init) == {"pretrained", "supervised", "random"}
    assert by_init["pretrained"]["encoder_changed"] and by_init["supervised"]["encoder_changed"]
    assert not by_init["random"]["encoder_changed"]  # frozen random encoder: head only
    assert by_init["pretrained"]["encoder_lr"] == pytest.approx(1e-4) and by_init["random"]["encoder_lr"] == 0.0
    for r in rows:
        assert r["kind"] == "finetune" and r["task_type"] == "multiclass" and r["n_test_records"] == 12
        assert set(r["metrics"]) == {"accuracy", "macro_f1", "macro_auroc"} and "macro_auroc" in r["ci95"]


def test_finetune_label_fraction_uses_fewer_records(cache: Cache) -> None:
    ctx = context(cache, lambda init, seed: tiny_encoder(seed))
    rows = _protocol(Finetune, task="label", inits=["supervised"], label_fractions=[0.3, 1.0], head_epochs=0, epochs=1,
                    bootstrap=0, batch_size=8).run(ctx)
    n = {r["label_fraction"]: r["n_train_records"] for r in rows}
    assert n[1.0] == 24 and 0 < n[0.3] < 24 and n[0.3] % N_REC == 0  # whole patients only


def test_knn_reads_the_rhythm(cache: Cache) -> None:
    ctx = context(cache, lambda init, seed: Reader(250) if init == "pretrained" else tiny_encoder(seed))
    rows = _protocol(KNN, task="label", k=3, seeds=[0, 1], bootstrap=0).run(ctx)
    assert [(r["init"], r["seed"]) for r in rows] == [("pretrained", 0), ("pretrained", 1), ("random", 0), ("random", 1)]
    reader = [r for r in rows if r["init"] == "pretrained"]
    assert all(r["metrics"]["accuracy"] > 0.9 for r in reader)


def test_knn_scores_by_hand() -> None:
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores = knn_scores(train, np.array([0, 0, 1]), np.array([[1.0, 0.05], [0.1, 1.0]]), 2, "multiclass", 2)
    np.testing.assert_allclose(scores, [[1.0, 0.0], [0.5, 0.5]])
    reg = knn_scores(train, np.array([1.0, 3.0, 10.0]), np.array([[1.0, 0.0]]), 2, "regression", 0)
    np.testing.assert_allclose(reg, [2.0])


def test_identification_on_a_known_gallery(cache: Cache) -> None:
    class Constant(nn.Module):
        embed_dim = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 4)

    ctx = context(cache, lambda init, seed: Reader(250, rhythm=False) if init == "pretrained" else Constant())
    rows = _protocol(Identification, split="all", seeds=[0, 1]).run(ctx)
    assert len(rows) == 4
    for r in rows:
        assert r["n_patients"] == N_PATIENTS and r["n_probes"] == N_PATIENTS * (N_REC - 1)
        low, high = r["ci95"]["top1"]
        assert low <= r["metrics"]["top1"] <= high
    # Patient gains set the per-lead RMS: the reader finds every patient; a constant embedding finds none
    # (ties count against the probe).
    assert all(r["metrics"]["top1"] == 1.0 for r in rows if r["init"] == "pretrained")
    assert all(r["metrics"]["top1"] == 0.0 and r["metrics"]["top5"] == 0.0 for r in rows if r["init"] == "random")


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_noise_grows_with_level_and_is_the_same_for_every_call() -> None:
    x = torch.zeros(8, 12, 500)
    rms = []
    for level in range(1, 7):
        a = noise_transform(100.0, level, seed=0)(x)
        b = noise_transform(100.0, level, seed=0)(x)
        assert torch.equal(a, b)  # a fresh transform replays the same noise: every model sees the same inputs
        rms.append(float(a.pow(2).mean().sqrt()))
    assert all(hi > lo for lo, hi in zip(rms[:-1], rms[1:], strict=True)), rms


def test_lead_subsets_zero_the_other_leads() -> None:
    leads = list(LEAD_SUBSETS["12"])
    x = torch.randn(2, 12, 10)
    for name, kept in LEAD_SUBSETS.items():
        y = lead_subset_transform(leads, name)(x)
        for i, lead in enumerate(leads):
            assert torch.equal(y[:, i], x[:, i]) if lead in kept else (y[:, i] == 0).all()


def test_robustness_rows_degrade_with_noise(cache: Cache) -> None:
    ctx = context(cache, lambda init, seed: Reader(250) if init == "pretrained" else tiny_encoder(seed))
    rows = _protocol(Robustness, task="label", epochs=60, bootstrap=0, seeds=[0]).run(ctx)
    conds = [(r["noise_level"], r["leads"]) for r in rows if r["init"] == "pretrained"]
    assert conds == [(0, "12"), *((lv, "12") for lv in range(1, 7)), (0, "6"), (0, "3"), (0, "2"), (0, "1")]
    assert {r["init"] for r in rows} == {"pretrained", "random"}
    acc = {(r["noise_level"], r["leads"]): r["metrics"]["macro_auroc"] for r in rows if r["init"] == "pretrained"}
    assert acc[(0, "12")] > 0.95
    assert acc[(6, "12")] < acc[(0, "12")] - 0.1 and acc[(6, "12")] <= acc[(1, "12")]
