"""The source interface: what every dataset (WFDB or not) gives the cache builder.

A source is built like every registered component, ``cls(cfg, ctx)`` from its config class ``Config``. It
lists its records (`iter_records`: a stream of `RecordRef`s, each with its metadata, labels and a *locator*),
names its labels (`label_names`) and reads one record by its locator (`read` -> `Signal` in mV). A cache build
lists in its own process and reads in reader processes, each of which builds the source again from its config
(pydantic, picklable): construction must be cheap and read nothing, and ``read`` may rely only on ``self.cfg``
and state the source builds for itself in that process.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from ecgforge.data.record import RecordError, RecordRef, Signal
from ecgforge.data.wfdb_io import read_record
from ecgforge.registry import BuildContext

C = TypeVar("C", bound=BaseModel)


class Source(ABC, Generic[C]):
    """A dataset: its records as listed, its label names, and one record's samples on request.

    Subclasses set ``Config`` (their pydantic config, ``kind: Literal["<kind>"]``) and write `iter_records`
    and `read`; `label_names` defaults to no label set. A source that leaves part of each record's listing to
    the reader processes (CinC parses each header there) sets ``completes = True`` and writes `complete`;
    its `label_names` then receives the labels the completed records carry.
    """

    Config: ClassVar[type[BaseModel]]
    completes: ClassVar[bool] = False

    def __init__(self, cfg: C, ctx: BuildContext | None = None) -> None:
        self.cfg = cfg

    @abstractmethod
    def iter_records(self) -> Iterator[RecordRef]:
        """Every record, in a fixed order, one at a time (a cache build streams them into its readers), reading
        no signal. A listing that cannot start raises OSError / ValueError naming the field
        (``"source.path: /x/exams.csv not found"``)."""

    @abstractmethod
    def read(self, locator: str) -> Signal:
        """The samples of the record at ``locator`` (a `RecordRef.locator` this source listed) in mV; a record
        that cannot be used raises `RecordError` with a one-line reason (it is listed as skipped, the build goes
        on). Runs in the reader processes."""

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """Label set -> every label it can hold (the cache's label columns, in order). Called once the records
        are listed; ``observed``: for a source with ``completes``, the labels the completed records carry."""
        return {}

    def complete(self, ref: RecordRef) -> RecordRef:
        """``ref`` with what the listing left to the readers (sources with ``completes``; the identity otherwise)."""
        return ref

    def records(self) -> list[RecordRef]:
        """Every record of `iter_records`, completed, as a list; ValueError at a repeated record id (a cache build
        checks the streamed ids itself, at the end of its listing)."""
        return [self.complete(r) for r in unique_ids(self.iter_records())]


class WFDBSource(Source[C]):
    """A source whose records are WFDB records: the locator is the record's path without extension."""

    def read(self, locator: str) -> Signal:
        return read_record(locator)


def unique_ids(refs: Iterable[RecordRef]) -> Iterator[RecordRef]:
    """Pass records through, raising ValueError (naming the field) at a repeated record id."""
    seen: set[str] = set()
    for ref in refs:
        if ref.record_id in seen:
            raise ValueError(f"source.path: record {ref.record_id!r} is listed twice")
        seen.add(ref.record_id)
        yield ref


Read = TypeVar("Read", bound=Callable[..., Signal])


def any_error_is_a_reason(read: Read) -> Read:
    """Wrap the `Source.read` of a format parsed by general-purpose code (XML, DICOM, HDF5), which raises all
    sorts of exceptions on odd files: any of them becomes a one-line `RecordError` naming its type, so one bad
    file never ends a build with a traceback."""

    @functools.wraps(read)
    def wrapped(*args: Any, **kwargs: Any) -> Signal:
        try:
            return read(*args, **kwargs)
        except RecordError:
            raise
        except MemoryError:
            raise RecordError("out of memory reading the record") from None
        except Exception as exc:  # noqa: BLE001 - a reader meets the wild; the build must go on
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise RecordError(f"{type(exc).__name__}: {first}".rstrip(": ")) from None

    return wrapped  # type: ignore[return-value]
