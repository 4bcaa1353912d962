"""The names inside an HDF5 dataset cache: one place for the writer (`cache_writer`), the reader (`cache`) and the
verifier (`cache_inspect`).

Layout (``LAYOUT_VERSION`` 2; version 1 is read too: it lacks ``metadata_crc32``)::

    attrs: layout_version, spec_hash, spec (the cache recipe as JSON), fs_hz, leads, units="mV",
           scale_mv (mV per stored integer step), ecgforge_version, n_records, source_kind, name,
           n_skipped, clipped_samples, metadata_crc32 (JSON: CRC32 of every other part but the samples)
    signals            (total_samples, n_leads) int16, contiguous, uncompressed; record i is rows
                       offsets[i] : offsets[i] + lengths[i]
    offsets, lengths   (N,) int64, in samples at fs_hz
    present            (N, n_leads) bool: the lead existed in the record (absent leads are stored as 0)
    checksum           (N,) uint32: CRC32 of the record's stored bytes (for `cache verify`)
    record_id, patient_id, source, sex   (N,) strings
    fold (N,) int64, age (N,) float64 (NaN unknown), meta/<column> extra scalar columns
    labels/<set>       (N, C) uint8 multi-hot, attrs["names"] = the C label names (JSON)
    skipped/record_id, skipped/reason    records that could not be used, and why

Metadata *parts* (what ``metadata_crc32`` covers) are named ``"@attr"`` (file attributes), ``"path"``
(datasets) and ``"path@attr"`` (dataset attributes): see `part`.
"""

from __future__ import annotations

LAYOUT_VERSION = 2
READABLE_LAYOUTS = (1, 2)  # 2 = 1 + the `metadata_crc32` attribute
SCALE_MV = 0.001  # int16 steps of 1 uV: +-32.767 mV covers any ECG; finer than any ADC in these datasets
UNITS = "mV"

# ----------------------------------------------------------------------------------------- datasets
SIGNALS = "signals"
OFFSETS = "offsets"
LENGTHS = "lengths"
PRESENT = "present"
CHECKSUM = "checksum"
RECORD_ID = "record_id"
PATIENT_ID = "patient_id"
SOURCE = "source"
SEX = "sex"
FOLD = "fold"
AGE = "age"
STRING_COLUMNS = (RECORD_ID, PATIENT_ID, SOURCE, SEX)  # (N,) variable-length UTF-8, in this order
META = "meta"  # group: meta/<column>
LABELS = "labels"  # group: labels/<set>
LABEL_NAMES = "names"  # attribute of labels/<set>: JSON list of its column names
SKIPPED_RECORD_ID = "skipped/record_id"
SKIPPED_REASON = "skipped/reason"

# ------------------------------------------------------------------------------------ file attributes
ATTR_LAYOUT_VERSION = "layout_version"
ATTR_SPEC_HASH = "spec_hash"
ATTR_SPEC = "spec"
ATTR_FS_HZ = "fs_hz"
ATTR_LEADS = "leads"
ATTR_UNITS = "units"
ATTR_SCALE_MV = "scale_mv"
ATTR_VERSION = "ecgforge_version"
ATTR_N_RECORDS = "n_records"
ATTR_SOURCE_KIND = "source_kind"
ATTR_NAME = "name"
ATTR_N_SKIPPED = "n_skipped"
ATTR_CLIPPED = "clipped_samples"
INTEGRITY_ATTR = "metadata_crc32"


def part(dataset: str = "", attr: str = "") -> str:
    """The metadata part name of a dataset (``part("fold")``), a file attribute (``part(attr="spec")`` ->
    ``"@spec"``) or a dataset's attribute (``part("labels/x", LABEL_NAMES)`` -> ``"labels/x@names"``)."""
    return f"{dataset}@{attr}" if attr else dataset


def split_part(name: str) -> tuple[str, str]:
    """`part`'s inverse: ``"labels/x@names"`` -> ``("labels/x", "names")``, ``"@spec"`` -> ``("", "spec")``,
    ``"fold"`` -> ``("fold", "")``."""
    dataset, _, attr = name.partition("@")
    return dataset, attr


def label_set(name: str) -> str:
    """The dataset of label set ``name``: ``labels/<name>``."""
    return f"{LABELS}/{name}"


def meta_column(name: str) -> str:
    """The dataset of extra metadata column ``name``: ``meta/<name>``."""
    return f"{META}/{name}"
