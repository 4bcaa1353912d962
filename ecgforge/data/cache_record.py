"""One record on its way into a cache: read by its source, checked, canonicalised, filtered, resampled and
quantised to the cache's int16 steps, or skipped with a one-line reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ecgforge.data.cache_layout import SCALE_MV
from ecgforge.data.dsp import preprocess
from ecgforge.data.leads import CANONICAL_LEADS, canonicalize
from ecgforge.data.record import RecordError

if TYPE_CHECKING:
    from ecgforge.data.cache_spec import SignalConfig
    from ecgforge.data.sources.base import Source

_INT16_MAX = 32767


@dataclass
class Processed:
    """One record ready to store, or the reason it was skipped."""

    index: int
    signal: np.ndarray | None = None  # (T, n_leads) int16, until a `Scratch` stores it
    present: np.ndarray | None = None  # (n_leads,) bool
    reason: str = ""
    clipped: int = 0
    # Where `Scratch.store` put the samples: scratch file number, byte offset, rows, CRC32 of the bytes.
    stored: tuple[int, int, int, int] | None = None


def process_record(index: int, locator: str, source: Source, sig: SignalConfig) -> Processed:
    """Read the record at ``locator`` with ``source``, then check, canonicalise, filter, resample and quantise it
    as ``sig`` says. Never raises for bad data: the reason is in the result."""
    try:
        raw = source.read(locator)
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
