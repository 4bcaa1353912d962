"""Embeddings of tiled evaluation windows, computed once per (encoder, records, transform) and reused.

Every frozen-feature protocol (linear probe, k-NN, nearest centroid, robustness, identification) asks
`FeatureCache.windows` for the window embeddings of some records under some initialisation; within a run each
combination of (init, seed, cache, records, window, stride, transform) is embedded once, whichever protocol,
task or label fraction asks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ecgforge.data.cache import Cache
from ecgforge.data.dataset import TiledWindows
from ecgforge.errors import UserError

#: A transform of input batches ``x (B, leads, T) -> x`` and the name that identifies it in the feature cache
#: (``"leads/6"``, ``"physio_noise/level3/seed0"``).
NamedTransform = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


class EmbeddingSettings(Protocol):
    """What `FeatureCache` reads from the evaluation context (``context.EvalContext`` is one; this module does
    not import it, so the context may hold a feature cache without an import cycle)."""

    window: int  # samples
    stride: int  # samples between evaluation tiles
    make_encoder: Callable[[str, int], nn.Module]  # (init, seed) -> encoder
    device: torch.device
    batch_size: int
    num_workers: int


@torch.no_grad()
def embed(
    encoder: nn.Module,
    ds: TiledWindows,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    advance: Callable[[int], None] | None = None,
    sequence: bool = False,
) -> np.ndarray:
    """Embeddings ``(W, D)`` float32 of every window of ``ds`` (encoder in eval mode, no gradient); with
    ``sequence``, the token sequences ``(W, T', C)`` of ``encoder.forward_features`` instead.

    ``transform`` (e.g. added noise, a lead subset) is applied to each batch ``x (B, leads, T)`` first. The
    encoder is in eval mode throughout: a frozen encoder's BatchNorm running statistics never move.
    """
    if sequence:
        require_sequence(encoder)
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=num_workers):
        x = batch["x"].to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        z = encoder.forward_features(x).transpose(1, 2) if sequence else encoder(x)
        out.append(z.float().cpu())
        if advance is not None:
            advance(len(x))
    encoder.train(was_training)
    if not out:
        return np.zeros((0, getattr(encoder, "embed_dim", 0)), dtype=np.float32)
    return torch.cat(out).numpy()


def require_sequence(encoder: nn.Module, why: str = "an attention head") -> None:
    """Refuse, in one line, an encoder that gives only a pooled embedding where ``why`` needs its tokens."""
    if not callable(getattr(encoder, "forward_features", None)):
        raise UserError(f"{why} needs the encoder's token sequence, but {type(encoder).__name__} gives only "
                        "pooled embeddings (no forward_features(x) -> (B, C, T')); use head = 'linear' or 'mlp'")


def per_record(scores: np.ndarray, record_of: np.ndarray, n_records: int) -> np.ndarray:
    """Mean of window scores per record: ``(W, ...) -> (n_records, ...)`` (PTB-XL benchmark protocol)."""
    flat = scores.reshape(len(scores), -1)
    sums = np.zeros((n_records, flat.shape[1]), dtype=np.float64)
    np.add.at(sums, record_of, flat)
    counts = np.bincount(record_of, minlength=n_records).clip(min=1)[:, None]
    return (sums / counts).astype(np.float32).reshape((n_records, *scores.shape[1:]))


def encoder_key(init: str, seed: int) -> tuple[str, int]:
    """The identity of an encoder under ``init``: the pretrained weights are one encoder for every seed; a
    random initialisation is one per seed."""
    return init, seed if init == "random" else 0


class FeatureCache:
    """Window embeddings per (encoder, cache, records, window, stride, transform), computed on first request.

    Encoders are built once per `encoder_key` and dropped after the run's evaluations (``clear``).
    """

    def __init__(self, ctx: EmbeddingSettings) -> None:
        self.ctx = ctx
        self._encoders: dict[tuple[str, int], nn.Module] = {}
        self._features: dict[tuple[object, ...], np.ndarray] = {}
        self._tiles: dict[tuple[object, ...], TiledWindows] = {}
        self.computed = 0  # embeddings actually computed (not served from the cache), for tests and timing

    def tiles(self, cache: Cache, indices: np.ndarray) -> TiledWindows:
        key = (str(cache.path), _digest(indices), self.ctx.window, self.ctx.stride)
        if key not in self._tiles:
            self._tiles[key] = TiledWindows(cache, indices, self.ctx.window, self.ctx.stride)
        return self._tiles[key]

    def encoder(self, init: str, seed: int) -> nn.Module:
        key = encoder_key(init, seed)
        if key not in self._encoders:
            self._encoders[key] = self.ctx.make_encoder(init, seed)
        return self._encoders[key]

    def windows(
        self,
        init: str,
        seed: int,
        cache: Cache,
        indices: np.ndarray,
        transform: NamedTransform | None = None,
        sequence: bool = False,
    ) -> tuple[np.ndarray, TiledWindows]:
        """``(W, D)`` window embeddings of ``indices`` (with ``sequence``: ``(W, T', C)`` token sequences) and
        their tiles (``record_of`` maps window -> record).

        ``transform``: ``(name, fn)``; the name identifies the transform in the cache (e.g. ``"noise3/seed0"``).
        """
        tiles = self.tiles(cache, indices)
        key = (*encoder_key(init, seed), str(cache.path), _digest(indices), self.ctx.window, self.ctx.stride,
               transform[0] if transform else None, sequence)
        if key not in self._features:
            self._features[key] = embed(self.encoder(init, seed), tiles, self.ctx.device, self.ctx.batch_size,
                                        self.ctx.num_workers, transform=transform[1] if transform else None,
                                        sequence=sequence)
            self.computed += 1
        return self._features[key], tiles

    def records(self, init: str, seed: int, cache: Cache, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), D)`` per-record embeddings: the mean of each record's window embeddings."""
        w, tiles = self.windows(init, seed, cache, indices)
        return per_record(w, tiles.record_of, len(indices))

    def clear(self) -> None:
        self._encoders.clear()
        self._features.clear()
        self._tiles.clear()


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()
