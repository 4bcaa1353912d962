"""Reading HDF5 dataset caches: windows fast and in constant memory (``cache_writer`` writes them).

The layout, and every name in it, is in `ecgforge.data.cache_layout`.

Why time-major and contiguous rather than (leads, time) chunks: a training window is then one contiguous
byte range, read with a single ``os.pread`` (no HDF5 chunk lookups, no page mapping that grows the
process's memory), which is what lets the loader match a raw memmap's speed.

Integrity: the metadata is checked against ``metadata_crc32`` when a cache is opened (it is read whole
anyway), and a record's samples against ``checksum`` the first time a process reads from that record (a
bitmap of checked records: one CRC per record per process, not one per window).
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data import cache_layout as L
from ecgforge.data.cache_layout import INTEGRITY_ATTR, LAYOUT_VERSION, READABLE_LAYOUTS, SCALE_MV
from ecgforge.errors import UserError, resolved_against

__all__ = ["LAYOUT_VERSION", "SCALE_MV", "INTEGRITY_ATTR", "Cache", "CacheError", "CacheDamaged", "seal_metadata",
           "str_array", "strings", "decoded"]


class CacheError(UserError):
    """A cache file that cannot be used (missing, not a cache, wrong layout); one line."""


class CacheDamaged(CacheError):
    """A cache whose bytes no longer match their checksums (a damaged disk, a partial copy, an edit)."""


def _rebuild_hint(path: Path) -> str:
    return f"`ecgforge cache verify {path}` lists every damaged part; rebuild the cache with `ecgforge cache build`"


def _crc_of(value: Any) -> int:
    """CRC32 of an attribute or dataset value as h5py reads it: its type, shape and bytes (strings length-prefixed,
    so that ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    if isinstance(value, str):
        return zlib.crc32(b"str:" + value.encode("utf-8", "surrogateescape"))  # damaged bytes: h5py decodes them
    if isinstance(value, bytes):
        return zlib.crc32(b"bytes:" + value)
    a = np.asarray(value)
    crc = zlib.crc32(f"{a.dtype.kind}{a.dtype.itemsize}{a.shape}:".encode())
    if a.dtype.kind == "O":  # variable-length strings: bytes (or str) objects
        for v in a.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
            crc = zlib.crc32(b, zlib.crc32(len(b).to_bytes(8, "little"), crc))
        return crc
    return zlib.crc32(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes(), crc)


def describe_part(part: str) -> str:
    """``"@spec"`` -> ``attribute 'spec'``; ``"labels/x@names"`` -> ``attribute 'names' of labels/x``;
    ``"fold"`` -> ``metadata dataset 'fold'``."""
    where, attr = L.split_part(part)
    if not attr:
        return f"metadata dataset {where!r}"
    return f"attribute {attr!r}" + (f" of {where}" if where else "")


def read_metadata(h5: h5py.File) -> tuple[dict[str, Any], dict[str, str]]:
    """Every part of a cache but the samples, as h5py reads it: ``({part: value}, {part: why unreadable})``.

    Parts are named as in ``metadata_crc32``: ``"@attr"`` (file attributes), ``"path"`` (datasets),
    ``"path@attr"`` (dataset attributes).
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def get(part: str, read: Any) -> None:
        try:
            values[part] = read()
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # h5py's errors for bad bytes
            errors[part] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def attrs(prefix: str, obj: h5py.HLObject) -> None:
        try:
            names = sorted(obj.attrs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            errors[f"{prefix}@*"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return
        for k in names:
            if not (prefix == "" and k == INTEGRITY_ATTR):
                get(L.part(prefix, k), lambda k=k: obj.attrs[k])

    attrs("", h5)
    datasets: list[str] = []
    try:
        h5.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        errors["/"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    for name in sorted(datasets):
        if name != L.SIGNALS:
            get(name, lambda name=name: h5[name][()])
        attrs(name, h5[name])
    return values, errors


def metadata_crc32(h5: h5py.File) -> dict[str, int]:
    """CRC32 of every part of a cache but the samples (file attributes, metadata datasets and their attributes):
    what the builder stores in the ``metadata_crc32`` attribute."""
    values, errors = read_metadata(h5)
    if errors:
        raise OSError(f"cannot read back {', '.join(errors)}")
    return {part: _crc_of(v) for part, v in values.items()}


def seal_metadata(h5: h5py.File) -> None:
    """Store ``metadata_crc32`` for the file as it is now: the builder's last step, and what a tool (or a test)
    that edits a cache's metadata on purpose must call afterwards, or readers will refuse the edit as damage."""
    h5.attrs[INTEGRITY_ATTR] = json.dumps(metadata_crc32(h5), sort_keys=True)


def metadata_problems(h5: h5py.File, values: dict[str, Any], errors: dict[str, str]) -> dict[str, str]:
    """The damaged parts, ``{part: what is wrong}`` (``read_metadata``'s output against the stored
    ``metadata_crc32``); for a layout-1 cache, which has no metadata checksums, only the unreadable parts."""
    problems = {p: f"unreadable ({why})" for p, why in errors.items()}
    if int(values.get(L.part(attr=L.ATTR_LAYOUT_VERSION), -1)) < 2:
        return problems
    try:
        expected = {str(k): int(v) for k, v in json.loads(h5.attrs[INTEGRITY_ATTR]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problems[L.part(attr=INTEGRITY_ATTR)] = f"missing or unreadable ({type(exc).__name__}): the metadata cannot be checked"
        return problems
    for part in sorted(set(expected) | set(values)):
        if part in errors:
            continue
        if part not in values:
            problems[part] = "missing"
        elif part not in expected:
            problems[part] = "not covered by the stored checksums (added after the build?)"
        elif _crc_of(values[part]) != expected[part]:
            problems[part] = "checksum mismatch"
    return problems


def problem_lines(problems: dict[str, str]) -> list[str]:
    """``metadata_problems`` as lines: ``metadata dataset 'fold': checksum mismatch``."""
    return [f"{describe_part(p)}: {why}" for p, why in sorted(problems.items())]


def _file_attrs(values: dict[str, Any]) -> dict[str, Any]:
    """The file attributes among `read_metadata`'s parts: ``{name: value}``."""
    found = {}
    for name, value in values.items():
        where, attr = L.split_part(name)
        if attr and not where:
            found[attr] = value
    return found


def _group(values: dict[str, Any], group: str) -> dict[str, np.ndarray]:
    """The datasets directly in ``group`` (``meta`` -> ``{column: array}``) among `read_metadata`'s parts."""
    prefix = group + "/"
    return {k[len(prefix):]: x for k, x in values.items() if k.startswith(prefix) and not L.split_part(k)[1]}


# The per-record columns a `Cache` has as attributes of the same name (`Cache.column`), in `columns` order.
_COLUMNS = (L.FOLD, L.AGE, L.SEX, L.SOURCE, L.PATIENT_ID, L.RECORD_ID)


def str_array(values: Sequence[str]) -> np.ndarray:
    """UTF-8 strings as an HDF5 variable-length string array (what caches and embedding files store)."""
    return np.array([v.encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8"))


def strings(ds: h5py.Dataset) -> np.ndarray:
    """An HDF5 string dataset as an object array of ``str``."""
    return decoded(ds[()])


def decoded(values: np.ndarray) -> np.ndarray:
    """Strings as h5py reads them (``bytes``) as an object array of ``str``."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)


class Cache:
    """Read-only view of a cache: metadata in memory, signals read per window.

    Safe to use from DataLoader workers: each process reads through a descriptor of its own, of the very file
    the metadata came from (a cache rebuilt at the same path meanwhile is refused, not mixed in).
    With ``in_memory=True`` the whole signal array is loaded once (fast for caches that fit in RAM).
    """

    def __init__(self, path: str | Path, in_memory: bool = False, verify: bool = True) -> None:
        """``verify``: refuse damaged metadata at once, and each record whose samples fail their checksum when a
        process first reads it (``cache verify`` opens with ``False`` to list every damaged part instead)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such cache file{resolved_against(self.path)} (build it with "
                             "`ecgforge cache build`)")
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(f"{self.path}: not an HDF5 file ({exc})") from None
        self._data: np.ndarray | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        with h5:
            if L.ATTR_LAYOUT_VERSION not in h5.attrs or L.SIGNALS not in h5:
                raise CacheError(f"{self.path}: not an ecgforge cache (no {L.ATTR_LAYOUT_VERSION} / {L.SIGNALS})")
            if int(h5.attrs[L.ATTR_LAYOUT_VERSION]) not in READABLE_LAYOUTS:
                raise CacheError(f"{self.path}: layout_version {h5.attrs[L.ATTR_LAYOUT_VERSION]}, this ecgforge reads "
                                 f"{', '.join(map(str, READABLE_LAYOUTS))}")
            v, errors = read_metadata(h5)
            if verify and (damaged := metadata_problems(h5, v, errors)):
                raise CacheDamaged(f"{self.path}: damaged metadata: {'; '.join(problem_lines(damaged))}; "
                                   f"{_rebuild_hint(self.path)}")
            if errors:  # not verifying: the parts this reader needs must still be readable
                part = next(iter(errors))
                raise CacheDamaged(f"{self.path}: {describe_part(part)} unreadable; {_rebuild_hint(self.path)}")
            # The descriptor that later reads go through: HDF5's own, duplicated, so both are the same file.
            self._fd, self._pid = os.dup(h5.id.get_vfd_handle()), os.getpid()
            st = os.fstat(self._fd)
            self._identity = (st.st_dev, st.st_ino)
            attr = _file_attrs(v)
            self.spec_hash = str(attr[L.ATTR_SPEC_HASH])
            self.spec = json.loads(attr[L.ATTR_SPEC])
            self.fs_hz = float(attr[L.ATTR_FS_HZ])
            self.leads: list[str] = json.loads(attr[L.ATTR_LEADS])
            self.scale_mv = float(attr[L.ATTR_SCALE_MV])
            self.name = str(attr.get(L.ATTR_NAME, self.path.stem))
            self.offsets = v[L.OFFSETS]
            self.lengths = v[L.LENGTHS]
            self.present = v[L.PRESENT]
            self.checksum = v[L.CHECKSUM]
            self.record_id = decoded(v[L.RECORD_ID])
            self.patient_id = decoded(v[L.PATIENT_ID])
            self.source = decoded(v[L.SOURCE])
            self.sex = decoded(v[L.SEX])
            self.fold = v[L.FOLD]
            self.age = v[L.AGE]
            self.meta = {k: (decoded(x) if x.dtype.kind in "OS" else x) for k, x in _group(v, L.META).items()}
            self.labels = _group(v, L.LABELS)
            self.label_names = {k: json.loads(v[L.part(L.label_set(k), L.LABEL_NAMES)]) for k in self.labels}
            self.skipped = list(zip(decoded(v[L.SKIPPED_RECORD_ID]), decoded(v[L.SKIPPED_REASON]), strict=True))
            sig = h5[L.SIGNALS]
            self.n_leads = int(sig.shape[1])
            self._offset = sig.id.get_offset()  # byte offset of the contiguous dataset; None if empty
            if in_memory:
                self._data = sig[()]
                self.close()
        # Records whose samples this process has checked against their CRC (None: not verifying). Forked
        # DataLoader workers inherit the parent's bitmap, spawned ones receive it pickled: a record checked
        # before they started is not checked again.
        self._checked: np.ndarray | None = np.zeros(len(self.offsets), dtype=bool) if verify else None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None  # each process opens its own descriptor
        return state

    def column(self, name: str) -> np.ndarray:
        """A per-record metadata column by name (``fold``/``strat_fold``, ``source``, ``patient_id``, ...)."""
        name = L.FOLD if name == "strat_fold" else name
        if name in _COLUMNS:
            return getattr(self, name)
        if name in self.meta:
            return self.meta[name]
        raise KeyError(name)

    def columns(self) -> list[str]:
        return [*_COLUMNS, *sorted(self.meta)]

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
        if self._checked is not None and not self._checked[i]:
            self.check_record(i)
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
        if self._checked is not None and len(records) and not self._checked[records].all():
            for i in np.unique(records[~self._checked[records]]).tolist():
                self.check_record(i)
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

    def record_crc_ok(self, i: int) -> bool:
        """Whether record ``i``'s stored samples still have the CRC32 the build recorded (reads the whole record,
        in pieces of at most 16 MiB)."""
        row_bytes = self.n_leads * 2
        first, n = int(self.offsets[i]), int(self.lengths[i])
        crc, step = 0, max(1, (16 << 20) // row_bytes)
        for r in range(first, first + n, step):
            rows = min(step, first + n - r)
            if self._data is not None:
                buf: Any = memoryview(np.ascontiguousarray(self._data[r : r + rows])).cast("B")
            else:
                buf = os.pread(self._descriptor(), rows * row_bytes, self._offset + r * row_bytes)
                if len(buf) != rows * row_bytes:
                    return False
            crc = zlib.crc32(buf, crc)
        return crc == int(self.checksum[i])

    def check_record(self, i: int) -> None:
        """Refuse record ``i`` (one line, the cache and the record) if its samples fail their checksum; mark it
        checked otherwise."""
        if not self.record_crc_ok(i):
            raise CacheDamaged(f"{self.path}: record {self.record_id[i]} (#{i}): its samples fail their checksum "
                               f"(the file is damaged); {_rebuild_hint(self.path)}")
        if self._checked is not None:
            self._checked[i] = True

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
