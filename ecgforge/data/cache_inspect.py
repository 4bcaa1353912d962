"""Inspecting caches: the counts ``ecgforge cache info`` prints, and ``cache verify``'s integrity check."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.data.cache_spec import CacheRecipe


def info(path: str | Path) -> dict[str, Any]:
    """The summary `ecgforge cache info --json` prints."""
    c = Cache(path)
    return {
        "path": str(c.path),
        "name": c.name,
        "n_records": len(c),
        "n_patients": int(len(set(c.patient_id))),
        "fs_hz": c.fs_hz,
        "leads": c.leads,
        "units": "mV",
        "duration_s": {
            "total": float(c.lengths.sum() / c.fs_hz),
            "min": float(c.lengths.min() / c.fs_hz) if len(c) else 0.0,
            "max": float(c.lengths.max() / c.fs_hz) if len(c) else 0.0,
        },
        "spec_hash": c.spec_hash,
        "skipped": [{"record": r, "reason": why} for r, why in c.skipped],
        "label_sets": {
            name: {lab: int(c.labels[name][:, j].sum()) for j, lab in enumerate(c.label_names[name])} for name in c.labels
        },
        "sex": {k: int(v) for k, v in zip(*np.unique(c.sex.astype(str), return_counts=True), strict=True)},
        "sources": {k: int(v) for k, v in zip(*np.unique(c.source.astype(str), return_counts=True), strict=True)},
        "folds": {int(k): int(v) for k, v in zip(*np.unique(c.fold, return_counts=True), strict=True)},
        "lead_presence": {lead: int(c.present[:, j].sum()) for j, lead in enumerate(c.leads)},
    }


def verify(path: str | Path) -> list[str]:
    """Re-check a cache: spec hash against its stored spec, every record's checksum, offsets in range.

    Returns the list of problems (empty when the cache is intact).
    """
    problems: list[str] = []
    c = Cache(path)
    try:
        spec = CacheRecipe.model_validate_json(json.dumps(c.spec))
        if spec.spec_hash() != c.spec_hash:
            problems.append(f"spec hash {c.spec_hash} does not match its stored spec ({spec.spec_hash()})")
    except ValueError as exc:
        problems.append(f"stored spec no longer validates: {str(exc).splitlines()[0]}")
    ends = c.offsets + c.lengths
    with h5py.File(c.path, "r") as h5:
        total = h5["signals"].shape[0]
    if len(c) and (ends.max() > total or (c.offsets[1:] != ends[:-1]).any()):
        problems.append("offsets/lengths do not tile the signals array")
    for i in range(len(c)):
        q = np.ascontiguousarray((c.read(i) / np.float32(c.scale_mv)).round().astype(np.int16).T)
        if zlib.crc32(q.tobytes()) != int(c.checksum[i]):
            problems.append(f"record {c.record_id[i]}: checksum mismatch")
    return problems
