"""Windows from a cache: random crops for training, tiles for evaluation (splits and targets: ``data.splits``).

Crop starts are drawn for a whole epoch at once from ``numpy.random.default_rng((seed, epoch))``, one per
item (and segment): the same recipe and seed give the same windows whatever the number of DataLoader workers
or the batch size, and a resumed run sees the windows it would have.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ecgforge.data.cache import Cache
from ecgforge.data.splits import DatasetError, Targets, patient_codes


def adjacent_starts(lengths: np.ndarray, window: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """``(N, n_segments)`` int64 starts of back-to-back segments of ``window`` samples, one row per record.

    Row r: ``s0 + k·window`` for k = 0..n_segments−1, ``s0`` uniform in ``[0, lengths[r] − n_segments·window]``
    (one draw per record). A record too short for that gets starts spread evenly over ``[0, length − window]``
    (all 0 if shorter than one window: the reader zero-pads).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.arange(n_segments, dtype=np.int64) * window
    span = lengths - n_segments * window
    s0 = rng.integers(0, np.maximum(span, 0) + 1)  # (N,)
    starts = s0[:, None] + offsets[None, :]
    short = span < 0
    if short.any():
        room = np.maximum(lengths[short] - window, 0)
        frac = np.arange(n_segments) / max(n_segments - 1, 1)
        starts[short] = np.round(room[:, None] * frac[None, :]).astype(np.int64)
    return starts


def _window(cache: Cache, i: int, start: int, window: int) -> np.ndarray:
    """``(leads, window)`` float32; records shorter than the window are zero-padded at the end."""
    n = int(cache.lengths[i])
    if n >= window:
        return cache.read(i, start, window)
    out = np.zeros((cache.n_leads, window), dtype=np.float32)
    out[:, :n] = cache.read(i, 0, n)
    return out


class WindowBatch(dict):
    """A batch that `RandomWindows.__getitems__` already stacked: key -> tensor. PyTorch's default collate
    indexes a batch by position; this one then says which ``collate_fn`` to use, instead of ``KeyError: 0``."""

    def __getitem__(self, key: str) -> torch.Tensor:
        if isinstance(key, int):
            raise TypeError("RandomWindows returns whole batches: give the DataLoader "
                            "collate_fn=ecgforge.data.dataset.collate_windows")
        return super().__getitem__(key)


class RandomWindows(Dataset):
    """Training items: a random ``window``-sample crop (or ``n_segments`` crops) of each selected record.

    Item: ``x (leads, window)`` or ``(n_segments, leads, window)``, ``lead_mask (leads,)`` bool,
    ``patient`` and ``record`` int64, and ``y`` when ``targets`` is given.

    ``segment_pairing`` (``n_segments > 1``; CMSC-style objectives): ``adjacent`` (default) cuts the
    segments back to back, segment k starting at ``s0 + k·window`` with ``s0`` uniform in
    ``[0, length − n_segments·window]``, as CLOCS and fairseq-signals cut a record into consecutive,
    non-overlapping segments (a 10 s record and 5 s segments give exactly its two halves). A record
    shorter than ``n_segments·window`` (fairseq-signals drops those) gets its segments spread evenly over
    it, overlapping as little as its length allows. ``independent`` draws every segment's start on its own
    (they then overlap by about two thirds for 10 s records and 5 s segments).

    ``__getitems__`` (what a DataLoader calls with a batch of indices) returns the whole batch as one dict of
    stacked tensors, the same values ``collate_windows`` makes of the items: a DataLoader over this dataset
    needs ``collate_fn=collate_windows``. Building 256 items one by one (a numpy draw, five small tensors
    each, then a stack per key) costs several times the read itself.
    """

    def __init__(
        self,
        cache: Cache,
        indices: np.ndarray,
        window: int,
        *,
        n_segments: int = 1,
        seed: int = 0,
        targets: Targets | None = None,
        segment_pairing: Literal["adjacent", "independent"] = "adjacent",
    ) -> None:
        if segment_pairing not in ("adjacent", "independent"):
            raise DatasetError(f"segment_pairing must be 'adjacent' or 'independent', got {segment_pairing!r}")
        self.cache, self.window, self.n_segments, self.seed = cache, int(window), n_segments, seed
        self.segment_pairing = segment_pairing
        self.targets = targets
        self.indices = np.asarray(targets.indices if targets is not None else indices, dtype=np.int64)
        self.patients = patient_codes(cache)
        self.epoch = 0
        self._starts: tuple[int, np.ndarray] | None = None  # (epoch, (len, n_segments) starts), per process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def starts(self) -> np.ndarray:
        """``(len(self), n_segments)`` int64 crop starts of the current epoch (0 for records shorter than the window)."""
        if self._starts is None or self._starts[0] != self.epoch:
            lengths = self.cache.lengths[self.indices].astype(np.int64)
            rng = np.random.default_rng((self.seed, self.epoch))
            if self.n_segments == 1 or self.segment_pairing == "independent":
                span = np.maximum(0, lengths - self.window)
                starts = rng.integers(0, span[:, None] + 1, size=(len(self.indices), self.n_segments))
            else:
                starts = adjacent_starts(lengths, self.window, self.n_segments, rng)
            self._starts = (self.epoch, starts)
        return self._starts[1]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[k])
        xs = [_window(self.cache, i, int(s), self.window) for s in self.starts()[k]]
        item = {
            "x": torch.from_numpy(xs[0] if self.n_segments == 1 else np.stack(xs)),
            "lead_mask": torch.from_numpy(self.cache.present[i].copy()),
            "patient": torch.tensor(self.patients[i]),
            "record": torch.tensor(i),
        }
        if self.targets is not None:
            item["y"] = torch.as_tensor(self.targets.y[k])
        return item

    def __getitems__(self, ks: list[int]) -> WindowBatch:
        """The items ``ks`` as one batch: ``x (B, leads, window)`` or ``(B, n_segments, leads, window)``, ..."""
        ks_arr = np.asarray(ks, dtype=np.int64)
        idx = self.indices[ks_arr]
        starts = self.starts()[ks_arr]  # (B, n_segments)
        rec = np.repeat(idx, self.n_segments)
        flat = starts.reshape(-1)
        full = self.cache.lengths[rec] >= self.window
        if full.all():
            x = self.cache.read_windows(rec, flat, self.window)
        else:
            x = np.empty((len(rec), self.cache.n_leads, self.window), np.float32)
            x[full] = self.cache.read_windows(rec[full], flat[full], self.window)
            for b in np.flatnonzero(~full):  # shorter than the window: zero-padded, as in __getitem__
                x[b] = _window(self.cache, int(rec[b]), 0, self.window)
        if self.n_segments > 1:
            x = x.reshape(len(idx), self.n_segments, self.cache.n_leads, self.window)
        batch = WindowBatch(
            x=torch.from_numpy(x),
            lead_mask=torch.from_numpy(self.cache.present[idx]),
            patient=torch.from_numpy(self.patients[idx]),
            record=torch.from_numpy(idx),
        )
        if self.targets is not None:
            batch["y"] = torch.from_numpy(np.asarray(self.targets.y[ks_arr]))
        return batch


def collate_windows(items: list[dict[str, torch.Tensor]] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn`` for window datasets: stacks item dicts per key; a batch that a dataset's
    ``__getitems__`` already stacked (`RandomWindows`) passes through unchanged."""
    if isinstance(items, dict):
        return items
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class TiledWindows(Dataset):
    """Evaluation items: every record cut into windows at a fixed stride (the last one flush with the end).

    ``self.record_of`` maps each window to its position in ``indices`` so that scores can be averaged per
    record, as in the PTB-XL benchmark.
    """

    def __init__(self, cache: Cache, indices: np.ndarray, window: int, stride: int | None = None) -> None:
        self.cache, self.window = cache, int(window)
        stride = int(stride or window)
        self.indices = np.asarray(indices, dtype=np.int64)
        starts, owner = [], []
        for pos, i in enumerate(self.indices):
            n = int(cache.lengths[i])
            s = list(range(0, max(1, n - self.window + 1), stride))
            if n > self.window and s[-1] != n - self.window:
                s.append(n - self.window)
            starts += s
            owner += [pos] * len(s)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.record_of = np.asarray(owner, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[self.record_of[k]])
        return {
            "x": torch.from_numpy(_window(self.cache, i, int(self.starts[k]), self.window)),
            "lead_mask": torch.from_numpy(self.cache.present[i].copy()),
            "record": torch.tensor(int(self.record_of[k])),
        }
