"""Inspecting caches: the counts ``ecgforge cache info`` prints, and ``cache verify``'s integrity check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data import cache_layout as L
from ecgforge.data.cache import Cache, CacheError, metadata_problems, problem_lines, read_metadata
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.errors import resolved_against


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
        "units": L.UNITS,
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
        "caveats": caveats(c),
    }


# Databases of the PhysioNet/CinC Challenge whose records repeat patients without saying which (the Challenge
# files carry no patient id): records and patients of the whole databases, from their PhysioNet descriptions.
_UNRESOLVED_PATIENTS = {"ptb": ("PTB (S*)", 549, 290), "incart": ("INCART (I*)", 75, 32)}


def caveats(c: Cache) -> list[str]:
    """What the cache's patient ids cannot tell (one line each): CinC records of databases that repeat patients
    under record names, and PTB-XL (HR*) records left without their PTB-XL patient."""
    if c.spec.get("source", {}).get("kind") != "cinc":
        return []
    lines = []
    counts = {k: int((c.source.astype(str) == k).sum()) for k in _UNRESOLVED_PATIENTS}
    if any(counts.values()):
        which = " and ".join(f"{counts[k]} {name}" for k, (name, _, _) in _UNRESOLVED_PATIENTS.items() if counts[k])
        whole = ", ".join(f"{name.split()[0]} has {r} records of {p} patients"
                          for k, (name, r, p) in _UNRESOLVED_PATIENTS.items() if counts[k])
        lines.append(f"patients: {which} records count as one patient each, but those databases repeat patients "
                     f"({whole}) and the Challenge data does not say which: patient splits and patient positives "
                     "cannot group them")
    hr = c.source.astype(str) == "ptb-xl"
    if hr.any():
        if "ptbxl_patient_id" not in c.meta:
            lines.append(f"patients: {int(hr.sum())} PTB-XL (HR*) records count as one patient each; set "
                         "source.ptbxl_database to give them their PTB-XL patients")
        else:
            unmapped = int((np.asarray(c.meta["ptbxl_patient_id"])[hr] < 0).sum())
            if unmapped:
                lines.append(f"patients: {unmapped} of {int(hr.sum())} PTB-XL (HR*) records are not in "
                             "source.ptbxl_database and count as one patient each")
    return lines


def verify(path: str | Path, notes: list[str] | None = None) -> list[str]:
    """Re-check a cache: its metadata against ``metadata_crc32`` (layout 2), the spec hash against its stored
    spec, offsets in range, every record's samples against its CRC32.

    Returns the problems, one line each, naming the damaged record or part (empty when the cache is intact);
    ``notes`` receives what could not be checked (a layout-1 cache has no metadata checksums).
    """
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such cache file{resolved_against(path)}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path}: not an HDF5 file, or its superblock is damaged ({exc})") from None
    with h5:
        if L.ATTR_LAYOUT_VERSION not in h5.attrs:
            raise CacheError(f"{path}: not an ecgforge cache (no {L.ATTR_LAYOUT_VERSION})")
        values, errors = read_metadata(h5)
        damaged = metadata_problems(h5, values, errors)
        problems = problem_lines(damaged)
        spec_part, hash_part = L.part(attr=L.ATTR_SPEC), L.part(attr=L.ATTR_SPEC_HASH)
        if int(values.get(L.part(attr=L.ATTR_LAYOUT_VERSION), 0)) < 2 and notes is not None:
            notes.append(f"{path}: layout_version 1 (built before caches stored metadata checksums): the metadata "
                         "was not checked, only the samples; rebuild the cache to check both")
        if spec_part not in damaged and hash_part not in damaged:
            try:
                spec = CacheRecipe.model_validate_json(values[spec_part])
                if spec.spec_hash() != str(values[hash_part]):
                    problems.append(f"spec hash {values[hash_part]} does not match its stored spec "
                                    f"({spec.spec_hash()})")
            except (ValueError, KeyError) as exc:
                problems.append(f"stored spec no longer validates: {str(exc).splitlines()[0]}")
        needed = {L.OFFSETS, L.LENGTHS, L.CHECKSUM, L.RECORD_ID}
        if needed & set(damaged) or L.SIGNALS not in h5:
            problems.append("the samples were not checked: " + (f"no {L.SIGNALS} dataset" if L.SIGNALS not in h5
                            else f"{', '.join(sorted(needed & set(damaged)))} damaged"))
            return problems
        total = h5[L.SIGNALS].shape[0]
    c = Cache(path, verify=False) if not errors else None
    if c is None:  # a part the reader needs is unreadable, but not the record tables: check the samples anyway
        return problems
    ends = c.offsets + c.lengths
    if len(c) and (ends.max() > total or (c.offsets[1:] != ends[:-1]).any()):
        problems.append("offsets/lengths do not tile the signals array")
        return problems
    problems += [f"record {c.record_id[i]} (#{i}): samples fail their checksum" for i in range(len(c))
                 if not c.record_crc_ok(i)]
    return problems
