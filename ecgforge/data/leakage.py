"""Which records and patients two selections share, also across caches: the facts a leakage guard needs.

A record's identity is global where the data says so: PTB-XL ECGs are ``ptbxl:<ecg_id>`` whether they come
from a PTB-XL cache (``ecg_id``) or from a PhysioNet/CinC cache (its ``HR*`` records, ``ptbxl_ecg_id``);
any other record is its cache file plus its record id. Patients compare within one cache only (patient ids
of two datasets name different people, except where a source maps them, as PTB-XL's ``ptbxl_patient_id``).
"""

from __future__ import annotations

import numpy as np

from ecgforge.data.cache import Cache


def record_keys(cache: Cache, idx: np.ndarray) -> np.ndarray:
    """``(len(idx),)`` str identity of each selected record, comparable across caches."""
    keys = np.array([f"{cache.path.resolve()}:{r}" for r in cache.record_id[idx].astype(str)], dtype=object)
    for column in ("ecg_id", "ptbxl_ecg_id"):
        if column in cache.meta:
            ecg = np.asarray(cache.meta[column])[idx].astype(np.int64)
            ptbxl = ecg >= 0
            keys[ptbxl] = [f"ptbxl:{int(e)}" for e in ecg[ptbxl]]
    return keys


def patient_keys(cache: Cache, idx: np.ndarray) -> np.ndarray:
    """``(len(idx),)`` str identity of each selected record's patient (PTB-XL patients across caches)."""
    keys = np.array([f"{cache.path.resolve()}:{p}" for p in cache.patient_id[idx].astype(str)], dtype=object)
    if "ecg_id" in cache.meta:  # a PTB-XL cache: its patient ids are PTB-XL's own
        keys[:] = [f"ptbxl:{p}" for p in cache.patient_id[idx].astype(str)]
    if "ptbxl_patient_id" in cache.meta:  # CinC HR* records mapped to PTB-XL patients by the source
        pid = np.asarray(cache.meta["ptbxl_patient_id"])[idx].astype(str)
        mapped = ~np.isin(pid, ["", "-1", "nan"])
        keys[mapped] = [f"ptbxl:{p}" for p in pid[mapped]]
    return keys


def n_shared(a: np.ndarray, b: np.ndarray) -> int:
    """How many distinct keys ``a`` and ``b`` have in common."""
    return len(np.intersect1d(np.asarray(a, dtype=str), np.asarray(b, dtype=str)))
