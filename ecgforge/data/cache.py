"""Reading HDF5 dataset caches: windows fast and in constant memory (``cache_build`` writes them).

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
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.errors import UserError

LAYOUT_VERSION = 1
SCALE_MV = 0.001  # int16 steps of 1 uV: +-32.767 mV covers any ECG; finer than any ADC in these datasets


class CacheError(UserError):
    """A cache file that cannot be used (missing, not a cache, wrong layout); one line."""


def str_array(values: Sequence[str]) -> np.ndarray:
    """UTF-8 strings as an HDF5 variable-length string array (what caches and embedding files store)."""
    return np.array([v.encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8"))


def strings(ds: h5py.Dataset) -> np.ndarray:
    """An HDF5 string dataset as an object array of ``str``."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ds[()]], dtype=object)


class Cache:
    """Read-only view of a cache: metadata in memory, signals read per window.

    Safe to use from DataLoader workers: each process reads through a descriptor of its own, of the very file
    the metadata came from (a cache rebuilt at the same path meanwhile is refused, not mixed in).
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
        self._data: np.ndarray | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        with h5:
            if "layout_version" not in h5.attrs or "signals" not in h5:
                raise CacheError(f"{self.path}: not an ecgforge cache (no layout_version / signals)")
            if int(h5.attrs["layout_version"]) != LAYOUT_VERSION:
                raise CacheError(f"{self.path}: layout_version {h5.attrs['layout_version']}, this ecgforge reads {LAYOUT_VERSION}")
            # The descriptor that later reads go through: HDF5's own, duplicated, so both are the same file.
            self._fd, self._pid = os.dup(h5.id.get_vfd_handle()), os.getpid()
            st = os.fstat(self._fd)
            self._identity = (st.st_dev, st.st_ino)
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
            self.record_id = strings(h5["record_id"])
            self.patient_id = strings(h5["patient_id"])
            self.source = strings(h5["source"])
            self.sex = strings(h5["sex"])
            self.fold = h5["fold"][()]
            self.age = h5["age"][()]
            self.meta = {k: (strings(v) if v.dtype.kind in "OS" else v[()]) for k, v in h5["meta"].items()}
            self.labels = {k: v[()] for k, v in h5["labels"].items()}
            self.label_names = {k: json.loads(v.attrs["names"]) for k, v in h5["labels"].items()}
            self.skipped = list(zip(strings(h5["skipped/record_id"]), strings(h5["skipped/reason"]), strict=True))
            sig = h5["signals"]
            self.n_leads = int(sig.shape[1])
            self._offset = sig.id.get_offset()  # byte offset of the contiguous dataset; None if empty
            if in_memory:
                self._data = sig[()]
                self.close()

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

    def _descriptor(self) -> int:
        """This process's descriptor of the cache file. In another process (a DataLoader worker, forked or
        spawned) the path is opened again, and must still be the file the metadata came from."""
        if self._fd is None or self._pid != os.getpid():
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                raise CacheError(f"{self.path}: the cache was removed after it was opened") from None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._identity:
                os.close(fd)
                raise CacheError(f"{self.path}: the cache was replaced (rebuilt?) after it was opened; open it again")
            self._fd, self._pid = fd, os.getpid()
        return self._fd

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
            nbytes = length * self.n_leads * 2
            buf = os.pread(self._descriptor(), nbytes, self._offset + row * self.n_leads * 2)
            if len(buf) != nbytes:
                raise CacheError(f"{self.path}: truncated (record {self.record_id[i]})")
            q = np.frombuffer(buf, dtype=np.int16).reshape(length, self.n_leads)
        return q.T.astype(np.float32) * np.float32(self.scale_mv)

    def read_windows(self, records: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Many windows at once: ``(B, n_leads, length)`` float32 mV, window b = ``read(records[b], starts[b], length)``.

        One ``pread`` per window and a single conversion for the batch: a training batch costs a few
        microseconds per window instead of a Python-level read, conversion and tensor per window.
        """
        records, starts = np.asarray(records, np.int64), np.asarray(starts, np.int64)
        if len(records) and ((starts < 0).any() or (starts + length > self.lengths[records]).any()):
            b = int(np.flatnonzero((starts < 0) | (starts + length > self.lengths[records]))[0])
            raise IndexError(f"window [{starts[b]}, {starts[b] + length}) outside record {self.record_id[records[b]]} "
                             f"of {self.lengths[records[b]]} samples")
        rows = self.offsets[records] + starts
        if self._data is not None:
            q = self._data[rows[:, None] + np.arange(length)]  # (B, length, n_leads)
        else:
            fd = self._descriptor()
            q = np.empty((len(rows), length, self.n_leads), np.int16)
            buf = memoryview(q.reshape(-1).view(np.uint8))  # pread straight into the batch, no copies
            nbytes = length * self.n_leads * 2
            for b, r in enumerate(rows.tolist()):
                if os.preadv(fd, [buf[b * nbytes : (b + 1) * nbytes]], self._offset + r * self.n_leads * 2) != nbytes:
                    raise CacheError(f"{self.path}: truncated (record {self.record_id[records[b]]})")
        # Conversion, scaling and the (time, leads) -> (leads, time) transpose in one pass.
        out = np.empty((len(rows), self.n_leads, length), np.float32)
        np.multiply(q.transpose(0, 2, 1), np.float32(self.scale_mv), out=out, dtype=np.float32)
        return out

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
