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
) -> dict[str, float]:
    """Top-1 and top-5 patient-identification accuracy by cosine similarity.

    Args:
        embeddings: (N, D) one embedding per record.
        patients: (N,) patient id of each record.
        seed: picks which record of each patient is its gallery record.
        distractors: also put the records of single-record patients in the gallery; they can only be wrong
            answers, which makes the task harder and closer to searching a whole database.

    Returns:
        ``top1``, ``top5`` (accuracies over probes), ``n_patients`` (patients with >= 2 records),
        ``n_probes``, ``n_gallery`` and ``n_distractors``. A probe counts as found at rank k only if fewer
        than k other gallery records are at least as similar as its own patient's (ties count against it).
        Accuracies are NaN when no patient has two records.
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
        return {"top1": float("nan"), "top5": float("nan"), **result}

    g = unit_rows(embeddings[gallery_all])  # (G, D)
    # Column of each probe's own patient in the gallery: gallery[j] belongs to patient multi[j].
    column_of_patient = np.full(len(counts), -1, dtype=np.int64)
    column_of_patient[multi] = np.arange(len(multi))
    true_col = column_of_patient[inverse[probes]]
    hits1 = hits5 = 0
    for start in range(0, len(probes), _CHUNK):
        rows = probes[start : start + _CHUNK]
        sim = unit_rows(embeddings[rows]) @ g.T  # (B, G)
        own = sim[np.arange(len(rows)), true_col[start : start + _CHUNK]]
        # Pessimistic rank: other gallery records at least as similar as the right one (itself excluded).
        rank = (sim >= own[:, None]).sum(axis=1) - 1
        hits1 += int((rank < 1).sum())
        hits5 += int((rank < 5).sum())
    return {"top1": hits1 / len(probes), "top5": hits5 / len(probes), **result}
