"""What the one-record-per-file sources (MUSE XML, HL7 aECG, DICOM) share: a folder of files listed in sorted
order, each parsed for its header only (patient, sex, age, statements: not the waveforms) while listing; the
locator of a record is its file."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field

from ecgforge.data.record import RecordError, RecordRef, Signal
from ecgforge.data.sources.base import Source, any_error_is_a_reason
from ecgforge.data.sources.common import hash_fold, walk_files
from ecgforge.registry import BuildContext

MissingLeads = Literal["error", "absent"]


class FileSourceConfig(BaseModel, extra="forbid", frozen=True):
    path: str = Field(description="folder searched recursively for the files")
    pattern: str = Field("*.xml", min_length=1, description="file-name glob (case-insensitive)")
    missing_leads: MissingLeads = Field(
        "error", description="'error': a file without all of I, II, V1-V6 is skipped with the reason; "
        "'absent': it is stored with the leads it has"
    )


Header = dict[str, str | float]  # "patient", "sex", "age", "statement"


F = TypeVar("F", bound=FileSourceConfig)


class FileSource(Source[F]):
    """A folder of one-record files; subclasses set ``source_name`` and write ``parse_header`` and ``read_file``."""

    source_name: ClassVar[str]  # the records' `RecordRef.source`

    def __init__(self, cfg: F, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()

    def parse_header(self, path: Path) -> Header:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def read_file(self, path: str) -> Signal:  # pragma: no cover - every subclass defines it
        """The record in file ``path`` as a `Signal` in mV (``self.cfg.missing_leads`` applied)."""
        raise NotImplementedError

    @any_error_is_a_reason
    def read(self, locator: str) -> Signal:
        return self.read_file(locator)

    def iter_records(self) -> Iterator[RecordRef]:
        """One `RecordRef` per matching file, sorted by relative path; each file's header is parsed (its
        waveforms are not). A file whose header cannot be parsed is still listed (its reader gives the
        reason, and the cache lists it as skipped)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.path: {self.root} is not a folder")

        def refs() -> Iterator[RecordRef]:
            for file in walk_files(self.root, self.cfg.pattern):
                rid = file.relative_to(self.root).with_suffix("").as_posix()
                try:
                    head = self.parse_header(file)
                except (RecordError, OSError, ValueError, ET.ParseError):
                    head = {}
                patient = str(head.get("patient") or "") or rid
                yield RecordRef(
                    record_id=rid,
                    locator=str(file),
                    patient_id=patient,
                    source=self.source_name,
                    meta={
                        "fold": hash_fold(patient),
                        "sex": str(head.get("sex", "")),
                        "age": float(head.get("age", math.nan)),
                        "statement": str(head.get("statement", "")),
                    },
                )

        yield from refs()  # a repeated id: `records` and the cache build refuse it


def iter_until(path: Path, stop: Callable[[ET.Element], bool]) -> Iterator[tuple[str, ET.Element]]:
    """``(event, element)`` of an incremental parse, ending at the first start tag ``stop`` accepts: the
    header of a file is read without reading (or base64-decoding) its waveforms."""
    for event, elem in ET.iterparse(path, events=("start", "end")):
        if event == "start" and stop(elem):
            return
        yield event, elem


def local(tag: str) -> str:
    """Tag name without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def parse_file(path: str) -> ET.Element:
    """The root element of an XML file; a RecordError with the parser's reason if it is not well-formed."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise RecordError(f"not well-formed XML: {exc}") from None
    except FileNotFoundError:
        raise RecordError(f"{path} not found") from None
