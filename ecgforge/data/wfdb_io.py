"""Fast WFDB reading: header text parsed directly, samples decoded with numpy over the raw bytes.

`wfdb.rdrecord` spends most of its time in generic Python bookkeeping; for the 12-lead records that
pretraining reads by the hundred thousand, parsing the dozen header lines by hand and decoding the signal
file with one `np.fromfile` is several times faster and gives the same physical values (see
``tests/data/test_wfdb_io.py``, which compares against ``wfdb.rdrecord(...).p_signal``).

Header syntax follows the WFDB spec (https://physionet.org/physiotools/wag/header-5.htm)::

    record line:  name[/nseg] nsig [fs[/counter[(base)]] [nsamp [time [date]]]]
    signal line:  file fmt[xspf][:skew][+offset] [gain[(baseline)][/units] [adcres [adczero [init
                  [checksum [blocksize [description]]]]]]]

Everything that makes a record unusable raises `RecordError` with a one-line reason.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ecgforge.data.record import RecordError, Signal

# Bits per stored sample for every format this reader decodes (8 = first differences, 80/160 = offset binary,
# 61 = big-endian 16-bit, 212 = two 12-bit samples packed in three bytes).
FORMAT_BITS: dict[int, int] = {8: 8, 16: 16, 24: 24, 32: 32, 61: 16, 80: 8, 160: 16, 212: 12}

# WFDB's "invalid sample" value per format (wfdb-python INVALID_SAMPLE_VALUE); such samples become NaN.
# Format 8 stores differences and has none.
MISSING_VALUE: dict[int, int] = {
    16: -(2**15),
    24: -(2**23),
    32: -(2**31),
    61: -(2**15),
    80: -(2**7),
    160: -(2**15),
    212: -(2**11),
}

# Physical unit -> factor to millivolts. Keys are lower-cased; both the Greek mu and the micro sign occur.
_TO_MV: dict[str, float] = {
    "mv": 1.0,
    "uv": 1e-3,
    "\u03bcv": 1e-3,
    "\u00b5v": 1e-3,
    "v": 1e3,
    "nv": 1e-6,
    "kv": 1e6,
}

_DEFAULT_GAIN = 200.0  # ADC units per physical unit when the header omits it (WFDB spec)
_DEFAULT_FS = 250.0  # Hz, when the record line omits it (WFDB spec)

# fmt[xspf][:skew][+offset]
_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
# gain[(baseline)][/units]
_GAIN_RE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(.*))?$")


class SignalSpec(NamedTuple):
    """One signal line of a header (a NamedTuple: built 12 times per record, 3x cheaper than a dataclass).

    Attributes:
        file_name: signal file name relative to the header's directory (``00001_lr.dat``, ``A0001.mat``).
        fmt: WFDB storage format code (16, 212, 24, ...).
        samples_per_frame: samples of this signal per frame (``16x2``); this reader supports 1 only.
        skew: samples of skew (``16:3``); this reader supports 0 only.
        byte_offset: bytes to skip at the start of the file (``16+24``: the MATLAB v4 header).
        gain: ADC units per physical unit (e.g. 1000 ADC/mV).
        baseline: ADC value that corresponds to 0 physical units.
        units: physical units as written (``mV``, ``uV``, ...).
        adc_res: ADC resolution in bits (0 = unknown).
        adc_zero: ADC value at the middle of the input range.
        initial_value: first sample of the signal, or None where the header omits it.
        checksum: 16-bit sum of all samples as written (signed or unsigned), or None where omitted.
        block_size: WFDB block size (0 for ordinary files).
        lead_name: the description field (``I``, ``AVR``, ``V1``).
    """

    file_name: str
    fmt: int
    gain: float
    baseline: int
    units: str
    adc_zero: int
    initial_value: int | None
    checksum: int | None
    lead_name: str
    samples_per_frame: int = 1
    skew: int = 0
    byte_offset: int = 0
    adc_res: int = 0
    block_size: int = 0


@dataclass(frozen=True)
class Header:
    """A parsed single-segment WFDB header.

    Attributes:
        record_name: the record name on the record line.
        n_signals: number of signals (leads).
        fs_hz: sampling frequency in Hz.
        n_samples: samples per signal, or None where the header omits it (then taken from the file length).
        signals: one `SignalSpec` per signal, in header order.
        comments: comment lines without the leading ``#`` and surrounding whitespace (``Age: 56``).
        path: the header file it came from.
    """

    record_name: str
    n_signals: int
    fs_hz: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def lead_names(self) -> list[str]:
        return [s.lead_name for s in self.signals]


# ---------------------------------------------------------------------------------------------- header


def _read_bytes(path: str, offset: int = 0) -> bytes:
    """The bytes of file ``path`` from ``offset`` on. Raw ``os`` calls: half the cost of ``open().read()``,
    which a cache build pays twice per record (header and signal file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        want = max(os.fstat(fd).st_size - offset, 0)
        out = os.pread(fd, want, offset)
        while len(out) < want:  # a short read of a regular file: the rest, or the file shrank meanwhile
            more = os.pread(fd, want - len(out), offset + len(out))
            if not more:
                break
            out += more
        return out
    finally:
        os.close(fd)


def _decode_header(raw: bytes, name: str) -> list[str]:
    """Header bytes -> lines. Latin-1 is accepted in comment lines only (free text, e.g. German reports):
    a non-UTF-8 byte in a record or signal line would silently change a field, so it is an error."""
    if not raw.strip():
        raise RecordError(f"empty header: {name}")
    if b"\x00" in raw:
        raise RecordError(f"header is binary (NUL bytes): {name}")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        pass
    lines = []
    for i, line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            if not line.lstrip().startswith(b"#"):
                raise RecordError(f"header line {i} is not valid UTF-8: {name}") from None
            lines.append(line.decode("latin-1"))
    return lines


def _int(text: str, what: str, line_no: int, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        try:  # some writers emit "0.0" for integer fields
            value = float(text)
        except ValueError:
            raise RecordError(f"header line {line_no}: {what} {text!r} is not a number: {name}") from None
        if not value.is_integer():
            raise RecordError(f"header line {line_no}: {what} {text!r} is not an integer: {name}") from None
        return int(value)


def _parse_record_line(fields: list[str], line_no: int, name: str) -> tuple[str, int, float, int | None]:
    record_name = fields[0]
    if "/" in record_name:
        raise RecordError(f"multi-segment records are not supported ({record_name}): {name}")
    if len(fields) < 2:
        raise RecordError(f"header line {line_no}: record line has no signal count: {name}")
    n_signals = _int(fields[1], "signal count", line_no, name)
    if n_signals <= 0:
        raise RecordError(f"header line {line_no}: signal count {n_signals} <= 0: {name}")
    fs_hz = _DEFAULT_FS
    if len(fields) > 2:
        fs_text = re.split(r"[/(]", fields[2], maxsplit=1)[0]  # drop /counter-freq(base-counter)
        try:
            fs_hz = float(fs_text)
        except ValueError:
            raise RecordError(
                f"header line {line_no}: sampling frequency {fields[2]!r} is not a number: {name}"
            ) from None
    if not math.isfinite(fs_hz) or fs_hz <= 0:
        raise RecordError(f"sampling frequency {fs_hz:g} Hz <= 0: {name}")
    n_samples = None
    if len(fields) > 3:
        n_samples = _int(fields[3], "sample count", line_no, name)
        if n_samples < 0:
            raise RecordError(f"header line {line_no}: sample count {n_samples} < 0: {name}")
        n_samples = n_samples or None  # 0 means "unspecified" in WFDB
    return record_name, n_signals, fs_hz, n_samples


# The complete form nearly every header writes: "file fmt gain[(baseline)][/units] adcres adczero init checksum
# blocksize description", with a bare format and a plain decimal gain. One match instead of field-by-field
# parsing (a cache build parses 12 of these per record); anything else goes through the general parser.
# The second group, "fmt gain[(baseline)][/units] adcres adczero", is the same on every line of a dataset, so
# it is converted once (`_layout`); only the initial value, checksum and block size differ from line to line.
_FULL_LINE_RE = re.compile(
    r"(\S+)\s+(\d+\s+\d+(?:\.\d*)?(?:\(-?\d+\))?(?:/\S+)?\s+-?\d+\s+-?\d+)"
    r"\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\S.*)"
)
_LAYOUT_RE = re.compile(r"(\d+)\s+(\d+(?:\.\d*)?)(?:\((-?\d+)\))?(?:/(\S+))?\s+(-?\d+)\s+(-?\d+)")


@functools.lru_cache(maxsize=1024)
def _layout(text: str) -> tuple[int, float, int, str, int, int] | None:
    """``"16 1000.0(0)/mV 16 0"`` -> (fmt, gain, baseline, units, adc_zero, adc_res), or None where the
    general parser must decide (an unknown format, a zero gain: it words the error)."""
    m = _LAYOUT_RE.fullmatch(text)
    if m is None:
        return None
    fmt_text, gain_text, baseline, units, adc_res, adc_zero = m.groups()
    fmt, gain, zero = int(fmt_text), float(gain_text), int(adc_zero)
    if fmt not in FORMAT_BITS or gain == 0:
        return None
    return fmt, gain, zero if baseline is None else int(baseline), units or "mV", zero, int(adc_res)


def _parse_signal_line(text: str, line_no: int, index: int, name: str) -> SignalSpec:
    m = _FULL_LINE_RE.fullmatch(text)
    if m is not None:
        file_name, layout, init, checksum, block, lead = m.groups()
        known = _layout(layout)
        if known is not None:
            fmt, gain, baseline, units, adc_zero, adc_res = known
            return SignalSpec(file_name, fmt, gain, baseline, units, adc_zero, int(init), int(checksum),
                              lead.strip(), 1, 0, 0, adc_res, int(block))
    return _parse_signal_line_general(text, line_no, index, name)


def _parse_signal_line_general(text: str, line_no: int, index: int, name: str) -> SignalSpec:
    # The description (lead name) is the free text after the eighth field and may contain spaces.
    fields = text.split(maxsplit=8)
    if len(fields) < 2:
        raise RecordError(f"header line {line_no}: signal line needs a file name and a format: {name}")
    if fields[1].isdigit():  # the common bare "16": no regular expression needed
        fmt, spf, skew, offset = int(fields[1]), 1, 0, 0
    else:
        m = _FMT_RE.match(fields[1])
        if m is None:
            raise RecordError(f"header line {line_no}: unparsable format field {fields[1]!r}: {name}")
        fmt = int(m.group(1))
        spf, skew, offset = int(m.group(2) or 1), int(m.group(3) or 0), int(m.group(4) or 0)
    if fmt not in FORMAT_BITS:
        known = ", ".join(str(f) for f in sorted(FORMAT_BITS))
        raise RecordError(f"unknown or unsupported signal format {fmt} (supported: {known}): {name}")

    adc_res = _int(fields[3], "ADC resolution", line_no, name) if len(fields) > 3 else 0
    adc_zero = _int(fields[4], "ADC zero", line_no, name) if len(fields) > 4 else 0
    initial_value = _int(fields[5], "initial value", line_no, name) if len(fields) > 5 else None
    checksum = _int(fields[6], "checksum", line_no, name) if len(fields) > 6 else None
    block_size = _int(fields[7], "block size", line_no, name) if len(fields) > 7 else 0
    lead_name = fields[8].strip() if len(fields) > 8 else f"signal {index}"

    gain, baseline, units = _DEFAULT_GAIN, adc_zero, "mV"
    if len(fields) > 2:
        g = _GAIN_RE.match(fields[2])
        if g is None:
            raise RecordError(f"header line {line_no}: gain {fields[2]!r} is not a number: {name}")
        gain = float(g.group(1))
        if g.group(2) is not None:
            baseline = int(g.group(2))
        if g.group(3):
            units = g.group(3)
        # The WFDB spec reads gain 0 as "uncalibrated, assume 200"; for ECG that guess yields wrong
        # millivolts, so a zero (or non-finite) gain makes the record unusable instead.
        if gain == 0 or not math.isfinite(gain):
            raise RecordError(
                f"signal {index} ({lead_name}): gain {fields[2]!r} is zero or not finite: {name}"
            )
    return SignalSpec(
        file_name=fields[0],
        fmt=fmt,
        gain=gain,
        baseline=baseline,
        units=units,
        adc_zero=adc_zero,
        initial_value=initial_value,
        checksum=checksum,
        lead_name=lead_name,
        samples_per_frame=spf,
        skew=skew,
        byte_offset=offset,
        adc_res=adc_res,
        block_size=block_size,
    )


def parse_header(path: str | Path) -> Header:
    """Parse a single-segment WFDB header (``.hea``) without the wfdb package.

    Accepts CRLF line endings, ``# `` comments anywhere, missing optional fields (gain 200, baseline =
    ADC zero, units mV, fs 250 Hz), ``gain(baseline)/units``, ``fmtxspf:skew+offset`` and ``.mat`` file names.
    Raises `RecordError` for a missing, empty, binary or unparsable header.
    """
    path = os.fspath(path)  # a str, not a Path: pathlib costs more than parsing a line (once per record)
    try:
        raw = _read_bytes(path)
    except FileNotFoundError:
        raise RecordError(f"missing header: {path}") from None
    except OSError as exc:
        raise RecordError(f"unreadable header: {path}: {exc.strerror}") from None
    lines = _decode_header(raw, path)

    comments: list[str] = []
    record: tuple[str, int, float, int | None] | None = None
    signals: list[SignalSpec] = []
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            comments.append(text[1:].strip())
            continue
        if record is None:
            record = _parse_record_line(text.split(), line_no, path)
        elif len(signals) < record[1]:
            signals.append(_parse_signal_line(text, line_no, len(signals), path))
        else:
            raise RecordError(
                f"header line {line_no}: more signal lines than the {record[1]} declared: {path}"
            )
    if record is None:
        raise RecordError(f"header has no record line: {path}")
    record_name, n_signals, fs_hz, n_samples = record
    if len(signals) != n_signals:
        raise RecordError(f"header declares {n_signals} signals but has {len(signals)} signal lines: {path}")
    return Header(record_name, n_signals, fs_hz, n_samples, signals, comments, path)


# ---------------------------------------------------------------------------------------------- signal


def _decode(buf: np.ndarray, fmt: int, n_values: int) -> np.ndarray:
    """Raw bytes (uint8) -> the first ``n_values`` stored integers (frame-interleaved order; the plain 16- and
    32-bit formats as a view of ``buf``, the caller widens them to int64 in the same pass as it transposes)."""
    if fmt == 16:
        return buf[: 2 * n_values].view("<i2")
    if fmt == 61:
        return buf[: 2 * n_values].view(">i2")
    if fmt == 160:
        return buf[: 2 * n_values].view("<u2").astype(np.int64) - 32768
    if fmt == 32:
        return buf[: 4 * n_values].view("<i4")
    if fmt == 80:
        return buf[:n_values].astype(np.int64) - 128
    if fmt == 8:
        return buf[:n_values].view(np.int8).astype(np.int64)
    if fmt == 24:
        b = buf[: 3 * n_values].reshape(-1, 3).astype(np.int64)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return v - ((v & 0x800000) << 1)  # sign-extend 24 -> 64 bits
    if fmt == 212:
        # Each 3-byte group holds two 12-bit samples: s0 = b0 | (b1 & 0x0F) << 8, s1 = b2 | (b1 & 0xF0) << 4.
        n_bytes = (3 * n_values + 1) // 2
        b = buf[:n_bytes]
        if b.size % 3:
            b = np.concatenate([b, np.zeros(3 - b.size % 3, np.uint8)])
        b = b.reshape(-1, 3).astype(np.int64)
        out = np.empty(2 * b.shape[0], np.int64)
        out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        out = out[:n_values]
        return out - ((out & 0x800) << 1)  # sign-extend 12 -> 64 bits
    raise RecordError(f"unknown or unsupported signal format {fmt}")  # parse_header lets none through


_MAT4_ELEMENT_BYTES = {0: 8, 1: 4, 2: 4, 3: 2, 4: 2, 5: 1}  # MATLAB v4 "P" digit -> bytes per element


def _check_mat_length(path: Path) -> None:
    """Name a cut-short MATLAB v4 file as a truncated signal (scipy's message says neither what nor how much).

    A v4 file is a 20-byte header (type, rows, columns, imaginary flag, name length), the name, then the
    column-major matrix. Anything that does not look like a little-endian v4 header is left to scipy.
    """
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20:
        return
    mopt, rows, cols, imagf, namlen = (int(v) for v in np.frombuffer(head, "<i4"))
    if not (0 <= mopt < 100 and rows > 0 and cols > 0 and imagf == 0 and 0 < namlen < 64):
        return
    elem = _MAT4_ELEMENT_BYTES.get((mopt // 10) % 10)
    if elem is None:
        return
    body = path.stat().st_size - 20 - namlen
    if body < rows * cols * elem:
        raise RecordError(
            f"truncated signal: {max(body, 0) // (rows * elem)} of {cols} samples ({path.name})"
        )


def _read_mat(path: Path, n_signals: int) -> np.ndarray:
    """PhysioNet/CinC MATLAB v4 file -> ``(n_signals, T)`` int64 digital samples from variable ``val``."""
    import scipy.io  # deferred: only CinC-style records need it

    _check_mat_length(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except (
        scipy.io.matlab.MatReadError,
        ValueError,
        TypeError,
        OSError,
        EOFError,
        NotImplementedError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordError(f"unreadable .mat file {path.name}: {reason}") from None
    if "val" not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise RecordError(f".mat file {path.name} has no variable 'val' (has {names})")
    val = np.asarray(mat["val"])
    if val.ndim != 2 or val.shape[0] != n_signals:
        raise RecordError(
            f".mat variable 'val' has shape {val.shape}, expected ({n_signals}, T): {path.name}"
        )
    if not np.issubdtype(val.dtype, np.number) or np.iscomplexobj(val):
        raise RecordError(f".mat variable 'val' is not real numeric ({val.dtype}): {path.name}")
    if np.issubdtype(val.dtype, np.floating):
        finite = np.isfinite(val)
        if not finite.all():
            raise RecordError(f".mat variable 'val' holds {int((~finite).sum())} NaN/infinite samples: {path.name}")
        if not (val == np.round(val)).all():
            raise RecordError(f".mat variable 'val' holds non-integer samples: {path.name}")
    return val.astype(np.int64)


def _read_file(directory: str, specs: list[SignalSpec], n_samples: int | None) -> np.ndarray:
    """One signal file holding ``specs`` interleaved -> ``(len(specs), T)`` int64 digital samples."""
    first = specs[0]
    path = os.path.join(directory, first.file_name)
    n_sig = len(specs)
    name = os.path.basename(path)
    if name.lower().endswith(".mat"):
        if not os.path.isfile(path):
            raise RecordError(f"missing signal file: {path}")
        digital = _read_mat(Path(path), n_sig)
        n = digital.shape[1]
        if n_samples is not None and n < n_samples:
            raise RecordError(f"truncated signal: {n} of {n_samples} samples ({name})")
        if n_samples is not None and n != n_samples:
            raise RecordError(f"wrong sample count: {name} holds {n} samples, header says {n_samples}")
        return digital

    if any(s.fmt != first.fmt or s.byte_offset != first.byte_offset for s in specs):
        raise RecordError(f"signals in {name} disagree on format or byte offset")
    try:
        buf = np.frombuffer(_read_bytes(path, first.byte_offset), dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError):
        raise RecordError(f"missing signal file: {path}") from None
    except OSError as exc:
        raise RecordError(f"unreadable signal file: {path}: {exc.strerror}") from None
    bits = FORMAT_BITS[first.fmt]
    available = (buf.size * 8 // bits) // n_sig  # whole frames in the file
    if n_samples is None:
        n_samples = available
    elif available < n_samples:
        raise RecordError(f"truncated signal: {available} of {n_samples} samples ({name})")
    elif available > n_samples:
        raise RecordError(
            f"wrong sample count: {name} holds {available} samples, header says {n_samples}"
        )
    flat = _decode(buf, first.fmt, n_samples * n_sig)
    # Frames are interleaved (s0 s1 ... s(n-1) s0 s1 ...); contiguous rows make the per-signal sums and the
    # scaling in read_signal several times faster than over the strided transpose.
    digital = flat.reshape(n_samples, n_sig).T.astype(np.int64, order="C")
    if first.fmt == 8:  # first differences from each signal's initial value
        init = np.array([s.initial_value or 0 for s in specs], np.int64)[:, None]
        digital = np.cumsum(digital, axis=1) + init
    return digital


def read_signal(header: Header, directory: str | Path) -> np.ndarray:
    """Read the samples a header describes, in physical units.

    Args:
        header: from `parse_header`.
        directory: folder the header's signal file names are relative to.

    Returns:
        ``(n_signals, T)`` float32 in millivolts; WFDB invalid samples are NaN.

    Raises:
        RecordError: missing/truncated/over-long file, checksum mismatch, unsupported layout or units.
    """
    directory = os.fspath(directory)
    sigs = header.signals
    # Per-signal columns as comprehensions (a cache build runs this once per record; a loop of appends costs
    # more than the arithmetic on the samples).
    for i, s in enumerate(sigs):
        if s.samples_per_frame != 1 or s.skew != 0:
            raise RecordError(f"signal {i} ({s.lead_name}): multi-frequency or skewed signals are not supported")
    to_mv = {u: _TO_MV.get(u.strip().lower()) for u in {s.units for s in sigs}}
    if None in to_mv.values():
        i, s = next((i, s) for i, s in enumerate(sigs) if to_mv[s.units] is None)
        raise RecordError(f"signal {i} ({s.lead_name}): units {s.units!r} are not a voltage")
    files = [s.file_name for s in sigs]
    if files.count(files[0]) == len(files):
        groups = [sigs]
    else:  # signals sharing a file are consecutive (WFDB requires it), in order
        groups, start = [], 0
        for i in range(1, len(sigs) + 1):
            if i == len(sigs) or files[i] != files[start]:
                groups.append(sigs[start:i])
                start = i
    parts = [_read_file(directory, g, header.n_samples) for g in groups]
    lengths = {p.shape[1] for p in parts}
    if len(lengths) != 1:
        raise RecordError(f"wrong sample count: signal files hold {sorted(lengths)} samples")
    digital = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    declared = [s.checksum for s in sigs]
    sums = digital.sum(axis=1)
    wrong = (sums - np.array([c or 0 for c in declared], np.int64)) % 65536 != 0
    if None in declared:
        wrong &= np.array([c is not None for c in declared])
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        got = (int(sums[i]) + 32768) % 65536 - 32768
        raise RecordError(
            f"checksum mismatch in signal {i} ({sigs[i].lead_name}): header {declared[i]}, data {got}"
        )
    # Physical = (digital - baseline) / gain, in float64 like wfdb (multiplying by mV/gain differs by at
    # most an ulp of float64, far below float32 rounding), then float32. Scalars where every signal shares
    # them (the usual case), as broadcasting a column costs several times more.
    baseline = [s.baseline for s in sigs]
    scale = [to_mv[s.units] / s.gain for s in sigs]
    x = digital.astype(np.float64)
    if baseline.count(baseline[0]) != len(baseline):
        x -= np.array(baseline, np.float64)[:, None]
    elif baseline[0]:
        x -= baseline[0]
    x *= scale[0] if scale.count(scale[0]) == len(scale) else np.array(scale, np.float64)[:, None]
    out = x.astype(np.float32)
    # WFDB's invalid-sample value is the lowest its format can store, so one minimum rules it out for nearly
    # every record; only a record that reaches it is compared sample by sample.
    missing = [MISSING_VALUE.get(s.fmt) for s in sigs]
    lowest = max((m for m in missing if m is not None), default=None)
    if lowest is not None and digital.size and digital.min() <= lowest:
        has = np.array([m is not None for m in missing])[:, None]
        invalid = (digital == np.array([m or 0 for m in missing], np.int64)[:, None]) & has
        if invalid.any():
            out[invalid] = np.nan
    return out


def read_record(path_without_ext: str | Path) -> Signal:
    """Read a WFDB record (``path + ".hea"`` and its signal files) into a `Signal` in millivolts.

    Raises:
        RecordError: anything that makes the record unusable, including duplicated lead names.
    """
    base = str(path_without_ext)
    if base.endswith(".hea"):
        base = base[:-4]
    header = parse_header(base + ".hea")
    names = [n.strip() for n in header.lead_names]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RecordError(f"duplicated lead names {dupes}: {base}.hea")
    data = read_signal(header, os.path.dirname(base))
    return Signal(data=data, fs_hz=header.fs_hz, lead_names=names)
