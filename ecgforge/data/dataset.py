"""Windows from a cache: split selection, random crops for training, tiles for evaluation, task targets.

Crop starts are drawn for a whole epoch at once from ``numpy.random.default_rng((seed, epoch))``, one per
item (and segment): the same recipe and seed give the same windows whatever the number of DataLoader workers
or the batch size, and a resumed run sees the windows it would have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ecgforge.data.cache import Cache
from ecgforge.errors import UserError


class DatasetError(UserError):
    """A split/task request the cache cannot serve (unknown column or label set); one line."""


def select(cache: Cache, selector: Mapping[str, object], exclude_ptbxl_overlap: bool = False) -> np.ndarray:
    """Indices of records whose metadata match every ``column: value(s)`` pair of ``selector``.

    Folds that have no records simply select nothing (a full-PTB-XL recipe runs unchanged on a subset).
    ``exclude_ptbxl_overlap`` drops PhysioNet/CinC 'HR*' records, which are PTB-XL ECGs at 500 Hz.
    """
    keep = np.ones(len(cache), dtype=bool)
    for column, wanted in selector.items():
        try:
            values = cache.column(column)
        except KeyError:
            raise DatasetError(
                f"{cache.path}: split selects on unknown column {column!r}; columns: {cache.columns()}"
            ) from None
        wanted_list = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if values.dtype == object:
            keep &= np.isin(values.astype(str), [str(w) for w in wanted_list])
        else:
            keep &= np.isin(values, wanted_list)
    if exclude_ptbxl_overlap and "ptbxl_ecg_id" in cache.meta:
        keep &= np.asarray(cache.meta["ptbxl_ecg_id"]) < 0
    return np.flatnonzero(keep)


def patient_codes(cache: Cache) -> np.ndarray:
    """``(N,)`` int64 patient index per record (stable: sorted patient ids)."""
    return np.unique(cache.patient_id.astype(str), return_inverse=True)[1].astype(np.int64)


TaskType = Literal["multilabel", "multiclass", "regression"]


@dataclass
class Targets:
    """What an evaluation task asks of each record.

    Attributes:
        indices: records that have a target (others are left out and counted).
        y: ``(n, C)`` float32 multi-hot (multilabel), ``(n,)`` int64 (multiclass) or ``(n,)`` float32.
        names: class names (empty for regression).
        task_type: how the metric and the head treat ``y``.
        dropped: records of the input without a usable target.
    """

    indices: np.ndarray
    y: np.ndarray
    names: list[str]
    task_type: TaskType
    dropped: int


def task_targets(cache: Cache, task: str, indices: np.ndarray, task_type: TaskType | None = None) -> Targets:
    """Targets of ``task`` for the records ``indices``.

    ``task`` is a label set of the cache (``superdiagnostic``, ``rhythm``, ``scored``, ...), ``sex`` or
    ``age``. A label set in which every record has exactly one label is multiclass unless told otherwise;
    records with no label in the set are dropped (as in the PTB-XL benchmark).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if task == "age":
        age = cache.age[indices]
        ok = np.isfinite(age)
        return Targets(indices[ok], age[ok].astype(np.float32), [], "regression", int((~ok).sum()))
    if task == "sex" and "sex" not in cache.labels:
        sex = cache.sex[indices].astype(str)
        ok = np.isin(sex, ["M", "F"])
        return Targets(indices[ok], (sex[ok] == "F").astype(np.int64), ["M", "F"], "multiclass", int((~ok).sum()))
    if task not in cache.labels:
        raise DatasetError(f"{cache.path}: no label set {task!r}; label sets: {sorted(cache.labels)} (or 'sex', 'age')")
    mat = cache.labels[task][indices].astype(np.float32)
    names = list(cache.label_names[task])
    counts = mat.sum(axis=1)
    if task_type is None:
        task_type = "multiclass" if len(indices) and (counts[counts > 0] == 1).all() else "multilabel"
    if task_type == "multiclass":
        ok = counts == 1
        return Targets(indices[ok], mat[ok].argmax(axis=1).astype(np.int64), names, "multiclass", int((~ok).sum()))
    if task_type == "regression":
        raise DatasetError(f"task {task!r}: a label set cannot be a regression target")
    ok = counts > 0
    return Targets(indices[ok], mat[ok], names, "multilabel", int((~ok).sum()))


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
    ) -> None:
        self.cache, self.window, self.n_segments, self.seed = cache, int(window), n_segments, seed
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
            span = np.maximum(0, self.cache.lengths[self.indices] - self.window)
            rng = np.random.default_rng((self.seed, self.epoch))
            self._starts = (self.epoch, rng.integers(0, span[:, None] + 1, size=(len(self.indices), self.n_segments)))
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
