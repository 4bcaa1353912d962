"""Half-downloaded and hand-edited datasets: broken WFDB records beside good ones, cached in one build.

Every broken record is made from a real PTB-XL (``.hea`` + ``.dat``) or PhysioNet/CinC (``.hea`` + ``.mat``)
record in ``../shared/data``, one defect each. The build must list each as skipped with the reason for that
defect, and cache every good record beside them with the samples ``wfdb.rdrecord`` reads, to the 1 uV step of
the cache. Builds use a pool of two reader processes, as users run them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from ecgforge.data.cache import SCALE_MV, Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from tests.reliability.ledger import record

ROOT = Path(__file__).resolve().parents[2]
PTBXL_GOOD = ["00001_lr", "00002_lr", "00004_lr", "00013_lr", "00015_lr", "00024_lr"]  # folds 1-3 only on disk
CINC_GOOD = ["A0002", "A0003", "A0004", "A0005"]


# --------------------------------------------------------------------------------------------- editing


def copy_record(src: Path, folder: Path, name: str) -> Path:
    """Copy a record under a new name (header record line and signal file names follow); returns its base path."""
    text = src.with_suffix(".hea").read_text()
    lines = text.splitlines()
    old = lines[0].split()[0]
    lines[0] = lines[0].replace(old, name, 1)
    signal_file = None
    for i, line in enumerate(lines[1:], 1):
        if line.startswith(old + "."):
            signal_file = line.split()[0]
            lines[i] = name + line[len(old):]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    assert signal_file is not None
    shutil.copy(src.parent / signal_file, folder / (name + Path(signal_file).suffix))
    return folder / name


def edit_header(rec: Path, line: int, old: str, new: str) -> None:
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    assert old in lines[line], (old, lines[line])
    lines[line] = lines[line].replace(old, new, 1)
    hea.write_text("\n".join(lines) + "\n")


def digital(rec: Path) -> np.ndarray:
    """``(leads, T)`` stored integers of a format-16 record."""
    return wfdb.rdrecord(str(rec), physical=False).d_signal.T.astype(np.int64)


def write_format16(rec: Path, d: np.ndarray, keep: list[int] | None = None) -> None:
    """Rewrite a record's ``.dat`` with the integers ``d (leads, T)`` (only the leads ``keep``), and its header's
    initial values and checksums to match, so that only the samples (or the lead set) differ from the real record."""
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    keep = list(range(d.shape[0])) if keep is None else keep
    d = d[keep]
    rec.with_suffix(".dat").write_bytes(np.ascontiguousarray(d.T).astype("<i2").tobytes())
    head = lines[0].split()
    head[1] = str(len(keep))
    out = [" ".join(head)]
    for row, lead in enumerate(keep):
        f = lines[1 + lead].split(maxsplit=8)
        f[5], f[6] = str(int(d[row, 0])), str(int((d[row].sum() + 32768) % 65536 - 32768))
        out.append(" ".join(f))
    hea.write_text("\n".join(out + [x for x in lines[1 + 12:]]) + "\n")


# -------------------------------------------------------------------------------------------- the cases

Maker = Callable[[Path], None]


def _truncate(rec: Path) -> None:
    dat = rec.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: 800 * 12 * 2 + 5])  # 800 whole frames and part of one


def _nan(rec: Path) -> None:
    d = digital(rec)
    d[4, 100:105] = -32768  # WFDB format 16's "no sample" value: read as NaN
    write_format16(rec, d)


def _flat(rec: Path) -> None:
    write_format16(rec, np.full_like(digital(rec), 12))


def _mat_wrong_variable(rec: Path) -> None:
    val = scipy.io.loadmat(rec.with_suffix(".mat"))["val"]
    scipy.io.savemat(rec.with_suffix(".mat"), {"ecg": val}, format="4")


def _mat_infinite(rec: Path) -> None:
    val = scipy.io.loadmat(rec.with_suffix(".mat"))["val"].astype(np.float64)
    val[3, 10:13] = np.inf
    val[7, 50] = -np.inf
    scipy.io.savemat(rec.with_suffix(".mat"), {"val": val}, format="4")  # a float64 matrix, as some converters write


def _mat_nan(rec: Path) -> None:
    val = scipy.io.loadmat(rec.with_suffix(".mat"))["val"].astype(np.float64)
    val[0, :7] = np.nan
    scipy.io.savemat(rec.with_suffix(".mat"), {"val": val}, format="4")


def _bump_checksum(rec: Path) -> None:
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    f = lines[3].split(maxsplit=8)  # signal 2 (III)
    f[6] = str(int(f[6]) + 1)
    lines[3] = " ".join(f)
    hea.write_text("\n".join(lines) + "\n")


def _non_utf8(rec: Path) -> None:
    hea = rec.with_suffix(".hea")
    hea.write_bytes(hea.read_bytes().replace(b" V1\n", b" V\xff1\n"))


def _remove_signal_line(rec: Path) -> None:
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    del lines[9]  # V3: the record line still declares 12 signals
    hea.write_text("\n".join(lines) + "\n")


# record name -> (made from "ptbxl" or "cinc", the defect, the reason the build must give)
BROKEN: dict[str, tuple[str, Maker, str]] = {
    "truncated_signal": ("ptbxl", _truncate, r"^truncated signal: 800 of 1000 samples \(truncated_signal\.dat\)$"),
    "missing_signal": ("ptbxl", lambda r: r.with_suffix(".dat").unlink(), r"^missing signal file: .*missing_signal\.dat$"),
    "zero_byte_signal": ("ptbxl", lambda r: r.with_suffix(".dat").write_bytes(b""), r"^truncated signal: 0 of 1000 samples"),
    "header_more_samples": ("ptbxl", lambda r: edit_header(r, 0, " 100 1000", " 100 1200"),
                            r"^truncated signal: 1000 of 1200 samples"),
    "header_fewer_samples": ("ptbxl", lambda r: edit_header(r, 0, " 100 1000", " 100 900"),
                             r"^wrong sample count: header_fewer_samples\.dat holds 1000 samples, header says 900$"),
    "wrong_checksum": ("ptbxl", _bump_checksum, r"^checksum mismatch in signal 2 \(III\): header -?\d+, data -?\d+$"),
    "unknown_format": ("ptbxl", lambda r: [edit_header(r, i, ".dat 16 ", ".dat 17 ") for i in range(1, 13)],
                       r"^unknown or unsupported signal format 17 \(supported: .*\): .*unknown_format\.hea$"),
    "gain_not_a_number": ("ptbxl", lambda r: edit_header(r, 2, "1000.0(0)/mV", "abc/mV"),
                          r"^header line 3: gain 'abc/mV' is not a number: .*gain_not_a_number\.hea$"),
    "nan_samples": ("ptbxl", _nan, r"^5 NaN/infinite samples$"),
    "gain_overflows_to_inf": ("ptbxl", lambda r: edit_header(r, 7, "1000.0(0)/mV", "1e-300(0)/mV"),
                              r"^\d+ NaN/infinite samples$"),
    "flat_line": ("ptbxl", _flat, r"^flat line: every lead is constant$"),
    "lead_missing": ("ptbxl", _remove_signal_line, r"^header declares 12 signals but has 11 signal lines: "),
    "duplicated_leads": ("ptbxl", lambda r: edit_header(r, 8, " V2", " V1"), r"^duplicated lead names \['V1'\]: "),
    "zero_byte_header": ("ptbxl", lambda r: r.with_suffix(".hea").write_bytes(b""), r"^empty header: .*zero_byte_header\.hea$"),
    "non_utf8_header": ("ptbxl", _non_utf8, r"^header line 8 is not valid UTF-8: "),
    "binary_header": ("ptbxl", lambda r: r.with_suffix(".hea").write_bytes(r.with_suffix(".dat").read_bytes()[:300]),
                      r"^header is binary \(NUL bytes\)"),
    "sampling_rate_zero": ("ptbxl", lambda r: edit_header(r, 0, " 100 1000", " 0 1000"),
                           r"^sampling frequency 0 Hz <= 0: "),
    "A_mat_wrong_variable": ("cinc", _mat_wrong_variable, r"^\.mat file A_mat_wrong_variable\.mat has no variable 'val' \(has \['ecg'\]\)$"),
    "A_mat_infinite": ("cinc", _mat_infinite, r"^\.mat variable 'val' holds 4 NaN/infinite samples: A_mat_infinite\.mat$"),
    "A_mat_nan": ("cinc", _mat_nan, r"^\.mat variable 'val' holds 7 NaN/infinite samples: A_mat_nan\.mat$"),
    "A_mat_truncated": ("cinc", lambda r: r.with_suffix(".mat").write_bytes(r.with_suffix(".mat").read_bytes()[:50_000]),
                        r"^truncated signal: 2082 of 7000 samples \(A_mat_truncated\.mat\)$"),
}


@pytest.fixture(scope="module")
def folders(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two dataset folders: PTB-XL-derived (``.dat``) and CinC-derived (``.mat``), good records beside broken ones."""
    root = tmp_path_factory.mktemp("records")
    src = {"ptbxl": shared_data / "ptb-xl" / "records100" / "00000", "cinc": shared_data / "cinc2021-sample" / "cpsc_2018"}
    out = {"ptbxl": root / "ptbxl", "cinc": root / "cinc"}
    for d in out.values():
        d.mkdir()
    for name in PTBXL_GOOD:
        copy_record(src["ptbxl"] / name, out["ptbxl"], name)
    for name in CINC_GOOD:
        copy_record(src["cinc"] / name, out["cinc"], name)
    # Good records that look odd: an 11-lead record (V3 absent, header and file agree) and a Latin-1 comment.
    rec = copy_record(src["ptbxl"] / "00032_lr", out["ptbxl"], "eleven_leads")
    write_format16(rec, digital(rec), keep=[i for i in range(12) if i != 8])
    rec = copy_record(src["ptbxl"] / "00033_lr", out["ptbxl"], "latin1_comment")
    with open(rec.with_suffix(".hea"), "ab") as f:
        f.write("# Befund: unauff\u00e4llig\n".encode("latin-1"))
    for name, (kind, make, _) in BROKEN.items():
        base = src[kind] / ("00035_lr" if kind == "ptbxl" else "A0006")
        make(copy_record(base, out[kind], name))
    return out


def _spec(folder: Path, out: Path, kind: str, fs_hz: int) -> CacheRecipe:
    source: dict[str, object] = {"kind": "wfdb_folder", "path": str(folder)}
    if kind == "cinc":  # the CinC source reads header comments for labels: broken headers must not stop it
        source = {"kind": "cinc", "path": str(folder), "label_sets": ["dx"]}
    return CacheRecipe.model_validate({"name": kind, "out": str(out), "source": source, "signal": {"fs_hz": fs_hz}})


def _check_build(cache_path: Path, folder: Path, kind: str, good: list[str]) -> None:
    c = Cache(cache_path)
    skipped = dict(c.skipped)
    broken = {name: why for name, (k, _, why) in BROKEN.items() if k == kind}
    failures = []
    for name, pattern in broken.items():
        reason = skipped.get(name)
        ok = reason is not None and re.search(pattern, reason) is not None and "\n" not in reason
        record("records", "skipped with its reason" if ok else "not skipped as expected", lost=0)
        if not ok:
            failures.append(f"{name}: {reason!r} does not match {pattern!r}")
    ids = list(c.record_id)
    for name in good:
        lost = name not in ids
        if not lost:
            i = ids.index(name)
            ref = wfdb.rdrecord(str(folder / name))
            names = [n.upper() for n in ref.sig_name]
            got = c.read(i)
            for j, lead in enumerate(CANONICAL_LEADS):
                if lead.upper() in names:
                    expected = ref.p_signal[:, names.index(lead.upper())]
                    lost = lost or got.shape[1] != expected.size or not c.present[i, j] or \
                        not np.allclose(got[j], expected, rtol=0, atol=SCALE_MV / 2 + 1e-6)
                else:  # a lead the record lacks is marked absent and stored as zeros
                    lost = lost or bool(c.present[i, j]) or bool(np.any(got[j]))
        record("records", "cached intact" if not lost else "good record lost or changed", lost=int(lost))
        if lost:
            failures.append(f"good record {name} missing or changed")
    assert not failures, failures
    assert len(c) == len(good) and set(skipped) == set(broken), (sorted(ids), sorted(skipped))


@pytest.mark.data
def test_ptbxl_derived_records_through_the_cli(folders: dict[str, Path], tmp_path: Path) -> None:
    """``ecgforge cache build`` as a user runs it: exit 0, no traceback, the skipped table printed."""
    spec = tmp_path / "spec.toml"
    out = tmp_path / "c.h5"
    spec.write_text(f'name = "broken"\nout = "{out}"\n[source]\nkind = "wfdb_folder"\npath = "{folders["ptbxl"]}"\n'
                    '[signal]\nfs_hz = 100\n')
    proc = subprocess.run([sys.executable, "-m", "ecgforge", "cache", "build", str(spec), "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "skipped records" in proc.stderr
    info = subprocess.run([sys.executable, "-m", "ecgforge", "cache", "info", str(out), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    listed = {s["record"]: s["reason"] for s in json.loads(info.stdout)["skipped"]}
    assert set(listed) == {n for n, (k, _, _) in BROKEN.items() if k == "ptbxl"}
    _check_build(out, folders["ptbxl"], "ptbxl", [*PTBXL_GOOD, "eleven_leads", "latin1_comment"])


@pytest.mark.data
def test_cinc_derived_records(folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    build_cache(_spec(folders["cinc"], out, "cinc", 500), workers=2)
    _check_build(out, folders["cinc"], "cinc", CINC_GOOD)
