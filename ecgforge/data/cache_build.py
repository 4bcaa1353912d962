"""Building an HDF5 dataset cache from a source: the listing streams into reader processes (`cache_readers`) that
process each record (`cache_record`) into scratch files; the HDF5 file (`cache_writer`, layout in
`cache_layout`) is written beside the target and renamed into place in one step.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import itertools
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgforge.data.cache import CacheError
from ecgforge.data.cache_readers import Batch, Readers, Scratch, Task, process_range
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.cache_writer import Spool, unlink, write_cache
from ecgforge.data.record import RecordRef
from ecgforge.data.sources import SOURCES
from ecgforge.data.sources.base import Source
from ecgforge.fsio import as_if_opened, pid_alive
from ecgforge.interrupts import StopOnSignal
from ecgforge.registry import build

Progress = Callable[[int, int], object]  # progress(done, total): records processed, records listed so far


@dataclass
class BuildSummary:
    path: Path
    n_records: int
    n_skipped: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_samples: int = 0
    seconds: float = 0.0


def build_cache(
    recipe: CacheRecipe,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
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


class _Intake:
    """Pass 1 as the building process sees it: tasks cut from the streaming listing, and the readers' batches
    settled in record order, kept records into the spool and the others into `skipped`.

    Per-record state is bounded by the records in flight: a task's records wait in ``in_flight`` until their batch
    returns, then (in record order) go to the spool or to ``skipped``.
    """

    def __init__(self, source: Source, workers: int, spool: Spool, stop: StopOnSignal,
                 progress: Progress | None) -> None:
        self.source, self.workers, self.spool, self.stop, self.progress = source, workers, spool, stop, progress
        self.listing = _listing(source)
        self.in_flight: dict[int, list[RecordRef]] = {}
        self.arrived: dict[int, tuple[list[RecordRef], Batch]] = {}
        self.skipped: list[tuple[str, str]] = []
        self.observed: dict[str, set[str]] = {}  # label set -> labels the readers found (sources with `completes`)
        self.listed = self.next_start = self.clipped = self.done = 0

    def tasks(self) -> Iterator[Task]:
        """Consecutive records in tasks cut as the listing streams in: a few records while few are known (every
        reader gets work early), up to 64 (one message per 64 records)."""
        while True:
            refs = list(itertools.islice(self.listing, max(1, min(64, self.listed // (self.workers * 8)))))
            if not refs:
                return
            start, self.listed = self.listed, self.listed + len(refs)
            self.in_flight[start] = refs
            yield start, (refs if self.source.completes else [r.locator for r in refs])

    def consume(self, batches: Iterator[Batch]) -> None:
        for b in batches:
            if self.stop.is_set():
                raise self.stop.interrupted()
            refs = self.in_flight.pop(b.start)
            self.arrived[b.start] = (b.refs if b.refs is not None else refs, b)
            self.clipped, self.done = self.clipped + b.clipped, self.done + len(b.stored)
            while self.next_start in self.arrived:  # batches come in any order; the spool takes them in record order
                refs, ready = self.arrived.pop(self.next_start)
                self._settle(refs, ready)
                self.next_start += len(refs)
            if self.progress is not None:
                self.progress(self.done, self.listed)  # the total grows while the listing streams

    def _settle(self, refs: list[RecordRef], b: Batch) -> None:
        for k, ref in enumerate(refs):
            if self.source.completes:
                for set_name, labs in ref.labels.items():
                    self.observed.setdefault(set_name, set()).update(labs)
            if b.stored[k, 2] >= 0:
                self.spool.add(ref, b.stored[k], b.present[k])
            else:
                self.skipped.append((ref.record_id, b.reasons[b.start + k]))


def _read_all(intake: _Intake, recipe: CacheRecipe, scratch_paths: list[str], stop: StopOnSignal) -> None:
    """Pass 1: process records in batches of consecutive records, one reader per scratch file (in this process
    for one); each appends the samples to its scratch file and reports where they are."""
    if len(scratch_paths) == 1:
        with contextlib.closing(Scratch(0, scratch_paths[0])) as sink:
            intake.consume(process_range(start, items, recipe, intake.source, sink) for start, items in intake.tasks())
        return
    readers = Readers(len(scratch_paths), recipe, scratch_paths)
    try:
        intake.consume(readers.run(intake.tasks(), stop))
    except BaseException:
        readers.close(kill=True)  # at once: the build has failed, their work is of no use
        raise
    readers.close()


def _build(recipe: CacheRecipe, out: str | Path | None, workers: int | None, progress: Progress | None,
           stop: StopOnSignal) -> BuildSummary:
    t0 = time.perf_counter()
    out = Path(out or recipe.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source: Source = build(SOURCES, recipe.source)
    workers = max(1, workers or recipe.workers or os.cpu_count() or 1)

    _remove_stale_scratch(out)
    prefix = f".{out.name}.{_host()}.{os.getpid()}."  # whose they are, for _remove_stale_scratch
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=prefix, suffix=".building")  # fd: kept to the end
    tmp = Path(tmp_name)
    scratch_paths: list[str] = []  # the readers' sample files, then the spool
    spool: Spool | None = None
    try:
        for suffix in [".samples"] * workers + [".spool"]:
            sfd, name = tempfile.mkstemp(dir=out.parent, prefix=prefix, suffix=suffix)
            os.close(sfd)
            scratch_paths.append(name)
        spool = Spool(scratch_paths[-1])
        intake = _Intake(source, workers, spool, stop, progress)
        _read_all(intake, recipe, scratch_paths[:workers], stop)
        spool.flush()
        repeated = _repeated_id(spool, intake.skipped)
        if repeated is not None:
            raise CacheError(f"source.path: record {repeated!r} is listed twice")
        try:
            label_names = source.label_names(intake.observed if source.completes else None)
        except (OSError, ValueError) as exc:
            raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if spool.n == 0:
            raise CacheError(_nothing_found(recipe, intake.listed, intake.skipped))

        # Pass 2: the HDF5 file, with the signals as one contiguous dataset of known size.
        write_cache(tmp, fd, recipe, spool, scratch_paths[:workers], label_names, intake.skipped, intake.clipped)
        spool.close()
        unlink(scratch_paths[-1:])  # before the rename: a build killed there leaves only its HDF5 scratch file
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
        if spool is not None:
            spool.close()
        unlink(scratch_paths)
    return BuildSummary(path=out, n_records=spool.n, n_skipped=len(intake.skipped), skipped=intake.skipped,
                        clipped_samples=intake.clipped, seconds=time.perf_counter() - t0)


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def _remove_stale_scratch(out: Path) -> None:
    """Delete scratch files beside ``out`` left by builds on this host whose process is gone (SIGKILL, SIGTERM,
    power loss): a killed build of a large dataset would otherwise leave gigabytes behind at every attempt."""
    prefix = f".{out.name}.{_host()}."
    for p in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if p.suffix in (".building", ".samples", ".spool") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _repeated_id(spool: Spool, skipped: list[tuple[str, str]]) -> str | None:
    """A record id listed twice (kept or skipped), or None. Checked once the listing is done, on 8-byte hashes of
    the ids (a sort of 8 bytes per record), so the building process holds no set of ids while it streams."""

    def hashes(ids: Sequence[str]) -> np.ndarray:
        return np.frombuffer(b"".join(hashlib.blake2b(i.encode(), digest_size=8).digest() for i in ids),
                             dtype=np.uint64)

    def pieces() -> Iterator[list[str]]:
        yield from spool.column("record_id")
        yield [rid for rid, _ in skipped]

    h = np.sort(np.concatenate([hashes(p) for p in pieces()]))
    suspects = set(h[1:][h[1:] == h[:-1]].tolist())
    if not suspects:
        return None
    seen: set[str] = set()  # only the ids whose hash repeats: a true repeat, or (rarely) a hash collision
    for piece in pieces():
        for rid, value in zip(piece, hashes(piece).tolist(), strict=True):
            if value in suspects:
                if rid in seen:
                    return rid
                seen.add(rid)
    return None


def _listing(source: Source) -> Iterator[RecordRef]:
    """The source's records one at a time; a listing failure becomes a one-line `CacheError` (sources name the
    field)."""
    try:
        yield from source.iter_records()
    except (OSError, ValueError) as exc:  # "source.labels_csv: x.csv not found"
        raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _nothing_found(recipe: CacheRecipe, n_listed: int, skipped: list[tuple[str, str]]) -> str:
    """Why a build has no record to store, and where the source looked."""
    where = f"source {recipe.source.kind!r}"
    path = getattr(recipe.source, "path", None)
    if path:
        where += f" looked in {Path(path).resolve()}"
    if n_listed == 0:
        return f"no records found: {where} and listed none (is source.path the dataset's top folder?)"
    first = skipped[0][1] if skipped else "?"
    return f"no readable record: {where}, listed {n_listed} and none could be read (the first: {first})"
