"""A cache seen through a model's input preparation: every read returns what the model's own inference code
would have made of the record (its record-scope filters and scaling, then its window-scope filters).

The steps are given as functions (a foundation model's ``InputContract.prepare_record`` / ``prepare_window``),
so this data-layer module knows nothing of the models. Record-scope steps need the whole record (a zero-phase
filter, a per-record min-max), so each record is prepared once, on its first read, and kept in memory
(float32: ``12 x T x 4`` bytes per record, e.g. 240 kB for 10 s at 500 Hz).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ecgforge.data.cache import Cache

#: ``x (leads, T) -> (leads, T)`` float32 for a whole record, or ``(..., leads, window)`` for windows.
Step = Callable[[np.ndarray], np.ndarray]


class PreparedCache:
    """``cache`` with ``record`` applied to each whole record and ``window`` to each window read from it.

    Reads (`read`, `read_windows`) have `Cache`'s signatures and shapes; every other attribute (metadata,
    lengths, labels, path) is the wrapped cache's.
    """

    def __init__(self, cache: Cache, record: Step | None = None, window: Step | None = None) -> None:
        self.cache, self._record_step, self._window_step = cache, record, window
        self._records: dict[int, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        cache = self.__dict__.get("cache")
        if cache is None:  # while unpickling (a spawned DataLoader worker), before __dict__ is restored
            raise AttributeError(name)
        return getattr(cache, name)

    def __len__(self) -> int:
        return len(self.cache)

    def record(self, i: int) -> np.ndarray:
        """Record ``i`` whole, ``(n_leads, T)`` float32, after the record-scope steps (prepared once)."""
        if self._record_step is None:
            return self.cache.read(i)
        if i not in self._records:
            self._records[i] = np.ascontiguousarray(self._record_step(self.cache.read(i)), dtype=np.float32)
        return self._records[i]

    def _windowed(self, x: np.ndarray) -> np.ndarray:
        return x if self._window_step is None else np.asarray(self._window_step(x), dtype=np.float32)

    def read(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """As `Cache.read`, prepared: ``(n_leads, length)`` float32."""
        if self._record_step is None:
            return self._windowed(self.cache.read(i, start, length))
        rec = self.record(i)
        length = rec.shape[-1] - start if length is None else length
        if start < 0 or start + length > rec.shape[-1]:
            raise IndexError(f"window [{start}, {start + length}) outside record {self.cache.record_id[i]} "
                             f"of {rec.shape[-1]} samples")
        return self._windowed(rec[:, start : start + length].copy())

    def read_windows(self, records: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """As `Cache.read_windows`, prepared: ``(B, n_leads, length)`` float32."""
        if self._record_step is None:
            return self._windowed(self.cache.read_windows(records, starts, length))
        out = np.empty((len(records), self.cache.n_leads, length), np.float32)
        for b, (i, s) in enumerate(zip(np.asarray(records).tolist(), np.asarray(starts).tolist(), strict=True)):
            rec = self.record(i)
            if s < 0 or s + length > rec.shape[-1]:
                raise IndexError(f"window [{s}, {s + length}) outside record {self.cache.record_id[i]} "
                                 f"of {rec.shape[-1]} samples")
            out[b] = rec[:, s : s + length]
        return self._windowed(out)


__all__ = ["PreparedCache"]
