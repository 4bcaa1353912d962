"""Paired comparisons (evaluation/paired.py): resampling units, the test's level and power, rows' ``versus``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata

from ecgforge.data.cache import Cache
from ecgforge.evaluation.linear_probe import LinearProbe
from ecgforge.evaluation.paired import Evidence, add_versus, compare, score_evidence, unit_resamples
from ecgforge.evaluation.rows import ResultRow
from tests.evaluation.test_protocols import SPLITS, Reader, _protocol, cache, context, tiny_encoder  # noqa: F401


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC of binary ``y`` (cheap: the level test calls it ~10^5 times)."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(s)[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _evidence(y: np.ndarray, s: np.ndarray, units: np.ndarray) -> Evidence:
    return Evidence(np.arange(len(y)), units, lambda pos: {"auroc": _auroc(y[pos], s[pos])})


def test_unit_resamples_keep_each_patients_records_together() -> None:
    units = np.array([3, 3, 3, 7, 9, 9])
    for pos in unit_resamples(units, 50, seed=0):
        drawn, n = np.unique(units[pos], return_counts=True)
        # Every drawn patient comes with all of its records (a multiple of its count), never some of them.
        full = {3: 3, 7: 1, 9: 2}
        assert all(c % full[u] == 0 for u, c in zip(drawn, n, strict=True))
        assert sum(n) == sum(full[u] * (c // full[u]) for u, c in zip(drawn, n, strict=True))
    a = unit_resamples(units, 5, seed=1)
    b = unit_resamples(units, 5, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded: both rows see the same draws


def _two_encoders(rng: np.random.Generator, n: int, noise_a: float, noise_b: float) -> tuple[Evidence, Evidence]:
    """Scores of two 'encoders' on the same n records of n // 2 patients (two records each): a shared
    patient effect plus each encoder's own noise; equal noise = encoders alike but for their seed."""
    patients = np.repeat(np.arange(n // 2), 2)
    y = np.repeat(rng.integers(0, 2, n // 2), 2)
    signal = y + 0.8 * np.repeat(rng.standard_normal(n // 2), 2)
    a = signal + noise_a * rng.standard_normal(n)
    b = signal + noise_b * rng.standard_normal(n)
    return _evidence(y, a, patients), _evidence(y, b, patients)


def test_false_positive_rate_is_near_the_level_for_two_alike_encoders() -> None:
    """Two encoders that differ only in their seed: p < 0.05 in about 5 % of repeated experiments."""
    rng = np.random.default_rng(0)
    p = [compare(*_two_encoders(rng, 120, 1.0, 1.0), n_boot=199, seed=i)["p_value"]["auroc"] for i in range(150)]
    rate = float(np.mean(np.asarray(p) < 0.05))
    assert 0.01 <= rate <= 0.11, rate
    assert min(p) > 0 and max(p) <= 1


def test_power_on_a_real_difference() -> None:
    """An encoder with a quarter of the other's noise is found better in most experiments, with delta > 0."""
    rng = np.random.default_rng(1)
    res = [compare(*_two_encoders(rng, 160, 0.5, 2.0), n_boot=199, seed=i) for i in range(40)]
    assert np.mean([r["p_value"]["auroc"] < 0.05 for r in res]) > 0.7
    assert all(r["delta"]["auroc"] > 0 for r in res[:10])
    lo, hi = res[0]["ci95"]["auroc"]
    assert lo <= res[0]["delta"]["auroc"] <= hi


def test_identical_scores_give_zero_delta_and_p_one() -> None:
    rng = np.random.default_rng(2)
    a, _ = _two_encoders(rng, 60, 1.0, 1.0)
    out = compare(a, a, n_boot=100, seed=0)
    assert out["delta"]["auroc"] == 0.0 and out["ci95"]["auroc"] == [0.0, 0.0] and out["p_value"]["auroc"] == 1.0


def test_rows_scored_on_other_records_do_not_pair() -> None:
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8])
    with pytest.raises(ValueError, match="different test records"):
        compare(Evidence(np.arange(4), np.arange(4), lambda p: {}),
                Evidence(np.arange(1, 5), np.arange(4), lambda p: {}), 10, 0)
    ev = score_evidence("multiclass", y, np.stack([1 - s, s], 1), ["a", "b"], np.arange(4), np.arange(4))
    assert ev.metrics(np.arange(4))["accuracy"] == 1.0


def test_linear_probe_rows_carry_versus_random_for_every_metric(cache: Cache) -> None:  # noqa: F811
    """The pretrained row of each (fraction, seed) gets delta, ci95 and p for each metric; JSON-ready."""
    ctx = context(cache, lambda init, seed: Reader(250) if init == "pretrained" else tiny_encoder(seed))
    probe = _protocol(LinearProbe, task="label", epochs=20, bootstrap=50, label_fractions=[0.5, 1.0]).protocol
    rows = add_versus(probe.run(ctx), 50)
    pre = [r for r in rows if r.init == "pretrained"]
    assert len(pre) == 2 and all(not r.versus for r in rows if r.init == "random")
    for r in pre:
        v = r.versus["random"]
        assert set(v) == {"delta", "ci95", "p_value"}
        assert set(v["delta"]) == set(r.metrics) == {"accuracy", "macro_f1", "macro_auroc"}
        ref = next(o for o in rows if o.init == "random" and o.label_fraction == r.label_fraction)
        assert v["delta"]["accuracy"] == pytest.approx(r.metrics["accuracy"] - ref.metrics["accuracy"])
        out = json.loads(json.dumps(r.to_json()))  # evidence stays in memory; versus goes to results.json
        assert "evidence" not in out and out["versus"]["random"]["p_value"]["accuracy"] == v["p_value"]["accuracy"]
        assert ResultRow.from_json(out).versus == out["versus"]


def test_validation_split_is_drawn_with_the_label_fraction(cache: Cache) -> None:  # noqa: F811
    ctx = context(cache, lambda init, seed: tiny_encoder(seed))
    common = dict(task="label", inits=["random"], epochs=2, bootstrap=0, label_fractions=[0.25, 1.0])
    n_val_full = len(SPLITS["val"]["record_id"])
    rows = _protocol(LinearProbe, **common).run(ctx)
    n = {r["label_fraction"]: r["n_val_records"] for r in rows}
    assert n[1.0] == n_val_full and 0 < n[0.25] < n_val_full and n[0.25] % 3 == 0  # whole patients
    kept = _protocol(LinearProbe, **common, subsample_val=False).run(ctx)
    assert {r["n_val_records"] for r in kept} == {n_val_full}


def test_each_split_is_embedded_once_across_protocols(cache: Cache) -> None:  # noqa: F811
    """Linear probe, robustness and k-NN on one run share their clean embeddings: per encoder, train, val and
    test are embedded once, plus the one noisy test condition robustness adds."""
    from ecgforge.evaluation.knn import KNN
    from ecgforge.evaluation.robustness import Robustness

    ctx = context(cache, lambda init, seed: Reader(250) if init == "pretrained" else tiny_encoder(seed))
    common = dict(task="label", bootstrap=0, label_fractions=[0.5, 1.0])
    _protocol(LinearProbe, **common, epochs=2).run(ctx)
    assert ctx.features.computed == 2 * 3  # 2 encoders x (train, val, test)
    _protocol(Robustness, **common, epochs=2, noise_levels=[1], lead_subsets=["12"]).run(ctx)
    assert ctx.features.computed == 2 * 3 + 2  # only the noisy test windows are new
    _protocol(KNN, **common, k=3).run(ctx)
    assert ctx.features.computed == 2 * 3 + 2
