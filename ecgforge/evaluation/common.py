"""What every evaluation protocol shares: the context it runs in, embeddings, heads, per-record scores.

A protocol gets an `EvalContext` (never the recipe): the cache, the splits, the window, and a factory for
the encoder under each initialisation (``pretrained`` = the weights this run produced or loaded, ``random``
= the same architecture freshly initialised with the evaluation seed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from ecgforge.data.cache import Cache
from ecgforge.data.dataset import TaskType, TiledWindows, select


class ProtocolConfig(BaseModel, extra="forbid", frozen=True):
    """What every transfer protocol's ``[[eval]]`` table says: the task, the label fractions and seeds, the
    splits, the bootstrap. Each protocol's config adds its ``kind``, ``inits`` and hyperparameters."""

    task: str = Field(min_length=1, description="label set of the cache, or 'sex' / 'age'")
    task_type: Literal["multilabel", "multiclass", "regression"] | None = None
    label_fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the test records for 95% CIs (0 = off)")
    train_split: str = "train"
    test_split: str = "test"
    cache: str | None = Field(None, description="evaluate on another cache than [data].cache")

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        bad = [f for f in fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"label fractions must lie in (0, 1], got {bad}")
        return fractions


@dataclass
class EvalContext:
    """Run facts an evaluation protocol needs.

    Attributes:
        cache: the data cache (protocols may open another via ``open_cache``).
        splits: split name -> metadata selector (from the recipe's ``[data.splits]``).
        window: window length in samples at ``cache.fs_hz``; ``stride`` for evaluation tiles.
        make_encoder: ``(init, seed) -> nn.Module``, a fresh copy each call (protocols may train it).
        device: where to compute; ``batch_size`` for embedding.
        progress: ``(description, total) -> advance`` callback factory, or None.
    """

    cache: Cache
    splits: Mapping[str, Mapping[str, Any]]
    window: int
    stride: int
    make_encoder: Callable[[str, int], nn.Module]
    device: torch.device
    batch_size: int = 256
    num_workers: int = 0
    exclude_ptbxl_overlap: bool = True
    run_dir: Path | None = None
    progress: Callable[[str, int], Callable[[int], None]] | None = None
    _caches: dict[str, Cache] = field(default_factory=dict)

    def open_cache(self, path: str | None) -> Cache:
        if path is None or Path(path) == self.cache.path:
            return self.cache
        if path not in self._caches:
            self._caches[path] = Cache(path)
        return self._caches[path]

    def split(self, cache: Cache, name: str) -> np.ndarray:
        if name not in self.splits:
            from ecgforge.data.dataset import DatasetError

            raise DatasetError(f"evaluation asks for split {name!r}; recipe splits: {sorted(self.splits)}")
        return select(cache, self.splits[name], self.exclude_ptbxl_overlap)


@torch.no_grad()
def embed(
    encoder: nn.Module,
    ds: TiledWindows,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings ``(W, D)`` float32 of every window of ``ds`` (encoder in eval mode, no gradient).

    ``transform`` (e.g. added noise, a lead subset) is applied to each batch ``x (B, leads, T)`` first.
    """
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=num_workers):
        x = batch["x"].to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        out.append(encoder(x).float().cpu())
        if advance is not None:
            advance(len(x))
    encoder.train(was_training)
    if not out:
        return np.zeros((0, getattr(encoder, "embed_dim", 0)), dtype=np.float32)
    return torch.cat(out).numpy()


def head_loss(task_type: TaskType) -> nn.Module:
    return {"multilabel": nn.BCEWithLogitsLoss(), "multiclass": nn.CrossEntropyLoss(), "regression": nn.MSELoss()}[task_type]


def scores_from_logits(logits: torch.Tensor, task_type: TaskType) -> torch.Tensor:
    """Probabilities for classification (sigmoid / softmax), the value itself for regression."""
    if task_type == "multilabel":
        return torch.sigmoid(logits)
    if task_type == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits.squeeze(-1)


def per_record(scores: np.ndarray, record_of: np.ndarray, n_records: int) -> np.ndarray:
    """Mean of window scores per record: ``(W, ...) -> (n_records, ...)`` (PTB-XL benchmark protocol)."""
    flat = scores.reshape(len(scores), -1)
    sums = np.zeros((n_records, flat.shape[1]), dtype=np.float64)
    np.add.at(sums, record_of, flat)
    counts = np.bincount(record_of, minlength=n_records).clip(min=1)[:, None]
    return (sums / counts).astype(np.float32).reshape((n_records, *scores.shape[1:]))


@dataclass
class LinearHead:
    """A linear layer on standardised features (mean/std from the training windows)."""

    layer: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor
    task_type: TaskType

    def scores(self, feats: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = (torch.from_numpy(feats) - self.mean) / self.std
            return scores_from_logits(self.layer(x), self.task_type).numpy()


def fit_linear_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    task_type: TaskType,
    n_out: int,
    *,
    val: tuple[np.ndarray, np.ndarray, np.ndarray, int, Callable[[np.ndarray, np.ndarray], float]] | None = None,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> LinearHead:
    """Train a linear head on frozen features with Adam; keep the epoch with the best validation score.

    Args:
        train_x: ``(N, D)`` window features; train_y: ``(N, C)`` / ``(N,)`` targets per window.
        val: (window features, record_of, record targets, n_records, score_fn) where ``score_fn(y, scores)``
            is higher-is-better; without it the last epoch is kept.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train_x).float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.from_numpy(train_y)
    y = y.float() if task_type != "multiclass" else y.long()
    if task_type == "regression":
        y = y.reshape(-1, 1)
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_out)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = head_loss(task_type)
    head = LinearHead(layer, mean, std, task_type)
    best_score, best_state = -np.inf, copy.deepcopy(layer.state_dict())
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss_fn(layer(x[idx]), y[idx]).backward()
            opt.step()
        if val is not None:
            vx, vrec, vy, vn, score_fn = val
            score = score_fn(vy, per_record(head.scores(vx), vrec, vn))
            if np.isfinite(score) and score > best_score:
                best_score, best_state = score, copy.deepcopy(layer.state_dict())
    if val is not None and np.isfinite(best_score):
        layer.load_state_dict(best_state)
    return head
