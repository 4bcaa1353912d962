"""Building an HDF5 dataset cache from a source: reader processes, scratch files, one atomic rename.

The layout is described in ``data.cache`` (the reader).
"""

from __future__ import annotations

import contextlib
import gc
import glob
import itertools
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data.cache import LAYOUT_VERSION, SCALE_MV, CacheError, seal_metadata, str_array
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.dsp import preprocess
from ecgforge.data.leads import CANONICAL_LEADS, canonicalize
from ecgforge.data.record import RecordError, RecordRef
from ecgforge.data.sources import SOURCES
from ecgforge.data.wfdb_io import read_record
from ecgforge.errors import Failure
from ecgforge.fsio import as_if_opened, pid_alive
from ecgforge.interrupts import StopOnSignal
from ecgforge.registry import build
from ecgforge.version import __version__

_INT16_MAX = 32767


@dataclass
class Processed:
    """One record ready to store, or the reason it was skipped."""

    index: int
    signal: np.ndarray | None = None  # (T, n_leads) int16, until a `_Scratch` stores it
    present: np.ndarray | None = None  # (n_leads,) bool
    reason: str = ""
    clipped: int = 0
    # Where `_Scratch.store` put the samples: scratch file number, byte offset, rows, CRC32 of the bytes.
    stored: tuple[int, int, int, int] | None = None


class _Scratch:
    """One process's append-only scratch file of samples.

    Each reader process stores its records' samples itself, so only a few numbers per record travel back to
    the parent, which at the end copies the byte ranges into the HDF5 file in record order. Samples are
    written once per batch (`flush`, one ``writev``): a write per record costs twice as much.
    """

    def __init__(self, number: int, path: str) -> None:
        self.number, self.fd, self.pos = number, os.open(path, os.O_WRONLY | os.O_APPEND), 0
        self.pending: list[memoryview] = []

    def store(self, p: Processed) -> Processed:
        if p.signal is not None:
            buf = memoryview(p.signal).cast("B")
            self.pending.append(buf)
            p.stored = (self.number, self.pos, p.signal.shape[0], zlib.crc32(buf))
            self.pos += len(buf)
            p.signal = None
        return p

    def flush(self) -> None:
        """Write everything stored since the last flush."""
        for start in range(0, len(self.pending), 512):  # below every system's IOV_MAX (Linux: 1024)
            bufs = self.pending[start : start + 512]
            done = os.writev(self.fd, bufs)
            if done < sum(len(b) for b in bufs):  # a short write (rare on regular files): the rest in one piece
                rest = b"".join(bufs)[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
        self.pending.clear()

    def close(self) -> None:
        os.close(self.fd)


def process_record(index: int, path: str, recipe: CacheRecipe) -> Processed:
    """Read, check, canonicalise, filter, resample and quantise the record at ``path`` (WFDB, without extension).
    Never raises for bad data."""
    sig = recipe.signal
    try:
        raw = read_record(path)
        if raw.data.ndim != 2 or raw.data.shape[1] == 0:
            raise RecordError("empty signal")
        data12, present12 = canonicalize(raw)
        if not np.isfinite(data12).all():
            bad = int((~np.isfinite(data12)).sum())
            raise RecordError(f"{bad} NaN/infinite samples")
        if tuple(sig.leads) == CANONICAL_LEADS:  # the usual 12 leads: no copy
            data, present = data12, present12
        else:
            pick = [CANONICAL_LEADS.index(lead) for lead in sig.leads]
            data, present = data12[pick], present12[pick]
        if not present.any():
            raise RecordError(f"none of the leads {sig.leads} is in the record")
        if (data.max(axis=-1) - data.min(axis=-1))[present].max() < 1e-4:
            raise RecordError("flat line: every lead is constant")
        duration = data.shape[1] / raw.fs_hz
        if duration < sig.min_duration_s:
            raise RecordError(f"too short: {duration:.2f} s < min_duration_s {sig.min_duration_s}")
        if sig.max_duration_s is not None and duration > sig.max_duration_s:
            data = data[:, : int(round(sig.max_duration_s * raw.fs_hz))]
        out = preprocess(data, raw.fs_hz, sig.fs_hz, sig.filter)
        if not present.all():
            out[~present] = 0.0
        q = out / SCALE_MV
        np.rint(q, out=q)
        clipped = 0
        if q.max() > _INT16_MAX or q.min() < -_INT16_MAX:  # two reductions, no temporary: clipping is rare
            clipped = int(np.count_nonzero(np.abs(q) > _INT16_MAX))
            np.clip(q, -_INT16_MAX, _INT16_MAX, out=q)
        return Processed(index, q.T.astype(np.int16, order="C"), present, clipped=clipped)
    except RecordError as exc:
        return Processed(index, reason=str(exc))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
        # A reader bug or an odd file must not end a build of 800,000 records: report it as the reason.
        return Processed(index, reason=f"{type(exc).__name__}: {exc}".splitlines()[0])


@dataclass
class _Batch:
    """What a reader reports for records ``start .. start + k - 1``: one small message per batch, not per record."""

    start: int
    stored: np.ndarray  # (k, 4) int64: scratch file, byte offset, rows, CRC32; all -1 for a skipped record
    present: np.ndarray  # (k, n_leads) bool
    clipped: int
    reasons: dict[int, str]  # record index -> why it was skipped


def _process_range(start: int, paths: Sequence[str], recipe: CacheRecipe, scratch: _Scratch) -> _Batch:
    """Process records ``start .. start + len(paths) - 1`` in order, their samples appended to ``scratch``."""
    stored = np.full((len(paths), 4), -1, dtype=np.int64)
    present = np.zeros((len(paths), len(recipe.signal.leads)), dtype=bool)
    clipped, reasons = 0, {}
    for k, path in enumerate(paths):
        p = scratch.store(process_record(start + k, path, recipe))
        if p.stored is None:
            reasons[start + k] = p.reason
        else:
            stored[k], present[k] = p.stored, p.present
            clipped += p.clipped
    scratch.flush()
    return _Batch(start, stored, present, clipped, reasons)


def _reader_main(number: int, conn: Any, recipe: CacheRecipe, scratch_path: str, inherited: list[int]) -> None:
    """A reader process: ``(start, paths)`` tasks in, ``("ok", _Batch)`` or ``("error", exception)`` out, until
    ``None`` or the parent's end of the pipe closes (the parent died: nothing more to do)."""
    # The parent handles Ctrl-C and SIGTERM (to the whole process group) and then ends its readers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in inherited:  # the parent's ends of the other readers' pipes: held here, they would hide its death
        with contextlib.suppress(OSError):
            os.close(fd)
    scratch = _Scratch(number, scratch_path)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", _process_range(*task, recipe, scratch))
        except Exception as exc:  # e.g. ENOSPC writing the scratch file: the parent raises it
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception:  # an exception that does not pickle: its text
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


class ReaderDied(Failure):
    """A reader process ended while the build needed it (killed by the OOM killer or a user, crashed)."""


class _Readers:
    """``n`` reader processes, supervised: a reader that dies ends the build at once, naming it.

    ``multiprocessing.Pool`` replaces a dead worker silently and waits forever for the task it held, which is
    how a reader killed by a full disk or the OOM killer hung builds. Here each reader has its own pipe, the
    parent waits on the pipes and the processes' sentinels together, and keeps at most ``depth`` tasks queued
    per reader (a few records each: the pipes never fill, and tasks can be cut as the listing streams in).
    """

    def __init__(self, n: int, recipe: CacheRecipe, scratch_paths: list[str], depth: int = 2) -> None:
        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
        self.depth, self.procs, self.conns, self.queued = depth, [], [], []
        parents: list[int] = []
        for number in range(n):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_reader_main, name=f"ecgforge-reader-{number}", daemon=True,
                               args=(number, theirs, recipe, scratch_paths[number], parents + [mine.fileno()]))
            proc.start()
            theirs.close()
            parents.append(mine.fileno())
            self.procs.append(proc)
            self.conns.append(mine)
            self.queued.append(0)

    def _died(self, number: int) -> ReaderDied:
        proc = self.procs[number]
        proc.join(1)
        code = proc.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
            hint = (" (the system's OOM killer sends it when memory runs out: see `dmesg`; fewer --workers or a "
                    "lower signal.fs_hz need less)") if -code == signal.SIGKILL else ""
        else:
            how, hint = f"exited with code {code}", ""
        return ReaderDied(f"cache reader {number} (pid {proc.pid}) {how}{hint}; the build stopped and nothing was "
                          "written: rerun the command")

    def run(self, tasks: Iterator[tuple[int, list[str]]], stop: StopOnSignal, poll_s: float = 0.2) -> Iterator[_Batch]:
        """Send ``tasks`` to the readers as they have room, and yield their batches as they come (any order).
        Raises the reader's exception, `ReaderDied`, or `Interrupted` (within ``poll_s`` of a signal)."""
        pending, todo = 0, iter(tasks)
        while True:
            for number, conn in enumerate(self.conns):  # keep every reader busy
                while todo is not None and self.queued[number] < self.depth:
                    task = next(todo, None)
                    if task is None:
                        todo = None
                        break
                    try:
                        conn.send(task)
                    except OSError:
                        raise self._died(number) from None
                    self.queued[number] += 1
                    pending += 1
                if stop.is_set():
                    raise stop.interrupted()
            if todo is None and pending == 0:
                return
            ready = mp_connection.wait(self.conns + [p.sentinel for p in self.procs], timeout=poll_s)
            if stop.is_set():
                raise stop.interrupted()
            for number, conn in enumerate(self.conns):
                if conn not in ready:
                    continue
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    raise self._died(number) from None
                if kind == "error":
                    raise value
                self.queued[number] -= 1
                pending -= 1
                yield value
            for number, proc in enumerate(self.procs):  # a death with nothing left in its pipe
                if proc.sentinel in ready and not self.conns[number].poll():
                    raise self._died(number)

    def close(self, kill: bool = False) -> None:
        """End every reader (a finished build asks them to; a failed one kills them) and reap them."""
        for proc, conn in zip(self.procs, self.conns, strict=True):
            if kill:
                with contextlib.suppress(OSError):
                    proc.kill()
            else:
                with contextlib.suppress(OSError):
                    conn.send(None)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


# ------------------------------------------------------------------------------------------- building


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def _remove_stale_scratch(out: Path) -> None:
    """Delete scratch files beside ``out`` left by builds on this host whose process is gone (SIGKILL, SIGTERM,
    power loss): a killed build of a large dataset would otherwise leave gigabytes behind at every attempt."""
    prefix = f".{out.name}.{_host()}."
    for p in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if p.suffix in (".building", ".samples") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@dataclass
class BuildSummary:
    path: Path
    n_records: int
    n_skipped: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_samples: int = 0
    seconds: float = 0.0


def _copy_range(src: int, dst: int, dst_offset: int, nbytes: int, src_offset: int = 0) -> None:
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


def _gather(scratch_paths: list[str], stored: list[Any], dst: int, dst_offset: int, row_bytes: int) -> None:
    """Copy each record's samples from the scratch files into ``dst`` at ``dst_offset``, back to back in the
    order of ``stored`` (``(file, offset, rows, crc)`` per record); adjacent ranges of one file are copied
    in one go (a worker's chunk of consecutive records is contiguous in its file)."""
    fds = [os.open(path, os.O_RDONLY) for path in scratch_paths]
    try:
        pos, run = dst_offset, None  # run: [file, start, nbytes, destination] being extended
        for number, offset, rows, _ in stored:
            nbytes = rows * row_bytes
            if run is not None and run[0] == number and run[1] + run[2] == offset:
                run[2] += nbytes
            else:
                if run is not None:
                    _copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
                run = [number, offset, nbytes, pos]
            pos += nbytes
        if run is not None:
            _copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
    finally:
        for fd in fds:
            os.close(fd)


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
    # Ctrl-C and SIGTERM set a flag that the build checks at safe points (between batches, before the rename):
    # raised wherever the main thread happens to be, a KeyboardInterrupt is swallowed inside h5py's code
    # ("Exception ignored"; see ecgforge.interrupts). The readers ignore both signals (a scheduler's SIGTERM
    # goes to the whole process group): the parent stops, kills them and removes every scratch file.
    with _frozen_heap(), StopOnSignal((signal.SIGINT, signal.SIGTERM)) as stop:
        return _build(recipe, out, workers, progress, stop)


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off every object that exists when a build starts.

    With torch imported that is ~300,000 objects, which each full collection traverses: a few of them during
    the listing and in every reader process cost more than the listing itself, and in forked readers the
    traversal also un-shares memory pages (copy on write). `gc.freeze` is Python's tool for this case.
    """
    if gc.get_freeze_count():  # the caller manages frozen objects: leave their arrangement alone
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _build(
    recipe: CacheRecipe, out: str | Path | None, workers: int | None, progress: Any | None, stop: StopOnSignal
) -> BuildSummary:
    t0 = time.perf_counter()
    out = Path(out or recipe.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = build(SOURCES, recipe.source)
    n_leads = len(recipe.signal.leads)
    workers = max(1, workers or recipe.workers or os.cpu_count() or 1)

    _remove_stale_scratch(out)
    scratch = f".{out.name}.{_host()}.{os.getpid()}."  # whose they are, for _remove_stale_scratch
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".building")  # fd: kept to the end
    tmp = Path(tmp_name)
    scratch_paths: list[str] = []
    try:
        for _ in range(workers):
            sfd, name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".samples")
            os.close(sfd)
            scratch_paths.append(name)
        refs: list[RecordRef] = []
        listing = _listing(source, refs)
        batches: list[_Batch] = []
        clipped, done = 0, 0

        def tasks() -> Iterator[tuple[int, list[str]]]:
            """Consecutive records in tasks cut as the listing streams in: a few records while few are known
            (every reader gets work early), up to 64 (one message per 64 records)."""
            while True:
                start = len(refs)
                size = max(1, min(64, start // (workers * 8)))
                paths = [r.path for r in itertools.islice(listing, size)]
                if not paths:
                    return
                yield start, paths

        def consume(stream: Iterator[_Batch]) -> None:
            nonlocal clipped, done
            for b in stream:
                if stop.is_set():
                    raise stop.interrupted()
                batches.append(b)
                clipped, done = clipped + b.clipped, done + len(b.stored)
                if progress is not None:
                    progress(done, len(refs))  # the total grows while the listing streams

        # Pass 1: process records in batches of consecutive records; each process appends the samples to
        # its own scratch file and reports where they are.
        if workers == 1:
            with contextlib.closing(_Scratch(0, scratch_paths[0])) as sink:
                consume(_process_range(start, paths, recipe, sink) for start, paths in tasks())
        else:
            readers = _Readers(workers, recipe, scratch_paths)
            try:
                consume(readers.run(tasks(), stop))
            except BaseException:
                readers.close(kill=True)  # at once: the build has failed, their work is of no use
                raise
            readers.close()
        n = len(refs)
        stored = np.full((n, 4), -1, dtype=np.int64)
        present = np.zeros((n, n_leads), dtype=bool)
        reasons: dict[int, str] = {}
        for b in batches:
            k = len(b.stored)
            stored[b.start : b.start + k], present[b.start : b.start + k] = b.stored, b.present
            reasons.update(b.reasons)
        batches.clear()
        try:
            label_names = source.label_names()
        except (OSError, ValueError) as exc:
            raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if not (stored[:, 2] >= 0).any():
            raise CacheError(_nothing_found(recipe, n, reasons))
        keep = np.flatnonzero(stored[:, 2] >= 0)
        lengths, checksums = stored[keep, 2], stored[keep, 3].astype(np.uint32)

        # Pass 2: the HDF5 file, with the signals as one contiguous dataset of known size.
        offsets = np.zeros(len(keep), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)[:-1]
        with h5py.File(tmp, "w") as h5, ThreadPoolExecutor(1) as flusher:  # `fd` is this same file
            h5.attrs.update(
                layout_version=LAYOUT_VERSION,
                spec_hash=recipe.spec_hash(),
                spec=recipe.model_dump_json(),
                fs_hz=float(recipe.signal.fs_hz),
                leads=json.dumps(recipe.signal.leads),
                units="mV",
                scale_mv=SCALE_MV,
                ecgforge_version=__version__,
                n_records=len(keep),
                source_kind=recipe.source.kind,
                name=recipe.name,
                n_skipped=len(reasons),
                clipped_samples=clipped,
            )
            # The samples' place in the file is fixed now. The kernel copies them there from the scratch files
            # (HDF5 never writes that range: no fill values), then a thread flushes them to disk while HDF5
            # writes the metadata, and the scratch files' pages are freed.
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dset = h5.create_dataset("signals", shape=(int(lengths.sum()), n_leads), dtype="<i2", dcpl=dcpl,
                                     fill_time="never")
            _gather(scratch_paths, stored[keep].tolist(), fd, dset.id.get_offset(), n_leads * 2)
            flushed = flusher.submit(os.fsync, fd)
            _unlink(scratch_paths)
            h5["offsets"], h5["lengths"] = offsets, lengths
            h5["present"], h5["checksum"] = present[keep], checksums
            _write_columns(h5, [refs[i] for i in keep], label_names)
            skipped = sorted(reasons.items())
            h5["skipped/record_id"] = str_array([refs[i].record_id for i, _ in skipped])
            h5["skipped/reason"] = str_array([reason for _, reason in skipped])
            # Last: the CRC of every part written above, read back as a reader will see it.
            seal_metadata(h5)
            flushed.result()
        os.fsync(fd)  # what HDF5 wrote meanwhile: the metadata
        as_if_opened(fd)
        if stop.is_set():
            raise stop.interrupted()
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
        _unlink(scratch_paths)
    return BuildSummary(
        path=out,
        n_records=len(keep),
        n_skipped=len(reasons),
        skipped=[(refs[i].record_id, reason) for i, reason in skipped],
        clipped_samples=clipped,
        seconds=time.perf_counter() - t0,
    )


def _listing(source: Any, refs: list[RecordRef]) -> Iterator[RecordRef]:
    """The source's records one at a time (``iter_records`` where it streams, else ``records()``), each also
    appended to ``refs``; a listing failure becomes a one-line `CacheError` (sources name the field)."""
    try:
        it = source.iter_records() if hasattr(source, "iter_records") else iter(source.records())
        for ref in it:
            refs.append(ref)
            yield ref
    except (OSError, ValueError) as exc:  # "source.labels_csv: x.csv not found"
        raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _nothing_found(recipe: CacheRecipe, n_listed: int, reasons: dict[int, str]) -> str:
    """Why a build has no record to store, and where the source looked."""
    where = f"source {recipe.source.kind!r}"
    path = getattr(recipe.source, "path", None)
    if path:
        where += f" looked in {Path(path).resolve()}"
    if n_listed == 0:
        return f"no records found: {where} and listed none (is source.path the dataset's top folder?)"
    first = reasons[min(reasons)] if reasons else "?"
    return f"no readable record: {where}, listed {n_listed} and none could be read (the first: {first})"


def _unlink(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _write_columns(h5: h5py.File, refs: Sequence[RecordRef], label_names: dict[str, list[str]]) -> None:
    """What the source knows of each stored record: ids, sex, fold, age, ``meta/*`` and ``labels/*``."""
    h5["record_id"] = str_array([r.record_id for r in refs])
    h5["patient_id"] = str_array([r.patient_id for r in refs])
    h5["source"] = str_array([r.source for r in refs])
    h5["sex"] = str_array([str(r.meta.get("sex", "")) for r in refs])
    h5["fold"] = np.array([int(r.meta.get("fold", -1)) for r in refs], dtype=np.int64)
    h5["age"] = np.array([float(r.meta.get("age", np.nan)) for r in refs], dtype=np.float64)
    extra = sorted({k for r in refs for k in r.meta} - {"sex", "fold", "age"})
    meta = h5.create_group("meta")
    for col in extra:
        values = [r.meta.get(col) for r in refs]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            meta[col] = np.array(values, dtype=np.int64)
        elif all(isinstance(v, (int, float, np.number)) for v in values):
            meta[col] = np.array(values, dtype=np.float64)
        else:
            meta[col] = str_array(["" if v is None else str(v) for v in values])
    labels = h5.create_group("labels")
    for set_name, names in label_names.items():
        col = {name: j for j, name in enumerate(names)}
        mat = np.zeros((len(refs), len(names)), dtype=np.uint8)
        for row, r in enumerate(refs):
            for lab in r.labels.get(set_name, []):
                if lab in col:
                    mat[row, col[lab]] = 1
        labels[set_name] = mat
        labels[set_name].attrs["names"] = json.dumps(list(names))
