"""HDF5 dataset caches: build from a source once, read windows from it fast and in constant memory.

Layout (``LAYOUT_VERSION`` 1)::

    attrs: layout_version, spec_hash, spec (the cache recipe as JSON), fs_hz, leads, units="mV",
           scale_mv (mV per stored integer step), ecgforge_version, n_records, source_kind
    signals            (total_samples, n_leads) int16, contiguous, uncompressed; record i is rows
                       offsets[i] : offsets[i] + lengths[i]
    offsets, lengths   (N,) int64, in samples at fs_hz
    present            (N, n_leads) bool: the lead existed in the record (absent leads are stored as 0)
    checksum           (N,) uint32: CRC32 of the record's stored bytes (for `cache verify`)
    record_id, patient_id, source, sex   (N,) strings
    fold (N,) int64, age (N,) float64 (NaN unknown), meta/<column> extra scalar columns
    labels/<set>       (N, C) uint8 multi-hot, attrs["names"] = the C label names
    skipped/record_id, skipped/reason    records that could not be used, and why

Why time-major and contiguous rather than (leads, time) chunks: a training window is then one contiguous
byte range, read with a single ``os.pread`` (no HDF5 chunk lookups, no page mapping that grows the
process's memory), which is what lets the loader match a raw memmap's speed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from scipy import signal as sps

import ecgforge
from ecgforge.data.leads import CANONICAL_LEADS, canonicalize
from ecgforge.data.record import RecordError, RecordRef
from ecgforge.data.wfdb_io import read_record
from ecgforge.errors import UserError

if TYPE_CHECKING:  # recipe.py imports the data layer; the cache needs the schema only for type hints
    from ecgforge.recipe import CacheRecipe, FilterConfig

LAYOUT_VERSION = 1
SCALE_MV = 0.001  # int16 steps of 1 uV: +-32.767 mV covers any ECG; finer than any ADC in these datasets
_INT16_MAX = 32767


class CacheError(UserError):
    """A cache file that cannot be used (missing, not a cache, wrong layout); one line."""


# ------------------------------------------------------------------------------------ preprocessing


def preprocess(data: np.ndarray, fs_in: float, fs_out: float, filt: FilterConfig) -> np.ndarray:
    """Filter (zero-phase Butterworth / notch at the input rate) then resample polyphase.

    Args:
        data: ``(leads, T)`` float32, mV.
    Returns:
        ``(leads, T')`` float32 with ``T' = round(T * fs_out / fs_in)``.
    """
    x = data.astype(np.float64, copy=False)
    nyq = fs_in / 2
    if filt.highpass_hz or filt.lowpass_hz:
        lo = filt.highpass_hz
        hi = filt.lowpass_hz if filt.lowpass_hz and filt.lowpass_hz < nyq else None
        if lo and hi:
            sos = sps.butter(filt.order, [lo, hi], btype="bandpass", fs=fs_in, output="sos")
        elif lo:
            sos = sps.butter(filt.order, lo, btype="highpass", fs=fs_in, output="sos")
        else:
            sos = sps.butter(filt.order, hi, btype="lowpass", fs=fs_in, output="sos") if hi else None
        if sos is not None and x.shape[-1] > 3 * (2 * len(sos) + 1):
            x = sps.sosfiltfilt(sos, x, axis=-1)
    if filt.notch_hz and filt.notch_hz < nyq:
        b, a = sps.iirnotch(filt.notch_hz, Q=30.0, fs=fs_in)
        if x.shape[-1] > 3 * max(len(a), len(b)):
            x = sps.filtfilt(b, a, x, axis=-1)
    if abs(fs_in - fs_out) > 1e-6:
        ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
        x = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    return x.astype(np.float32)


@dataclass
class Processed:
    """One record ready to store, or the reason it was skipped."""

    index: int
    signal: np.ndarray | None = None  # (T, n_leads) int16
    present: np.ndarray | None = None  # (n_leads,) bool
    reason: str = ""
    clipped: int = 0


def process_record(index: int, ref: RecordRef, recipe: CacheRecipe) -> Processed:
    """Read, check, canonicalise, filter, resample and quantise one record. Never raises for bad data."""
    sig = recipe.signal
    try:
        raw = read_record(ref.path)
        if raw.data.ndim != 2 or raw.data.shape[1] == 0:
            raise RecordError("empty signal")
        data12, present12 = canonicalize(raw)
        if not np.isfinite(data12).all():
            bad = int((~np.isfinite(data12)).sum())
            raise RecordError(f"{bad} NaN/infinite samples")
        pick = [CANONICAL_LEADS.index(lead) for lead in sig.leads]
        data, present = data12[pick], present12[pick]
        if not present.any():
            raise RecordError(f"none of the leads {sig.leads} is in the record")
        if np.ptp(data[present], axis=-1).max() < 1e-4:
            raise RecordError("flat line: every lead is constant")
        duration = data.shape[1] / raw.fs_hz
        if duration < sig.min_duration_s:
            raise RecordError(f"too short: {duration:.2f} s < min_duration_s {sig.min_duration_s}")
        if sig.max_duration_s is not None and duration > sig.max_duration_s:
            data = data[:, : int(round(sig.max_duration_s * raw.fs_hz))]
        out = preprocess(data, raw.fs_hz, sig.fs_hz, sig.filter)
        out[~present] = 0.0
        q = np.rint(out / SCALE_MV)
        clipped = int((np.abs(q) > _INT16_MAX).sum())
        q = np.clip(q, -_INT16_MAX, _INT16_MAX).astype(np.int16)
        return Processed(index, np.ascontiguousarray(q.T), present, clipped=clipped)
    except RecordError as exc:
        return Processed(index, reason=str(exc))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
        # A reader bug or an odd file must not end a build of 800,000 records: report it as the reason.
        return Processed(index, reason=f"{type(exc).__name__}: {exc}".splitlines()[0])


# Worker-process state, set once per worker by the pool initializer (avoids pickling refs per task).
_WORKER: dict[str, Any] = {}


def _init_worker(refs: Sequence[RecordRef], recipe: CacheRecipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tears the pool down
    _WORKER["refs"], _WORKER["recipe"] = refs, recipe


def _work(indices: list[int]) -> list[Processed]:
    return [process_record(i, _WORKER["refs"][i], _WORKER["recipe"]) for i in indices]


class _DeferredInterrupt:
    """While a reader pool runs, Ctrl-C sets a flag instead of raising wherever the main thread happens to be.

    A KeyboardInterrupt raised inside the pool's own code (an at-fork hook while workers start, or with a pool
    lock held) is swallowed ("Exception ignored") or leaves the pool unable to shut down, and the build then
    ignores the Ctrl-C or hangs. The flag is checked between results, where raising is safe; a second Ctrl-C
    raises at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def results(self, it: Any, n_chunks: int) -> Iterator[Processed]:
        """The results of a pool's ``imap_unordered`` over chunks, raising KeyboardInterrupt between them once
        Ctrl-C was pressed."""
        for _ in range(n_chunks):
            while True:
                if self.set:
                    raise KeyboardInterrupt
                try:
                    chunk = it.next(timeout=0.2)
                except mp.TimeoutError:
                    continue
                yield from chunk
                break


# ------------------------------------------------------------------------------------------- building


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def _remove_stale_scratch(out: Path) -> None:
    """Delete scratch files beside ``out`` left by builds on this host whose process is gone (SIGKILL, SIGTERM,
    power loss): a killed build of a large dataset would otherwise leave gigabytes behind at every attempt."""
    prefix = f".{out.name}.{_host()}."
    for p in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if p.suffix in (".building", ".samples") and pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class BuildSummary:
    path: Path
    n_records: int
    n_skipped: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_samples: int = 0
    seconds: float = 0.0


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8"))


def build_cache(
    recipe: CacheRecipe,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    progress: Any | None = None,
) -> BuildSummary:
    """Build the cache a cache recipe describes; atomic (temporary file renamed into place at the end).

    Args:
        recipe: validated cache recipe.
        out: output path (default ``recipe.out``).
        workers: reader processes (default: ``recipe.workers`` or the CPU count); 1 reads in-process.
        progress: optional callable ``progress(done, total)`` called as records complete.
    """
    import time

    from ecgforge.registry import build

    t0 = time.perf_counter()
    out = Path(out or recipe.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = build(recipe.source)
    try:
        refs = source.records()
        label_names = source.label_names()
    except (OSError, ValueError) as exc:  # sources name the recipe field: "source.labels_csv: x.csv not found"
        raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    n = len(refs)
    n_leads = len(recipe.signal.leads)
    workers = workers or recipe.workers or os.cpu_count() or 1
    workers = max(1, min(workers, n or 1))

    _remove_stale_scratch(out)
    scratch = f".{out.name}.{_host()}.{os.getpid()}."  # whose they are, for _remove_stale_scratch
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".building")
    os.close(fd)
    raw_fd, raw_name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".samples")
    tmp, raw_path = Path(tmp_name), Path(raw_name)
    try:
        # Pass 1: process records (in parallel), append their samples to a raw scratch file in order.
        results: dict[int, Processed] = {}
        lengths = np.zeros(n, dtype=np.int64)
        present = np.zeros((n, n_leads), dtype=bool)
        checksums = np.zeros(n, dtype=np.uint32)
        ok = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        clipped = 0
        next_to_write = 0
        with os.fdopen(raw_fd, "wb") as raw:

            def drain() -> None:
                nonlocal next_to_write, clipped
                while next_to_write in results:
                    p = results.pop(next_to_write)
                    if p.signal is not None:
                        buf = p.signal.tobytes()
                        raw.write(buf)
                        lengths[p.index] = p.signal.shape[0]
                        present[p.index] = p.present
                        checksums[p.index] = zlib.crc32(buf)
                        ok[p.index] = True
                        clipped += p.clipped
                    else:
                        reasons[p.index] = p.reason
                    next_to_write += 1

            def consume(stream: Iterator[Processed]) -> None:
                for done, p in enumerate(stream, 1):
                    results[p.index] = p
                    drain()
                    if progress is not None:
                        progress(done, n)

            if workers == 1:
                consume(process_record(i, r, recipe) for i, r in enumerate(refs))
            else:
                ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
                with _DeferredInterrupt() as ctrl_c, ctx.Pool(workers, initializer=_init_worker,
                                                              initargs=(refs, recipe)) as pool:
                    size = max(1, min(64, n // (workers * 8) or 1))
                    chunks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
                    consume(ctrl_c.results(pool.imap_unordered(_work, chunks), len(chunks)))

        # Pass 2: the HDF5 file, with the signals as one contiguous dataset of known size.
        keep = np.flatnonzero(ok)
        offsets = np.zeros(len(keep), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths[keep])[:-1]
        total = int(lengths[keep].sum())
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(
                layout_version=LAYOUT_VERSION,
                spec_hash=recipe.spec_hash(),
                spec=recipe.model_dump_json(),
                fs_hz=float(recipe.signal.fs_hz),
                leads=json.dumps(recipe.signal.leads),
                units="mV",
                scale_mv=SCALE_MV,
                ecgforge_version=ecgforge.__version__,
                n_records=len(keep),
                source_kind=recipe.source.kind,
                name=recipe.name,
            )
            dset = h5.create_dataset("signals", shape=(total, n_leads), dtype=np.int16)
            block = 1 << 22  # copy 4M samples at a time: constant memory whatever the cache size
            with open(raw_path, "rb") as raw:
                for start in range(0, total, block):
                    rows = min(block, total - start)
                    dset[start : start + rows] = np.frombuffer(raw.read(rows * n_leads * 2), np.int16).reshape(rows, n_leads)
            kept_refs = [refs[i] for i in keep]
            h5["offsets"], h5["lengths"] = offsets, lengths[keep]
            h5["present"], h5["checksum"] = present[keep], checksums[keep]
            h5["record_id"] = _str_array([r.record_id for r in kept_refs])
            h5["patient_id"] = _str_array([r.patient_id for r in kept_refs])
            h5["source"] = _str_array([r.source for r in kept_refs])
            h5["sex"] = _str_array([str(r.meta.get("sex", "")) for r in kept_refs])
            h5["fold"] = np.array([int(r.meta.get("fold", -1)) for r in kept_refs], dtype=np.int64)
            h5["age"] = np.array([float(r.meta.get("age", np.nan)) for r in kept_refs], dtype=np.float64)
            extra = sorted({k for r in kept_refs for k in r.meta} - {"sex", "fold", "age"})
            meta = h5.create_group("meta")
            for col in extra:
                values = [r.meta.get(col) for r in kept_refs]
                if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
                    meta[col] = np.array(values, dtype=np.int64)
                elif all(isinstance(v, (int, float, np.number)) for v in values):
                    meta[col] = np.array(values, dtype=np.float64)
                else:
                    meta[col] = _str_array(["" if v is None else str(v) for v in values])
            labels = h5.create_group("labels")
            for set_name, names in label_names.items():
                col = {name: j for j, name in enumerate(names)}
                mat = np.zeros((len(keep), len(names)), dtype=np.uint8)
                for row, r in enumerate(kept_refs):
                    for lab in r.labels.get(set_name, []):
                        if lab in col:
                            mat[row, col[lab]] = 1
                labels[set_name] = mat
                labels[set_name].attrs["names"] = json.dumps(list(names))
            skipped = sorted(reasons.items())
            h5["skipped/record_id"] = _str_array([refs[i].record_id for i, _ in skipped])
            h5["skipped/reason"] = _str_array([reason for _, reason in skipped])
            h5.attrs["n_skipped"] = len(skipped)
            h5.attrs["clipped_samples"] = clipped
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            raw_path.unlink()
    return BuildSummary(
        path=out,
        n_records=len(keep),
        n_skipped=len(reasons),
        skipped=[(refs[i].record_id, reason) for i, reason in sorted(reasons.items())],
        clipped_samples=clipped,
        seconds=time.perf_counter() - t0,
    )


# -------------------------------------------------------------------------------------------- reading


def _strings(ds: h5py.Dataset) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ds[()]], dtype=object)


class Cache:
    """Read-only view of a cache: metadata in memory, signals read per window.

    Safe to use from DataLoader workers: the signal file descriptor is opened lazily in each process.
    With ``in_memory=True`` the whole signal array is loaded once (fast for caches that fit in RAM).
    """

    def __init__(self, path: str | Path, in_memory: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such cache file (build it with `ecgforge cache build`)")
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(f"{self.path}: not an HDF5 file ({exc})") from None
        with h5:
            if "layout_version" not in h5.attrs or "signals" not in h5:
                raise CacheError(f"{self.path}: not an ecgforge cache (no layout_version / signals)")
            if int(h5.attrs["layout_version"]) != LAYOUT_VERSION:
                raise CacheError(f"{self.path}: layout_version {h5.attrs['layout_version']}, this ecgforge reads {LAYOUT_VERSION}")
            a = h5.attrs
            self.spec_hash = str(a["spec_hash"])
            self.spec = json.loads(a["spec"])
            self.fs_hz = float(a["fs_hz"])
            self.leads: list[str] = json.loads(a["leads"])
            self.scale_mv = float(a["scale_mv"])
            self.name = str(a.get("name", self.path.stem))
            self.offsets = h5["offsets"][()]
            self.lengths = h5["lengths"][()]
            self.present = h5["present"][()]
            self.checksum = h5["checksum"][()]
            self.record_id = _strings(h5["record_id"])
            self.patient_id = _strings(h5["patient_id"])
            self.source = _strings(h5["source"])
            self.sex = _strings(h5["sex"])
            self.fold = h5["fold"][()]
            self.age = h5["age"][()]
            self.meta = {k: (_strings(v) if v.dtype.kind in "OS" else v[()]) for k, v in h5["meta"].items()}
            self.labels = {k: v[()] for k, v in h5["labels"].items()}
            self.label_names = {k: json.loads(v.attrs["names"]) for k, v in h5["labels"].items()}
            self.skipped = list(zip(_strings(h5["skipped/record_id"]), _strings(h5["skipped/reason"]), strict=True))
            sig = h5["signals"]
            self.n_leads = int(sig.shape[1])
            self._offset = sig.id.get_offset()  # byte offset of the contiguous dataset; None if empty
        self._data: np.ndarray | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        if in_memory:
            with h5py.File(self.path, "r") as h5:
                self._data = h5["signals"][()]

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None  # each process opens its own descriptor
        return state

    def column(self, name: str) -> np.ndarray:
        """A per-record metadata column by name (``fold``/``strat_fold``, ``source``, ``patient_id``, ...)."""
        name = "fold" if name == "strat_fold" else name
        if name in ("fold", "age", "sex", "source", "patient_id", "record_id"):
            return getattr(self, name)
        if name in self.meta:
            return self.meta[name]
        raise KeyError(name)

    def columns(self) -> list[str]:
        return ["fold", "age", "sex", "source", "patient_id", "record_id", *sorted(self.meta)]

    def read(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples ``[start, start + length)`` of record ``i`` as ``(n_leads, length)`` float32 mV."""
        rec_len = int(self.lengths[i])
        length = rec_len - start if length is None else length
        if start < 0 or start + length > rec_len:
            raise IndexError(f"window [{start}, {start + length}) outside record {self.record_id[i]} of {rec_len} samples")
        row = int(self.offsets[i]) + start
        if self._data is not None:
            q = self._data[row : row + length]
        else:
            if self._fd is None or self._pid != os.getpid():
                self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
            nbytes = length * self.n_leads * 2
            buf = os.pread(self._fd, nbytes, self._offset + row * self.n_leads * 2)
            if len(buf) != nbytes:
                raise CacheError(f"{self.path}: truncated (record {self.record_id[i]})")
            q = np.frombuffer(buf, dtype=np.int16).reshape(length, self.n_leads)
        return q.T.astype(np.float32) * np.float32(self.scale_mv)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


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
    from ecgforge.recipe import CacheRecipe

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
