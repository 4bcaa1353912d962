"""Patient identification by retrieval on frozen embeddings (Oh et al., "Lead-agnostic Self-supervised Learning for
Local and Global Representations of Electrocardiogram", CHIL 2022).

An encoder whose embeddings keep a patient's records close together has learned patient-specific
morphology. Over the patients with at least two records, one record per patient (drawn with the seed) forms
the gallery and every other record is a probe; a probe is identified when its most cosine-similar gallery
record belongs to the same patient.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4096  # probes per similarity block: bounds memory to CHUNK x gallery floats on large datasets


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero, so it is similar to nothing)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def identification_top1(
    embeddings: np.ndarray,
    patients: np.ndarray,
    seed: int = 0,
    distractors: bool = False,
    normalize: bool = True,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy and counts (`identification_ranks` without the per-probe arrays)."""
    res, _, _ = identification_ranks(embeddings, patients, seed, distractors, normalize)
    return res


def identification_ranks(
    embeddings: np.ndarray,
    patients: np.ndarray,
    seed: int = 0,
    distractors: bool = False,
    normalize: bool = True,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Top-1 and top-5 patient-identification accuracy by cosine similarity.

    Args:
        embeddings: (N, D) one embedding per record.
        patients: (N,) patient id of each record.
        seed: picks which record of each patient is its gallery record.
        distractors: also put the records of single-record patients in the gallery; they can only be wrong
            answers, which makes the task harder and closer to searching a whole database.
        normalize: cosine similarity (rows scaled to unit norm); False ranks by the plain dot product, as
            fairseq-signals' ``ECGIdentificationTask.valid_step`` does on ArcFace cosine-logit vectors.

    Returns:
        ``top1``, ``top5`` (accuracies over probes), ``n_patients`` (patients with >= 2 records),
        ``n_probes``, ``n_gallery`` and ``n_distractors``. A probe counts as found at rank k only if fewer
        than k other gallery records are at least as similar as its own patient's (ties count against it).
        Accuracies are NaN when no patient has two records. Also ``ranks (P,)`` (pessimistic rank of each
        probe's own gallery record, 0 = found first) and ``probe_patients (P,)`` for per-patient intervals.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    patients = np.asarray(patients)
    if embeddings.ndim != 2 or patients.shape != (embeddings.shape[0],):
        raise ValueError(
            f"embeddings must be (N, D) and patients (N,); got {embeddings.shape}, {patients.shape}"
        )
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinity")
    _, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)

    multi = np.flatnonzero(counts >= 2)  # patient ids (as indices into the unique ids)
    # Gallery record of each patient: the one with the smallest random key, i.e. uniform within the patient.
    by_patient = np.lexsort((rng.random(len(patients)), inverse))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # where each patient starts in by_patient
    gallery = by_patient[first[multi]].astype(np.int64)
    is_multi = counts[inverse] >= 2
    probe_mask = is_multi.copy()
    probe_mask[gallery] = False
    probes = np.flatnonzero(probe_mask)
    extra = np.flatnonzero(~is_multi) if distractors else np.zeros(0, dtype=np.int64)
    gallery_all = np.concatenate([gallery, extra])

    result: dict[str, float] = {
        "n_patients": float(len(multi)),
        "n_probes": float(len(probes)),
        "n_gallery": float(len(gallery_all)),
        "n_distractors": float(len(extra)),
    }
    if len(probes) == 0:
        return {"top1": float("nan"), "top5": float("nan"), **result}, np.zeros(0, np.int64), patients[probes]

    scale = unit_rows if normalize else np.asarray
    g = scale(embeddings[gallery_all])  # (G, D)
    # Column of each probe's own patient in the gallery: gallery[j] belongs to patient multi[j].
    column_of_patient = np.full(len(counts), -1, dtype=np.int64)
    column_of_patient[multi] = np.arange(len(multi))
    true_col = column_of_patient[inverse[probes]]
    ranks = np.zeros(len(probes), dtype=np.int64)
    for start in range(0, len(probes), _CHUNK):
        rows = probes[start : start + _CHUNK]
        sim = scale(embeddings[rows]) @ g.T  # (B, G)
        own = sim[np.arange(len(rows)), true_col[start : start + _CHUNK]]
        # Pessimistic rank: other gallery records at least as similar as the right one (itself excluded).
        ranks[start : start + len(rows)] = (sim >= own[:, None]).sum(axis=1) - 1
    top = {"top1": float((ranks < 1).mean()), "top5": float((ranks < 5).mean())}
    return {**top, **result}, ranks, patients[probes]


def patient_bootstrap_ci(
    hits: np.ndarray, probe_patients: np.ndarray, n_boot: int = 200, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy over probes, resampling *patients* with replacement.

    A patient's probes share its gallery record and its morphology, so they are not independent trials:
    each resample draws patients and takes all of a drawn patient's probes together (a cluster bootstrap).
    ``hits (P,)`` in {0, 1}, ``probe_patients (P,)``; ``(nan, nan)`` without probes.
    """
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    _, inverse = np.unique(probe_patients, return_inverse=True)
    n_pat = int(inverse.max()) + 1
    sums = np.bincount(inverse, weights=hits, minlength=n_pat)
    counts = np.bincount(inverse, minlength=n_pat).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_pat, size=(n_boot, n_pat))  # (n_boot, n_pat) patient indices
    values = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
