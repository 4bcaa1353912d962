"""Paired comparisons: the pretrained row against its reference rows, on the same test records and resamples.

The claim a run makes is a difference ("pretraining buys +0.04 macro AUROC at 1 % labels"), so the
difference gets the interval and the test, not only each row. A ``pretrained`` row and a reference row
(``random``, ``supervised``) of the same protocol, task, label fraction, seed, split and condition were scored
on the same test records. Each of ``n_boot`` resamples draws test *units* with replacement — patients, a
patient's records together, since two ECGs of one patient are not independent trials — and recomputes both
rows' metrics on that same resample, giving ``delta_b = m_pretrained(b) - m_reference(b)``:

- ``delta``: the difference on the full test set;
- ``ci95``: the 2.5 and 97.5 percentiles of ``delta_b``;
- ``p_value``: two-sided test of "no difference", from the bootstrap distribution shifted to the null
  (Hall & Wilson 1991, "Two guidelines for bootstrap hypothesis testing"):
  ``p = (1 + #{b : |delta_b - delta| >= |delta|}) / (1 + B)``.

It assumes test units are independent draws and that the difference's sampling distribution is about as
wide under the null as around the observed value. It conditions on the trained heads: seed-to-seed
variation of training is not in it (the report shows the spread over seeds beside it).

Rows of two runs pair the same way (``ecgforge report A B``, app/between.py): the evidence of each row is
kept in the run directory (``scores/``, ``RunDir.write_scores``) in the form `restore_evidence` rebuilds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgforge.evaluation.metrics import compute_metrics
from ecgforge.evaluation.rows import ResultRow

if TYPE_CHECKING:
    from ecgforge.data.cache import Cache

#: Initialisations a pretrained row is compared with, when the protocol ran them.
REFERENCES = ("random", "supervised")


@dataclass(frozen=True)
class Evidence:
    """What a row's metrics were computed from, kept in memory (never in results.json) to pair rows.

    Attributes:
        records: (n,) identity of each test unit of observation (`record_identity`: ``source/record_id`` of
            each test record); two rows pair only when these are equal.
        units: (n,) resampling unit of each record (its patient id): a resample draws units, all records of a
            drawn unit together.
        metrics: record positions (m,) -> the row's metrics on those records (NaN where undefined).
        form: how `restore_evidence` rebuilds ``metrics`` from ``data`` (``"scores"``, ``"ranks"``); None
            where it cannot (the evidence is not stored).
        data: what ``metrics`` is computed from: arrays with a first axis of length n (``y``, ``scores``;
            ``ranks``) and JSON facts (``task_type``, ``names``).
    """

    records: np.ndarray
    units: np.ndarray
    metrics: Callable[[np.ndarray], dict[str, float]]
    form: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def record_identity(cache: Cache, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(records, units)`` of the evidence of cache records ``indices (n,)``: ``source/record_id`` (a record id
    is unique within its source) and the patient id of each, as ``str`` arrays, comparable across runs and
    caches where cache indices are not."""
    idx = np.asarray(indices, dtype=np.int64)
    records = np.asarray([f"{s}/{r}" for s, r in zip(cache.source[idx], cache.record_id[idx], strict=True)], dtype=str)
    return records, np.asarray(cache.patient_id[idx], dtype=str).reshape(-1)


def score_evidence(task_type: str, y: np.ndarray, scores: np.ndarray, names: Sequence[str],
                   records: np.ndarray, units: np.ndarray, exclude: Sequence[str] = ()) -> Evidence:
    """Evidence of a row scored by ``compute_metrics`` on per-record ``scores`` (n, K) against targets ``y``,
    the classes named in ``exclude`` left out of its macro AUROC as they were from the row's."""
    y, scores = np.asarray(y), np.asarray(scores)
    exclude = [str(c) for c in exclude]

    def metrics(pos: np.ndarray) -> dict[str, float]:
        try:
            values, _ = compute_metrics(task_type, y[pos], scores[pos], names, exclude)  # type: ignore[arg-type]
        except ValueError:  # a resample without two classes
            return {}
        return {k: float(v) for k, v in values.items()}

    data = {"task_type": task_type, "names": list(names), "y": y, "scores": scores}
    if exclude:  # only then: the stored evidence of every other row stays as it was
        data["exclude"] = exclude
    return Evidence(np.asarray(records), np.asarray(units), metrics, "scores", data)


def rank_evidence(ranks: np.ndarray, records: np.ndarray, units: np.ndarray) -> Evidence:
    """Evidence of top-1 / top-5 accuracy over identification probes from each probe's ``ranks (P,)`` (0 =
    its own patient's gallery record found first)."""
    ranks = np.asarray(ranks)

    def metrics(pos: np.ndarray) -> dict[str, float]:
        return {"top1": float((ranks[pos] < 1).mean()), "top5": float((ranks[pos] < 5).mean())}

    return Evidence(np.asarray(records), np.asarray(units), metrics, "ranks", {"ranks": ranks})


def restore_evidence(form: str, records: np.ndarray, units: np.ndarray, data: Mapping[str, Any]) -> Evidence:
    """The evidence an `Evidence` of ``form`` with these ``records``, ``units`` and ``data`` was: the inverse
    of storing its fields. ValueError for a form this version does not know."""
    if form == "scores":
        return score_evidence(data["task_type"], data["y"], data["scores"], data["names"], records, units,
                              data.get("exclude", ()))
    if form == "ranks":
        return rank_evidence(data["ranks"], records, units)
    raise ValueError(f"unknown evidence form {form!r}")


def mean_evidence(evidence: Sequence[Evidence]) -> Evidence:
    """Evidence of the mean over several rows (a row's seeds) of each metric, on their common test records:
    every resample recomputes each row's metrics and averages them, so the interval of a paired difference
    of two such means holds the test-set sampling of every seed together. ValueError unless all rows were
    scored on the same records."""
    first = evidence[0]
    if not all(np.array_equal(e.records, first.records) for e in evidence[1:]):
        raise ValueError("mean of rows scored on different test records")

    def metrics(pos: np.ndarray) -> dict[str, float]:
        each = [e.metrics(pos) for e in evidence]
        names = [k for k in each[0] if all(k in m for m in each[1:])]
        return {k: float(np.mean([m[k] for m in each])) for k in names}

    return Evidence(first.records, first.units, metrics)


def pair_key(row: ResultRow) -> tuple[Any, ...]:
    """What two rows scored on the same test records share, init aside: protocol, task, label fraction, seed,
    split and conditions."""
    return (row.kind, row.task, row.label_fraction, row.seed, row.split, repr(sorted(row.conditions.items())))


def unit_resamples(units: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` resamples of record positions, drawing units with replacement (a cluster bootstrap).

    ``units (n,)`` any labels; each resample holds every record of each drawn unit, so its length varies.
    """
    _, inverse = np.unique(units, return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # record positions grouped by unit
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(counts), size=len(counts))
        lengths = counts[drawn]
        # Positions in `order` of the drawn units' records: each unit's start, then 0, 1, ... within it.
        first = np.repeat(starts[drawn] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        out.append(order[first + np.arange(lengths.sum())])
    return out


def compare(a: Evidence, b: Evidence, n_boot: int, seed: int, alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Paired difference ``a - b`` of every metric both define: ``{"delta", "ci95", "p_value"}``, each by metric.

    Resamples where either side's metric is undefined are left out of that metric; a metric with fewer
    than 20 usable resamples gets no interval and no p-value (None).
    """
    if not np.array_equal(a.records, b.records):
        raise ValueError("paired comparison of rows scored on different test records")
    full_a, full_b = a.metrics(np.arange(len(a.records))), b.metrics(np.arange(len(b.records)))
    names = [k for k in full_a if k in full_b and math.isfinite(full_a[k]) and math.isfinite(full_b[k])]
    deltas: dict[str, list[float]] = {k: [] for k in names}
    for pos in unit_resamples(a.units, n_boot, seed):
        ma, mb = a.metrics(pos), b.metrics(pos)
        for k in names:
            d = ma.get(k, math.nan) - mb.get(k, math.nan)
            if math.isfinite(d):
                deltas[k].append(d)
    out: dict[str, dict[str, Any]] = {"delta": {}, "ci95": {}, "p_value": {}}
    for k in names:
        observed = full_a[k] - full_b[k]
        out["delta"][k] = observed
        boot = np.asarray(deltas[k])
        if len(boot) < 20:
            out["ci95"][k], out["p_value"][k] = None, None
            continue
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        out["ci95"][k] = [float(lo), float(hi)]
        # An exact tie (identical scores) is no evidence of a difference: p = 1.
        extreme = np.abs(boot - observed) >= abs(observed) if observed != 0 else np.ones(len(boot), bool)
        out["p_value"][k] = float((1 + extreme.sum()) / (1 + len(boot)))
    return out


def add_versus(rows: list[ResultRow], n_boot: int) -> list[ResultRow]:
    """Give each ``pretrained`` row ``versus[reference]`` for every reference row scored on its test records.

    Rows pair when they share protocol, task, label fraction, seed, split and conditions; the resamples are
    seeded by the row's seed, so the comparison is reproducible. ``n_boot = 0`` pairs nothing.
    """
    if n_boot <= 0:
        return rows
    groups: dict[tuple[Any, ...], dict[str, ResultRow]] = defaultdict(dict)
    for r in rows:
        if r.evidence is not None:
            groups[pair_key(r)][r.init] = r
    for by_init in groups.values():
        pre = by_init.get("pretrained")
        if pre is None:
            continue
        for ref in REFERENCES:
            other = by_init.get(ref)
            if other is not None and np.array_equal(pre.evidence.records, other.evidence.records):
                pre.versus[ref] = compare(pre.evidence, other.evidence, n_boot, pre.seed)
    return rows
