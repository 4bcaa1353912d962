"""The writer side of a cache build: the spool of what each kept record stores besides its samples, and the HDF5
file (samples copied in from the readers' scratch files, then every column and attribute of `cache_layout`)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data import cache_layout as L
from ecgforge.data.cache import seal_metadata, str_array
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.record import RecordRef
from ecgforge.version import __version__

# The spool's columns besides the samples' place (`STORED`) and `L.PRESENT`: the `RecordRef` fields and the three
# standard meta keys, with the value a record without the key gets.
STORED = "stored"
_REF_LABELS = "labels"
_STANDARD_META = {L.SEX: "", L.FOLD: -1, L.AGE: np.nan}


class Spool:
    """What the cache stores of each kept record besides its samples, on disk in record order.

    The parent holds no object per record until the end (at 10^6 records a `RecordRef` each was gigabytes):
    records are appended here as their batches complete, ``PIECE`` at a time, each piece one pickle per column,
    so writing an HDF5 column reads back only that column, one piece at a time.
    """

    PIECE = 1024

    def __init__(self, path: str) -> None:
        self.file = open(path, "w+b")  # noqa: SIM115 - closed by `close`
        self.pieces: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (records, column -> (offset, nbytes))
        self.pending: list[tuple[RecordRef, np.ndarray, np.ndarray]] = []
        self.n = 0  # records appended
        self.total_rows = 0  # their samples per lead, summed
        # Extra meta column -> [records having it, int values, numeric values]: the column's type at the end.
        self.meta_stats: dict[str, list[int]] = {}

    def add(self, ref: RecordRef, stored: np.ndarray, present: np.ndarray) -> None:
        """Append a kept record: its listing, ``stored`` (4,) = (scratch file, offset, rows, crc), ``present``."""
        self.pending.append((ref, stored, present))
        self.n += 1
        self.total_rows += int(stored[2])
        if len(self.pending) >= self.PIECE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        refs = [r for r, _, _ in self.pending]
        cols: dict[str, Any] = {
            STORED: np.stack([s for _, s, _ in self.pending]),
            L.PRESENT: np.stack([p for _, _, p in self.pending]),
            L.RECORD_ID: [r.record_id for r in refs],
            L.PATIENT_ID: [r.patient_id for r in refs],
            L.SOURCE: [r.source for r in refs],
            L.SEX: [str(r.meta.get(L.SEX, _STANDARD_META[L.SEX])) for r in refs],
            L.FOLD: [int(r.meta.get(L.FOLD, _STANDARD_META[L.FOLD])) for r in refs],
            L.AGE: [float(r.meta.get(L.AGE, _STANDARD_META[L.AGE])) for r in refs],
            _REF_LABELS: [r.labels for r in refs],
        }
        for key in sorted({k for r in refs for k in r.meta} - set(_STANDARD_META)):
            values = [r.meta.get(key) for r in refs]
            stats = self.meta_stats.setdefault(key, [0, 0, 0])
            stats[0] += sum(v is not None for v in values)
            stats[1] += sum(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
            stats[2] += sum(isinstance(v, (int, float, np.number)) for v in values)
            cols[L.meta_column(key)] = values
        where: dict[str, tuple[int, int]] = {}
        self.file.seek(0, os.SEEK_END)
        for name, value in cols.items():
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            where[name] = (self.file.tell(), len(blob))
            self.file.write(blob)
        self.pieces.append((len(refs), where))
        self.pending.clear()

    def column(self, name: str) -> Iterator[Any]:
        """Column ``name`` piece by piece, in record order (a piece without it: ``None`` per record)."""
        self.flush()
        for k, where in self.pieces:
            if name not in where:
                yield [None] * k
                continue
            offset, nbytes = where[name]
            self.file.seek(offset)
            yield pickle.loads(self.file.read(nbytes))

    def meta_kind(self, key: str) -> str:
        """``"int"``, ``"float"`` or ``"str"``: int where every record has an int, float where every one a number."""
        have, ints, nums = self.meta_stats[key]
        if have == self.n and ints == self.n:
            return "int"
        return "float" if have == self.n and nums == self.n else "str"

    def close(self) -> None:
        self.file.close()


def write_cache(tmp: Path, fd: int, recipe: CacheRecipe, spool: Spool, scratch_paths: list[str],
                label_names: dict[str, list[str]], skipped: list[tuple[str, str]], clipped: int) -> None:
    """Write the HDF5 cache into ``tmp`` (``fd``: a descriptor of the same file): the samples copied from the
    readers' ``scratch_paths`` (unlinked once copied), then the metadata, sealed last; flushed to disk."""
    n, n_leads = spool.n, len(recipe.signal.leads)
    with h5py.File(tmp, "w") as h5, ThreadPoolExecutor(1) as flusher:
        small_metadata_cache(h5)
        h5.attrs.update({
            L.ATTR_LAYOUT_VERSION: L.LAYOUT_VERSION,
            L.ATTR_SPEC_HASH: recipe.spec_hash(),
            L.ATTR_SPEC: recipe.model_dump_json(),
            L.ATTR_FS_HZ: float(recipe.signal.fs_hz),
            L.ATTR_LEADS: json.dumps(recipe.signal.leads),
            L.ATTR_UNITS: L.UNITS,
            L.ATTR_SCALE_MV: L.SCALE_MV,
            L.ATTR_VERSION: __version__,
            L.ATTR_N_RECORDS: n,
            L.ATTR_SOURCE_KIND: recipe.source.kind,
            L.ATTR_NAME: recipe.name,
            L.ATTR_N_SKIPPED: len(skipped),
            L.ATTR_CLIPPED: clipped,
        })
        # The samples' place in the file is fixed now. The kernel copies them there from the scratch files
        # (HDF5 never writes that range: no fill values), then a thread flushes them to disk while HDF5
        # writes the metadata, and the scratch files' pages are freed.
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dset = h5.create_dataset(L.SIGNALS, shape=(spool.total_rows, n_leads), dtype="<i2", dcpl=dcpl,
                                 fill_time="never")
        gather(scratch_paths, spool.column(STORED), fd, dset.id.get_offset(), n_leads * 2)
        flushed = flusher.submit(os.fsync, fd)
        unlink(scratch_paths)

        def offsets() -> Iterator[np.ndarray]:
            end = 0
            for piece in spool.column(STORED):
                starts = end + np.concatenate([[0], np.cumsum(piece[:, 2])[:-1]])
                end += int(piece[:, 2].sum())
                yield starts.astype(np.int64)

        write_column(h5, L.OFFSETS, (n,), np.int64, offsets())
        write_column(h5, L.LENGTHS, (n,), np.int64, (p[:, 2] for p in spool.column(STORED)))
        write_column(h5, L.PRESENT, (n, n_leads), bool, spool.column(L.PRESENT))
        write_column(h5, L.CHECKSUM, (n,), np.uint32, (p[:, 3].astype(np.uint32) for p in spool.column(STORED)))
        write_columns(h5, spool, label_names)
        h5[L.SKIPPED_RECORD_ID] = str_array([rid for rid, _ in skipped])
        h5[L.SKIPPED_REASON] = str_array([reason for _, reason in skipped])
        # Last: the CRC of every part written above, read back as a reader will see it.
        seal_metadata(h5)
        flushed.result()


def unlink(paths: Iterable[str]) -> None:
    """Remove ``paths``, those already gone aside."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def copy_range(src: int, dst: int, dst_offset: int, nbytes: int, src_offset: int = 0) -> None:
    """Copy ``nbytes`` of file ``src`` from ``src_offset`` to ``dst`` at ``dst_offset`` (file descriptors).

    ``os.copy_file_range`` keeps the bytes in the kernel (no user-space round trip of the whole cache);
    where the file system refuses it, 4 MiB blocks are read and written instead.
    """
    done = 0
    try:
        while done < nbytes:
            n = os.copy_file_range(src, dst, nbytes - done, src_offset + done, dst_offset + done)
            if n == 0:
                raise OSError(f"scratch file ended after {done} of {nbytes} bytes")
            done += n
    except OSError as exc:
        if exc.errno is None:
            raise
        while done < nbytes:  # EXDEV, ENOSYS, EINVAL...: the portable way, from where it stopped
            chunk = os.pread(src, min(1 << 22, nbytes - done), src_offset + done)
            if not chunk:
                raise OSError(f"scratch file ended after {done} of {nbytes} bytes") from None
            done += os.pwrite(dst, chunk, dst_offset + done)


def gather(scratch_paths: list[str], stored: Iterable[np.ndarray], dst: int, dst_offset: int, row_bytes: int) -> None:
    """Copy each record's samples from the scratch files into ``dst`` at ``dst_offset``, back to back in the
    order of ``stored`` (pieces of ``(k, 4)`` rows ``(file, offset, rows, crc)``, one per record); adjacent
    ranges of one file are copied in one go (a worker's chunk of consecutive records is contiguous in its file)."""
    fds = [os.open(path, os.O_RDONLY) for path in scratch_paths]
    try:
        pos, run = dst_offset, None  # run: [file, start, nbytes, destination] being extended
        for piece in stored:
            for number, offset, rows, _ in piece.tolist():
                nbytes = rows * row_bytes
                if run is not None and run[0] == number and run[1] + run[2] == offset:
                    run[2] += nbytes
                else:
                    if run is not None:
                        copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
                    run = [number, offset, nbytes, pos]
                pos += nbytes
        if run is not None:
            copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
    finally:
        for fd in fds:
            os.close(fd)


def small_metadata_cache(h5: h5py.File, max_bytes: int = 1 << 20) -> None:
    """Cap HDF5's metadata cache of ``h5`` (default: adaptive up to 32 MiB). Writing variable-length strings
    fills it with global heap collections, which made the building process's peak grow with the record count
    (by ~8 MiB from 10,000 to 200,000 records); the file written is the same."""
    config = h5.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = config.min_size = max_bytes
    config.max_size = max_bytes
    h5.id.set_mdc_config(config)


def write_column(h5: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, pieces: Iterable[Any]) -> None:
    """Dataset ``name`` of ``shape`` written piece by piece (each piece an array of ``dtype``); a single piece
    is written whole, as one assignment (the bytes of a small cache do not depend on the spool)."""
    it = iter(pieces)
    first = next(it)
    second = next(it, None)
    if second is None:
        h5[name] = np.asarray(first, dtype=dtype) if dtype is not h5py.string_dtype("utf-8") else first
        return
    dset = h5.create_dataset(name, shape=shape, dtype=dtype)
    start = 0
    for piece in itertools.chain([first, second], it):
        if getattr(piece, "size", 1):  # an empty selection (a label set without labels) writes nothing
            dset[start : start + len(piece)] = piece
        start += len(piece)


def write_columns(h5: h5py.File, spool: Spool, label_names: dict[str, list[str]]) -> None:
    """What the source knows of each stored record: ids, sex, fold, age, ``meta/*`` and ``labels/*``, written
    one column at a time from the spool (the same bytes as whole arrays where the cache fits in one piece)."""
    n, strs = spool.n, h5py.string_dtype("utf-8")
    for name in L.STRING_COLUMNS:
        write_column(h5, name, (n,), strs, (str_array(p) for p in spool.column(name)))
    write_column(h5, L.FOLD, (n,), np.int64, (np.array(p, dtype=np.int64) for p in spool.column(L.FOLD)))
    write_column(h5, L.AGE, (n,), np.float64, (np.array(p, dtype=np.float64) for p in spool.column(L.AGE)))
    meta = h5.create_group(L.META)
    for col in sorted(spool.meta_stats):
        pieces = spool.column(L.meta_column(col))
        kind = spool.meta_kind(col)
        if kind == "int":
            write_column(meta, col, (n,), np.int64, (np.array(p, dtype=np.int64) for p in pieces))
        elif kind == "float":
            write_column(meta, col, (n,), np.float64, (np.array(p, dtype=np.float64) for p in pieces))
        else:
            write_column(meta, col, (n,), strs, (str_array(["" if v is None else str(v) for v in p]) for p in pieces))
    labels = h5.create_group(L.LABELS)
    for set_name, names in label_names.items():
        col = {name: j for j, name in enumerate(names)}

        def multi_hot(piece: list[dict[str, list[str]]], set_name: str = set_name,
                      col: dict[str, int] = col) -> np.ndarray:
            mat = np.zeros((len(piece), len(col)), dtype=np.uint8)
            for row, labs in enumerate(piece):
                for lab in labs.get(set_name, []):
                    if lab in col:
                        mat[row, col[lab]] = 1
            return mat

        write_column(labels, set_name, (n, len(names)), np.uint8, (multi_hot(p) for p in spool.column(_REF_LABELS)))
        labels[set_name].attrs[L.LABEL_NAMES] = json.dumps(list(names))
