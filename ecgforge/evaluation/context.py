"""The context an evaluation protocol runs in: the cache, the splits, the window, and its encoders.

A protocol gets an `EvalContext` (never the recipe). ``make_encoder(init, seed)`` gives the encoder under each
initialisation (``pretrained`` = the weights this run produced or loaded, ``random`` = the same architecture
freshly initialised with the evaluation seed); ``features`` embeds each (encoder, records, transform) once
per run, whichever protocol, task or fraction asks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgforge.data.cache import Cache
from ecgforge.data.splits import DatasetError, select
from ecgforge.evaluation.features import FeatureCache


@dataclass
class EvalContext:
    """Run facts an evaluation protocol needs.

    Attributes:
        cache: the data cache (protocols may open another via ``open_cache``).
        splits: split name -> metadata selector (from the recipe's ``[data.splits]``).
        window: window length in samples at ``cache.fs_hz``; ``stride`` for evaluation tiles.
        make_encoder: ``(init, seed) -> nn.Module``, a fresh copy each call (protocols may train it).
        device: where to compute; ``batch_size`` for embedding.
        reader: how ``open_cache`` opens another cache than ``cache``: as it is, or, in a run with a
            foundation model's input contract, at the model's rate and through its contract as ``cache`` is
            (``app.run.evaluate``), so a protocol's own ``cache =`` is read as the run's cache is.
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
    reader: Callable[[str], Cache] = Cache
    _caches: dict[str, Cache] = field(default_factory=dict)
    features: FeatureCache = field(init=False)

    def __post_init__(self) -> None:
        self.features = FeatureCache(self)

    def open_cache(self, path: str | None) -> Cache:
        if path is None or Path(path) == self.cache.path:
            return self.cache
        if path not in self._caches:
            self._caches[path] = self.reader(path)
        return self._caches[path]

    def split(self, cache: Cache, name: str) -> np.ndarray:
        if name not in self.splits:
            raise DatasetError(f"evaluation asks for split {name!r}; recipe splits: {sorted(self.splits)}")
        return select(cache, self.splits[name], self.exclude_ptbxl_overlap)
