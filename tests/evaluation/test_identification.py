"""Patient identification on synthetic galleries whose answer is known."""

from __future__ import annotations

import math

import numpy as np

from ecgforge.evaluation.retrieval import identification_top1


def _clustered(n_patients: int, per_patient: int, dim: int = 32, noise: float = 0.05, seed: int = 0):
    """Records of a patient = its random centre + small noise: ``(embeddings (N, D), patients (N,))``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_patients, dim))
    patients = np.repeat(np.arange(n_patients), per_patient)
    return centres[patients] + noise * rng.normal(size=(len(patients), dim)), patients


def test_clustered_embeddings_identify_everyone() -> None:
    emb, patients = _clustered(30, 4)
    res = identification_top1(emb, patients, seed=0)
    assert res["top1"] == 1.0 and res["top5"] == 1.0
    assert (res["n_patients"], res["n_probes"], res["n_gallery"]) == (30, 90, 30)


def test_random_embeddings_near_chance() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(50), 5)  # 50 gallery records, 200 probes
    res = identification_top1(rng.normal(size=(250, 64)), patients, seed=0)
    # chance: top-1 1/50 = 0.02, top-5 5/50 = 0.1 (binomial sd over 200 probes ~0.01 and ~0.02)
    assert res["top1"] < 0.06
    assert 0.04 < res["top5"] < 0.18


def test_distractors_join_the_gallery_only() -> None:
    emb, patients = _clustered(10, 3, seed=1)
    singles = np.random.default_rng(99).normal(size=(5, emb.shape[1]))  # not _clustered's seed: new points
    emb_all = np.vstack([emb, singles])
    patients_all = np.concatenate([patients, np.arange(100, 105)])
    without = identification_top1(emb_all, patients_all, seed=0)
    with_d = identification_top1(emb_all, patients_all, seed=0, distractors=True)
    assert without["n_gallery"] == 10 and without["n_distractors"] == 0
    assert with_d["n_gallery"] == 15 and with_d["n_distractors"] == 5
    assert with_d["n_probes"] == without["n_probes"] == 20
    assert with_d["top1"] == 1.0

    # A distractor pointing the same way as patient 0's records ties with its gallery record for both of
    # patient 0's probes, and ties count against the probe: 18 of 20 probes remain identified.
    tied = emb_all.copy()
    tied[0:3] = emb[0]
    tied[-1] = 2.0 * emb[0]
    assert identification_top1(tied, patients_all, seed=0, distractors=True)["top1"] == 18 / 20


def test_degenerate_inputs() -> None:
    res = identification_top1(np.ones((4, 8)), np.arange(4))
    assert res["n_patients"] == 0 and math.isnan(res["top1"])
    tied = identification_top1(np.zeros((6, 4)), np.repeat(np.arange(3), 2))
    assert tied["top1"] == 0.0  # every gallery record equally similar: no credit for a tie
