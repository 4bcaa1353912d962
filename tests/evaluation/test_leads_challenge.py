"""Linear probe trained and tested on lead subsets (Oh et al. 2022), and the Challenge 2021 score with
thresholds chosen on the validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ecgforge.evaluation.linear_probe as lp_module
from ecgforge.data.cache import Cache
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.leads import LEAD_SUBSETS, lead_subset_transform
from ecgforge.evaluation.linear_probe import LinearProbe
from ecgforge.evaluation.metrics import challenge_metric, challenge_thresholds, load_challenge_weights
from tests.evaluation.test_protocols import _ids, _protocol, cache  # noqa: F401 (the module's cache fixture)

CHALLENGE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cinc2021-sample" / "evaluation-2021"


class LeadSpy(nn.Module):
    """Per-lead RMS, remembering which leads were non-zero in every batch it embedded."""

    embed_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(-1).sqrt()
        self.seen.append(tuple(int(i) for i in torch.nonzero(rms.sum(0) > 0).flatten()))
        return rms


def _ctx(cache: Cache, encoder: nn.Module, splits: dict) -> EvalContext:  # noqa: F811
    return EvalContext(cache=cache, splits=splits, window=250, stride=250, make_encoder=lambda i, s: encoder,
                       device=torch.device("cpu"), batch_size=32)


SPLITS = {"train": {"record_id": _ids(range(0, 8))}, "val": {"record_id": _ids(range(8, 10))},
          "test": {"record_id": _ids(range(10, 16))}}


def test_cinc_reduced_lead_sets() -> None:
    """The Challenge 2021 reduced-lead sets (Reyna et al. 2021) as physionetchallenges/python-classifier-2021
    ``team_code.py`` spells them (``twelve_leads``, ``six_leads``, ``four_leads``, ``three_leads``,
    ``two_leads``), plus Oh et al.'s single lead I."""
    assert LEAD_SUBSETS["12"] == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert LEAD_SUBSETS["6"] == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert LEAD_SUBSETS["4"] == ("I", "II", "III", "V2")
    assert LEAD_SUBSETS["3"] == ("I", "II", "V2") and LEAD_SUBSETS["2"] == ("I", "II")
    assert LEAD_SUBSETS["1"] == ("I",)


def _fairseq_load_specific_leads(feats: torch.Tensor, leads_to_load: list[int]) -> torch.Tensor:
    """Jwoo5/fairseq-signals ``fairseq_signals/data/ecg/raw_ecg_dataset.py``,
    ``RawECGDataset.load_specific_leads`` with ``pad_leads`` (``enable_padding_leads: true``), no lead bucket:
    ``feats (12, T)`` -> the chosen leads at their own rows of a 12-row zero array."""
    feats = feats[leads_to_load]
    padded = torch.zeros((12, feats.size(-1)))
    padded[leads_to_load] = feats
    return padded


@pytest.mark.parametrize("subset", sorted(LEAD_SUBSETS))
def test_lead_subset_input_equals_fairseq_signals_padded_leads(subset: str) -> None:
    """The probe's input under a subset is what fairseq-signals feeds its model for ``leads_to_load`` (lead
    indices in the standard order I, II, III, aVR, aVL, aVF, V1-V6, fairseq-signals' ``leads_to_load`` order)."""
    order = list(LEAD_SUBSETS["12"])
    x = torch.randn(3, 12, 50)
    ours = lead_subset_transform(order, subset)(x)
    idx = [order.index(lead) for lead in LEAD_SUBSETS[subset]]
    ref = torch.stack([_fairseq_load_specific_leads(xi, idx) for xi in x])
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    # A cache whose leads are stored in another order keeps each lead in its own row too.
    shuffled = order[6:] + order[:6]
    got = lead_subset_transform(shuffled, subset)(x)
    keep = [lead in LEAD_SUBSETS[subset] for lead in shuffled]
    for row, kept in enumerate(keep):
        torch.testing.assert_close(got[:, row], x[:, row] if kept else torch.zeros_like(x[:, row]))


def test_linear_probe_trains_and_tests_on_the_subset(cache: Cache) -> None:  # noqa: F811
    spy = LeadSpy()
    ctx = _ctx(cache, spy, SPLITS)
    rows = _protocol(LinearProbe, task="label", inits=["pretrained"], epochs=3, bootstrap=0,
                     lead_subsets=["12", "4", "1"]).run(ctx)
    assert [r["leads"] for r in rows] == ["12", "4", "1"]
    assert [r["reference"] for r in rows] == [True, False, False]
    assert all(r["condition_keys"] == ["leads"] for r in rows)
    # Train, val and test of each subset are embedded under that subset only: 3 splits x 3 subsets.
    assert ctx.features.computed == 9
    leads = list(cache.leads)
    patterns = {tuple(leads.index(x) for x in LEAD_SUBSETS[s]) for s in ("12", "4", "1")}
    assert set(spy.seen) == patterns


def test_plain_linear_probe_rows_have_no_lead_condition(cache: Cache) -> None:  # noqa: F811
    rows = _protocol(LinearProbe, task="label", inits=["pretrained"], epochs=1, bootstrap=0).run(
        _ctx(cache, LeadSpy(), SPLITS))
    assert "leads" not in rows[0] and "condition_keys" not in rows[0]


def test_challenge_thresholds_come_from_val_only(cache: Cache, tmp_path: Path,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights.csv"
    weights.write_text(",slow,fast\nslow,1.0,0.5\nfast,0.5,1.0\n")
    calls: list[int] = []

    def spy(y_val: np.ndarray, scores_val: np.ndarray, *args: object, **kw: object) -> np.ndarray:
        calls.append(len(y_val))
        return challenge_thresholds(y_val, scores_val, *args, **kw)

    monkeypatch.setattr(lp_module, "challenge_thresholds", spy)
    rows = _protocol(LinearProbe, task="label", task_type="multilabel", inits=["pretrained"], epochs=3,
                     bootstrap=0, challenge_weights=str(weights), challenge_normal_class="slow").run(
        _ctx(cache, LeadSpy(), SPLITS))
    assert calls == [6]  # the 6 validation records (patients 8, 9), not the 18 test records
    r = rows[0]
    assert r["n_val_records"] == 6 and r["n_test_records"] == 18
    assert -1.0 <= r["metrics"]["challenge_score"] <= 1.0
    assert set(r["challenge_thresholds"]) == {"fast", "slow"}


def test_challenge_thresholds_maximise_the_val_score(tmp_path: Path) -> None:
    weights = tmp_path / "weights.csv"
    weights.write_text(",N,A\nN,1.0,0.0\nA,0.0,1.0\n")
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.4
    y = np.stack([~a, a], axis=1).astype(np.int64)
    # Class A's scores are compressed into [0, 0.3]: the right threshold is low, 0.5 predicts nothing.
    scores = np.stack([np.where(a, 0.2, 0.8), np.where(a, 0.25, 0.05)], axis=1) + 0.01 * rng.random((200, 2))
    thr = challenge_thresholds(y, scores, ["N", "A"], weights, normal_class="N")
    assert 0.05 < thr[1] <= 0.25
    base = challenge_metric(y, (scores >= 0.5).astype(int), ["N", "A"], weights, normal_class="N")
    best = challenge_metric(y, (scores >= thr).astype(int), ["N", "A"], weights, normal_class="N")
    assert best == pytest.approx(1.0) and best > base


def _reference_challenge_metric(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray,
                                normal_index: int) -> float:
    """physionetchallenges/evaluation-2021 ``evaluate_model.py``: ``compute_modified_confusion_matrix`` and
    ``compute_challenge_metric``, written out as the reference loops over records and classes."""

    def confusion(lab: np.ndarray, out: np.ndarray) -> np.ndarray:
        n, k = lab.shape
        a = np.zeros((k, k))
        for i in range(n):
            norm = float(max(np.sum(np.any((lab[i], out[i]), axis=0)), 1))
            for j in range(k):
                if lab[i, j]:
                    for m in range(k):
                        if out[i, m]:
                            a[j, m] += 1.0 / norm
        return a

    observed = np.nansum(weights * confusion(labels, outputs))
    correct = np.nansum(weights * confusion(labels, labels))
    inactive_out = np.zeros_like(labels)
    inactive_out[:, normal_index] = True
    inactive = np.nansum(weights * confusion(labels, inactive_out))
    return 0.0 if correct == inactive else float(observed - inactive) / float(correct - inactive)


@pytest.mark.skipif(not (CHALLENGE_DIR / "weights.csv").is_file(), reason="needs ../shared/data (Challenge weights)")
def test_challenge_metric_equals_the_official_formula_on_the_real_table() -> None:
    classes, weights = load_challenge_weights(CHALLENGE_DIR / "weights.csv")
    names = [sorted(c)[0] for c in classes]  # one code per scored class
    normal = next(k for k, c in enumerate(classes) if "426783006" in c)
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = (rng.random((40, len(names))) < 0.15).astype(np.int64)
        out = (rng.random((40, len(names))) < 0.2).astype(np.int64)
        ours = challenge_metric(y, out, names, CHALLENGE_DIR / "weights.csv")
        ref = _reference_challenge_metric(weights, y.astype(bool), out.astype(bool), normal)
        assert ours == pytest.approx(ref, abs=1e-12)
    # The abbreviation table scores the same classes: the CinC 'scored' task's names work with it.
    abbr, w_abbr = load_challenge_weights(CHALLENGE_DIR / "weights_abbreviations.csv")
    np.testing.assert_array_equal(w_abbr, weights)
    assert any("NSR" in c for c in abbr)
