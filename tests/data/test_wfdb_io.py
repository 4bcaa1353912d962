"""The fast WFDB reader: header variants, every format against wfdb.rdrecord, and each RecordError reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from ecgforge.data import wfdb_io
from ecgforge.data.record import RecordError
from ecgforge.data.wfdb_io import parse_header, read_record, read_signal

LEADS12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u03bcv": 1e-3, "v": 1e3}


def wfdb_mv(path: str) -> np.ndarray:
    """Reference: wfdb.rdrecord's physical signal as (leads, T) float32 millivolts."""
    rec = wfdb.rdrecord(path)
    scale = np.array([_TO_MV[u.lower()] for u in rec.units])[:, None]
    return (rec.p_signal.T * scale).astype(np.float32)


def assert_same_as_wfdb(path: str) -> None:
    ours = read_record(path).data
    ref = wfdb_mv(path)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7, equal_nan=True)


def write_digital(tmp: Path, name: str, fmt: str, n_sig: int = 3, n: int = 1001, **kw) -> str:
    """Seeded random digital record written with wfdb.wrsamp; returns the record path."""
    rng = np.random.default_rng(1)
    lim = {"80": 120, "212": 2000}.get(fmt, 30000)
    d = np.clip(np.cumsum(rng.integers(-40, 41, (n, n_sig)), axis=0), -lim, lim).astype(np.int32)
    units = kw.pop("units", ["mV", "uV", "V"][:n_sig] + ["mV"] * max(0, n_sig - 3))
    wfdb.wrsamp(
        name,
        fs=250,
        units=units,
        sig_name=LEADS12[:n_sig],
        d_signal=d,
        fmt=[fmt] * n_sig,
        adc_gain=[200.0, 1000.0, 0.5][:n_sig] + [100.0] * max(0, n_sig - 3),
        baseline=[0, 10, -5][:n_sig] + [0] * max(0, n_sig - 3),
        write_dir=str(tmp),
        **kw,
    )
    return str(tmp / name)


# --------------------------------------------------------------------------------------------- headers


def test_header_fields_defaults_and_variants(tmp_path: Path) -> None:
    hea = tmp_path / "v.hea"
    hea.write_bytes(
        b"v 4 500/1000(0) 3\r\n"
        b"v.dat 16\r\n"  # only file and format: gain 200, baseline = adc_zero = 0, units mV
        b"v.dat 16 1000.0(-7)/uV 16 3 11 -1 0 V1 \r\n"
        b"v.dat 16 50 12 4\r\n"  # gain without units/baseline: baseline = adc_zero = 4
        b"v.dat 16x1+0 2e2/mV 16 0 0 0 0 lead II long name\r\n"
        b"# Age: 56\r\n#Dx: 1,2\r\n"
    )
    h = parse_header(hea)
    assert (h.record_name, h.n_signals, h.fs_hz, h.n_samples) == ("v", 4, 500.0, 3)
    s0, s1, s2, s3 = h.signals
    assert (s0.gain, s0.baseline, s0.units, s0.adc_zero, s0.initial_value, s0.checksum) == (
        200.0,
        0,
        "mV",
        0,
        None,
        None,
    )
    assert (s1.gain, s1.baseline, s1.units, s1.adc_zero, s1.initial_value, s1.checksum, s1.lead_name) == (
        1000.0,
        -7,
        "uV",
        3,
        11,
        -1,
        "V1",
    )
    assert (s2.gain, s2.baseline, s2.units) == (50.0, 4, "mV")
    assert s3.lead_name == "lead II long name" and s3.gain == 200.0
    assert h.comments == ["Age: 56", "Dx: 1,2"]


def test_header_mat_offset_and_default_fs(tmp_path: Path) -> None:
    hea = tmp_path / "m.hea"
    hea.write_text("m 1\nm.mat 16x1+24 1000.0(0)/mV 16 0 5 7 0 I\n")
    h = parse_header(hea)
    assert h.fs_hz == 250.0 and h.n_samples is None  # WFDB defaults
    s = h.signals[0]
    assert (s.file_name, s.fmt, s.samples_per_frame, s.byte_offset) == ("m.mat", 16, 1, 24)


def test_latin1_comment_is_harmless(tmp_path: Path) -> None:
    path = write_digital(tmp_path, "lat", "16")
    with open(path + ".hea", "ab") as f:
        f.write("# Befund: unauffällig\n".encode("latin-1"))
    assert parse_header(path + ".hea").comments[-1] == "Befund: unauffällig"
    assert_same_as_wfdb(path)


def test_nsamp_missing_is_taken_from_file(tmp_path: Path) -> None:
    path = write_digital(tmp_path, "ns", "16", n=777)
    lines = Path(path + ".hea").read_text().splitlines()
    lines[0] = "ns 3 250"
    Path(path + ".hea").write_text("\n".join(lines) + "\n")
    assert read_record(path).data.shape == (3, 777)


def test_empty_signal_file_without_nsamp_reads_as_no_samples(tmp_path: Path) -> None:
    """Nothing to decode, no sample count or checksum to contradict it: zero samples (the cache writer then
    skips the record as "empty signal"), not an exception from a reduction over nothing."""
    (tmp_path / "e.hea").write_text("e 2 500\ne.dat 16\ne.dat 16\n")
    (tmp_path / "e.dat").write_bytes(b"")
    assert read_record(str(tmp_path / "e")).data.shape == (2, 0)


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["16", "24", "32", "80", "212"])
def test_formats_written_by_wfdb_match_rdrecord(tmp_path: Path, fmt: str) -> None:
    # 3 signals x 1001 samples = an odd number of 12-bit samples for 212 (a half-filled last byte triple).
    path = write_digital(tmp_path, f"r{fmt}", fmt)
    assert_same_as_wfdb(path)
    sig = read_record(path)
    assert sig.lead_names == ["I", "II", "III"] and sig.fs_hz == 250.0


@pytest.mark.parametrize("fmt", ["8", "61", "160"])
def test_formats_wfdb_cannot_write_match_rdrecord(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(2)
    n, n_sig = 500, 2
    if fmt == "8":
        diffs = rng.integers(-20, 21, (n, n_sig)).astype(np.int8)
        init = [7, -3]
        d = np.cumsum(diffs.astype(np.int64), axis=0) + np.array(init)
        raw = diffs.tobytes()
    else:
        d = rng.integers(-3000, 3000, (n, n_sig))
        init = list(d[0])
        raw = d.astype(">i2").tobytes() if fmt == "61" else (d + 32768).astype("<u2").tobytes()
    (tmp_path / "f.dat").write_bytes(raw)
    checks = [int(c) for c in (d.sum(axis=0) + 32768) % 65536 - 32768]
    lines = [f"f {n_sig} 360 {n}"] + [
        f"f.dat {fmt} 100(3)/mV 12 0 {init[i]} {checks[i]} 0 {LEADS12[i]}" for i in range(n_sig)
    ]
    (tmp_path / "f.hea").write_text("\n".join(lines) + "\n")
    assert_same_as_wfdb(str(tmp_path / "f"))
    np.testing.assert_allclose(read_record(tmp_path / "f").data, ((d - 3) / 100).T, rtol=1e-6)


def test_two_signal_files_with_different_formats(tmp_path: Path) -> None:
    a = write_digital(tmp_path, "a", "16", n_sig=2, n=400)
    b = write_digital(tmp_path, "b", "212", n_sig=1, n=400)
    ha, hb = Path(a + ".hea").read_text().splitlines(), Path(b + ".hea").read_text().splitlines()
    hb[1] = hb[1].replace(" I", " V1")
    (tmp_path / "ab.hea").write_text("\n".join(["ab 3 250 400", ha[1], ha[2], hb[1]]) + "\n")
    ours = read_record(tmp_path / "ab")
    assert ours.lead_names == ["I", "II", "V1"]
    np.testing.assert_array_equal(ours.data, np.concatenate([wfdb_mv(a), wfdb_mv(b)]))
    assert_same_as_wfdb(str(tmp_path / "ab"))


def test_units_become_millivolts(tmp_path: Path) -> None:
    d = np.array([[1000, 1000, 1000, 1000]] * 5, np.int32)
    wfdb.wrsamp(
        "u",
        fs=100,
        units=["mV", "uV", "V", "mV"],
        sig_name=["I", "II", "III", "V1"],
        d_signal=d,
        fmt=["16"] * 4,
        adc_gain=[1000.0] * 4,
        baseline=[0] * 4,
        write_dir=str(tmp_path),
    )
    hea = tmp_path / "u.hea"
    hea.write_text(hea.read_text().replace("/mV 16 0 1000", "/\u03bcV 16 0 1000", 1).replace("/mV", "/mv", 1))
    # signal 0 mV->μV (0.001 mV), 1 uV (0.001), 2 V (1000), 3 lower-case "mv" (1)
    np.testing.assert_allclose(read_record(tmp_path / "u").data[:, 0], [1e-3, 1e-3, 1e3, 1.0], rtol=1e-6)


@pytest.mark.parametrize("fmt,missing", [("16", -32768), ("212", -2048), ("24", -(2**23))])
def test_missing_samples_become_nan(tmp_path: Path, fmt: str, missing: int) -> None:
    d = np.arange(20, dtype=np.int32).reshape(10, 2)
    d[4, 1] = missing
    wfdb.wrsamp(
        "nan",
        fs=100,
        units=["mV"] * 2,
        sig_name=["I", "II"],
        d_signal=d,
        fmt=[fmt] * 2,
        adc_gain=[100.0] * 2,
        baseline=[0] * 2,
        write_dir=str(tmp_path),
    )
    data = read_record(tmp_path / "nan").data
    assert np.isnan(data[1, 4]) and np.isnan(data).sum() == 1
    assert_same_as_wfdb(str(tmp_path / "nan"))


def test_mat_v4_like_cinc(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    val = rng.integers(-500, 500, (12, 640)).astype(np.int16)
    scipy.io.savemat(tmp_path / "X1.mat", {"val": val}, format="4")
    checks = (val.astype(np.int64).sum(axis=1) + 32768) % 65536 - 32768
    lines = ["X1 12 500 640"] + [
        f"X1.mat 16+24 1000/mV 16 0 {val[i, 0]} {checks[i]} 0 {name}" for i, name in enumerate(LEADS12)
    ]
    (tmp_path / "X1.hea").write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_record(tmp_path / "X1").data, val / 1000.0, rtol=1e-6)
    assert_same_as_wfdb(str(tmp_path / "X1"))  # wfdb reads the .mat as raw format 16 after 24 bytes


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_ptbxl_records_match_wfdb(shared_data: Path) -> None:
    heads100 = sorted((shared_data / "ptb-xl" / "records100").glob("*/*.hea"))
    heads500 = sorted((shared_data / "ptb-xl" / "records500").glob("*/*.hea"))
    assert len(heads100) == 6548 and len(heads500) == 138
    for hea in heads100[::40] + heads500[::4]:  # every folder of records100, a quarter of records500
        assert_same_as_wfdb(str(hea.with_suffix("")))
    sig = read_record(heads500[0].with_suffix(""))
    assert sig.data.shape == (12, 5000) and sig.fs_hz == 500.0 and sig.lead_names[3] == "AVR"


@pytest.mark.data
def test_real_cinc_mat_records_match_wfdb(shared_data: Path) -> None:
    root = shared_data / "cinc2021-sample"
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("evaluation"))
    assert len(folders) == 6
    for folder in folders:
        heads = sorted(folder.glob("*.hea"))
        assert heads, folder
        for hea in heads[:: max(1, len(heads) // 4)]:
            assert_same_as_wfdb(str(hea.with_suffix("")))


# --------------------------------------------------------------------------------------------- errors


@pytest.fixture
def ptbxl_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A copy of PTB-XL record 00001 (records100) in tmp_path; returns the record path without extension."""
    src = shared_data / "ptb-xl" / "records100" / "00000" / "00001_lr"
    for ext in (".hea", ".dat"):
        shutil.copy(str(src) + ext, tmp_path / ("00001_lr" + ext))
    return tmp_path / "00001_lr"


@pytest.fixture
def cinc_copy(shared_data: Path, tmp_path: Path) -> Path:
    src = shared_data / "cinc2021-sample" / "cpsc_2018" / "A0002"
    for ext in (".hea", ".mat"):
        shutil.copy(str(src) + ext, tmp_path / ("A0002" + ext))
    return tmp_path / "A0002"


def _edit_header(rec: Path, line: int, old: str, new: str) -> None:
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    assert old in lines[line]
    lines[line] = lines[line].replace(old, new, 1)
    hea.write_text("\n".join(lines) + "\n")


def _raises(rec: Path, pattern: str) -> str:
    with pytest.raises(RecordError, match=pattern) as info:
        read_record(str(rec))
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.mark.data
def test_copy_reads_fine(ptbxl_copy: Path, cinc_copy: Path) -> None:
    assert read_record(ptbxl_copy).data.shape == (12, 1000)
    assert read_record(cinc_copy).data.shape == (12, 5000)


def test_error_missing_header(tmp_path: Path) -> None:
    _raises(tmp_path / "nothing", r"^missing header: .*nothing\.hea")


@pytest.mark.data
def test_error_zero_byte_header(ptbxl_copy: Path) -> None:
    ptbxl_copy.with_suffix(".hea").write_bytes(b"")
    _raises(ptbxl_copy, r"^empty header")


@pytest.mark.data
def test_error_garbage_header(ptbxl_copy: Path) -> None:
    ptbxl_copy.with_suffix(".hea").write_text("this is not a header at all\n")
    _raises(ptbxl_copy, r"header line 1: signal count 'is' is not a number")


@pytest.mark.data
def test_error_binary_header(ptbxl_copy: Path) -> None:
    ptbxl_copy.with_suffix(".hea").write_bytes(ptbxl_copy.with_suffix(".dat").read_bytes()[:200])
    _raises(ptbxl_copy, r"header is binary|not valid UTF-8")


@pytest.mark.data
def test_error_non_utf8_in_signal_line(ptbxl_copy: Path) -> None:
    hea = ptbxl_copy.with_suffix(".hea")
    hea.write_bytes(hea.read_bytes().replace(b" V1\n", b" V\xff1\n"))
    _raises(ptbxl_copy, r"^header line 8 is not valid UTF-8")


@pytest.mark.data
def test_error_unparsable_signal_line(ptbxl_copy: Path) -> None:
    _edit_header(ptbxl_copy, 3, "16 0 64", "sixteen 0 64")
    _raises(ptbxl_copy, r"header line 4: ADC resolution 'sixteen' is not a number")


@pytest.mark.data
def test_error_fs_zero(ptbxl_copy: Path) -> None:
    _edit_header(ptbxl_copy, 0, " 100 ", " 0 ")
    _raises(ptbxl_copy, r"sampling frequency 0 Hz <= 0")


@pytest.mark.data
@pytest.mark.parametrize("gain", ["0.0(0)/mV", "abc/mV"])
def test_error_bad_gain(ptbxl_copy: Path, gain: str) -> None:
    _edit_header(ptbxl_copy, 2, "1000.0(0)/mV", gain)
    _raises(ptbxl_copy, r"signal 1 \(II\): gain .* zero|gain .* is not a number")


@pytest.mark.data
def test_error_unknown_format(ptbxl_copy: Path) -> None:
    _edit_header(ptbxl_copy, 1, "00001_lr.dat 16 ", "00001_lr.dat 17 ")
    _raises(ptbxl_copy, r"unknown or unsupported signal format 17")


@pytest.mark.data
def test_error_missing_signal_file(ptbxl_copy: Path) -> None:
    ptbxl_copy.with_suffix(".dat").unlink()
    _raises(ptbxl_copy, r"^missing signal file: .*00001_lr\.dat")


@pytest.mark.data
def test_error_truncated_signal(ptbxl_copy: Path) -> None:
    dat = ptbxl_copy.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: 800 * 12 * 2 + 5])  # 800 whole frames and a partial one
    _raises(ptbxl_copy, r"^truncated signal: 800 of 1000 samples")


@pytest.mark.data
def test_error_too_many_samples(ptbxl_copy: Path) -> None:
    dat = ptbxl_copy.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes() + bytes(24 * 10))
    _raises(ptbxl_copy, r"^wrong sample count: .* holds 1010 samples, header says 1000")


@pytest.mark.data
def test_error_checksum_mismatch(ptbxl_copy: Path) -> None:
    dat = ptbxl_copy.with_suffix(".dat")
    raw = bytearray(dat.read_bytes())
    raw[2 * 5] ^= 0x01  # flip the low bit of frame 0, signal 5 (AVF): 16-bit samples, 12 per frame
    dat.write_bytes(bytes(raw))
    _raises(ptbxl_copy, r"^checksum mismatch in signal 5 \(AVF\)")


@pytest.mark.data
def test_error_duplicated_leads(ptbxl_copy: Path) -> None:
    _edit_header(ptbxl_copy, 8, " V2", " V1")
    _raises(ptbxl_copy, r"duplicated lead names \['V1'\]")


@pytest.mark.data
def test_error_mat_without_val(cinc_copy: Path) -> None:
    val = scipy.io.loadmat(cinc_copy.with_suffix(".mat"))["val"]
    scipy.io.savemat(cinc_copy.with_suffix(".mat"), {"ecg": val}, format="4")
    _raises(cinc_copy, r"has no variable 'val' \(has \['ecg'\]\)")


@pytest.mark.data
def test_error_mat_wrong_shape(cinc_copy: Path) -> None:
    val = scipy.io.loadmat(cinc_copy.with_suffix(".mat"))["val"]
    scipy.io.savemat(cinc_copy.with_suffix(".mat"), {"val": val.T}, format="4")  # (T, 12) by mistake
    _raises(cinc_copy, r"'val' has shape \(5000, 12\), expected \(12, T\)")


@pytest.mark.data
def test_error_mat_truncated(cinc_copy: Path) -> None:
    val = scipy.io.loadmat(cinc_copy.with_suffix(".mat"))["val"]
    scipy.io.savemat(cinc_copy.with_suffix(".mat"), {"val": val[:, :4000]}, format="4")
    _raises(cinc_copy, r"^truncated signal: 4000 of 5000 samples")


@pytest.mark.data
def test_error_mat_garbage(cinc_copy: Path) -> None:
    cinc_copy.with_suffix(".mat").write_bytes(b"\x07" * 13)
    _raises(cinc_copy, r"unreadable \.mat file A0002\.mat")


@pytest.mark.data
def test_error_header_fewer_signal_lines(ptbxl_copy: Path) -> None:
    hea = ptbxl_copy.with_suffix(".hea")
    hea.write_text("\n".join(hea.read_text().splitlines()[:-1]) + "\n")
    _raises(ptbxl_copy, r"declares 12 signals but has 11 signal lines")


def test_read_signal_takes_directory(tmp_path: Path) -> None:
    path = write_digital(tmp_path, "dir", "16")
    data = read_signal(parse_header(path + ".hea"), tmp_path)
    np.testing.assert_array_equal(data, wfdb_mv(path))


@pytest.mark.data
def test_error_mat_cut_short(cinc_copy: Path) -> None:
    mat = cinc_copy.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:50_000])
    _raises(cinc_copy, r"^truncated signal: 2082 of 5000 samples \(A0002\.mat\)")


@pytest.mark.parametrize(
    "line",
    [
        "00001_lr.dat 16 1000.0(0)/mV 16 0 -119 1508 0 I",
        "A0001.mat 16+24 1000/mV 16 0 28 -1716 0 aVR",  # not the full form: general parser
        "r.dat 212 200(-12)/uV 12 5 7 -3 0 lead V1 with spaces",
        "r.dat 16 4880/mV 16 0 136 -28477 0 II",
        "r.dat 16 1000. 16 0 1 2 0 III",
        "r.dat 16 0(0)/mV 16 0 1 2 0 V2",  # gain 0: the general parser's error
        "r.dat 99 1000/mV 16 0 1 2 0 V3",  # unknown format: the general parser's error
    ],
)
def test_full_line_fast_path_equals_general_parser(line: str) -> None:
    def parse(fn: object) -> object:
        try:
            return fn(line, 2, 0, "r.hea")  # type: ignore[operator]
        except RecordError as exc:
            return str(exc)

    assert parse(wfdb_io._parse_signal_line) == parse(wfdb_io._parse_signal_line_general)
