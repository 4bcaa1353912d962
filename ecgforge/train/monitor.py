"""Online evaluation while pretraining (``[train.monitor]``): a probe of the current encoder every N steps.

Every ``every_steps`` optimiser steps (and at step 0, and at the last step) the encoder embeds a fixed
labelled subset of one split (``n_records`` records, drawn once, patient-grouped and stratified, then cut into
a fixed probe-train and probe-test part by patient), tiled into the run's evaluation windows and averaged per
record, as the frozen-feature protocols do. A k-NN probe and/or a linear probe is scored on it and logged to
metrics/train.jsonl and the trackers as ``monitor/<probe>/<task>/<metric>``, with the collapse statistics of the
subset's embeddings, ``monitor/embed/std`` and ``monitor/embed/erank`` (also for objectives whose training
batches log none: CPC, wav2vec 2.0). At step 0 a freshly built encoder of the same architecture (the run's
seed, in a forked RNG) is scored once as the random-init reference, the same keys ending in ``/random``: the
step where the curve crosses it is the budget at which pretraining starts to pay (solo-learn's online linear
evaluation, lightly's kNN callback).

It never changes the training: every RNG it could touch (torch CPU and CUDA, numpy, python) is saved and
restored, the encoder is called in eval mode under ``no_grad`` (no BatchNorm statistic moves) and its mode
restored, the collapse monitor's hook is disarmed around it, and the subset is read from the cache once,
without the training DataLoader. A run with the monitor on leaves bit-identical weights to one without.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ecgforge.data.cache import Cache
from ecgforge.data.dataset import TiledWindows
from ecgforge.data.splits import Targets, label_fraction, patient_codes, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.features import per_record
from ecgforge.evaluation.heads import fit_linear_head
from ecgforge.evaluation.knn import knn_scores
from ecgforge.evaluation.rows import PRIMARY
from ecgforge.evaluation.scoring import primary_score
from ecgforge.evaluation.training_classes import TrainingClasses
from ecgforge.recipe import MonitorConfig
from ecgforge.train.collapse import embedding_stats


def monitor_key(probe: str, fraction: float, task: str, metric: str) -> str:
    """``monitor/knn/superdiagnostic/macro_auroc`` (all of the probe-train part), ``monitor/knn_0.2/...`` (a
    fraction of it); characters every tracker accepts (MLflow: no ``@``)."""
    return f"monitor/{probe if fraction == 1 else f'{probe}_{fraction:g}'}/{task}/{metric}"


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Restore torch's CPU and CUDA generators, numpy's and python's global RNG states on exit."""
    py, npy = random.getstate(), np.random.get_state()
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@dataclass(frozen=True)
class MonitorSubset:
    """The fixed labelled records of the monitor: ``x (W, leads, window)`` float32 windows, ``record_of (W,)``
    their record's position in ``targets``, which positions are probe-test, and per label fraction which are
    probe-train."""

    x: torch.Tensor
    record_of: np.ndarray
    targets: Targets
    train: dict[float, np.ndarray]
    test: np.ndarray


def draw_positions(cfg: MonitorConfig, cache: Cache, split_indices: np.ndarray,
                   seed: int) -> tuple[Targets, dict[float, np.ndarray], np.ndarray]:
    """The monitor's records, drawn once: about ``cfg.n_records`` labelled records of the split (patient-grouped,
    stratified on the labels) as ``Targets``, the probe-train positions in them per label fraction, and the
    probe-test positions (a ``cfg.test_frac`` share, by patient); numpy generators of ``seed`` only. The run's
    pre-flight draws the same, so a subset that cannot teach a probe is refused before anything is built.

    Raises:
        UserError: too few records, a split by patient that leaves a part empty, or a probe-train part of one
            class (every class constant, multi-label): a probe would learn nothing from it.
    """
    t = task_targets(cache, cfg.task, split_indices)
    if len(t.indices) < 4:
        raise UserError(f"train.monitor: task {cfg.task!r} has {len(t.indices)} labelled records in split "
                        f"{cfg.split!r}; the monitor needs at least 4")
    codes = patient_codes(cache)
    strata = None if t.task_type == "regression" else t.y
    if cfg.n_records < len(t.indices):
        keep = label_fraction(strata, codes[t.indices], cfg.n_records / len(t.indices), seed)
        t = Targets(t.indices[keep], t.y[keep], t.names, t.task_type, 0)
    strata = None if t.task_type == "regression" else t.y
    test = label_fraction(strata, codes[t.indices], cfg.test_frac, seed + 1)
    train = np.setdiff1d(np.arange(len(t.indices)), test)
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"train.monitor: {len(t.indices)} records cannot be split into a probe-train and a "
                        f"probe-test part by patient; raise n_records")
    strata_tr = None if strata is None else strata[train]
    trains = {f: train[label_fraction(strata_tr, codes[t.indices[train]], f, seed + 2)] for f in cfg.label_fractions}
    for f, pos in trains.items():
        classes = TrainingClasses.of(t.task_type, t.y[pos], t.names)
        if classes is not None and not classes.learnable:
            raise UserError(f"train.monitor: task {cfg.task!r} on split {cfg.split!r}: the probe-train part at "
                            f"label fraction {f:g} holds {classes.counts()}; a probe learns nothing from one "
                            "class: raise n_records or label_fractions, or pick a split with more classes")
    return t, trains, test


def draw_subset(cfg: MonitorConfig, cache: Cache, split_indices: np.ndarray, window: int, stride: int,
                seed: int) -> MonitorSubset:
    """`draw_positions`, with the records' windows tiled and stacked for the probe's embeddings."""
    t, trains, test = draw_positions(cfg, cache, split_indices, seed)
    tiles = TiledWindows(cache, t.indices, window, stride)
    x = torch.stack([tiles[k]["x"] for k in range(len(tiles))]).float()
    return MonitorSubset(x, tiles.record_of, t, trains, test)


class OnlineMonitor:
    """Scores the encoder on the fixed subset; ``check(encoder, step)`` -> the metrics row's monitor keys."""

    def __init__(self, cfg: MonitorConfig, subset: MonitorSubset, device: torch.device, seed: int,
                 batch_size: int = 256) -> None:
        self.cfg, self.subset, self.device, self.seed = cfg, subset, device, seed
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, encoder: nn.Module) -> np.ndarray:
        """``(n_records, D)`` per-record embeddings of the subset (encoder in eval mode, its mode restored)."""
        enc = getattr(encoder, "_orig_mod", encoder)  # a compiled encoder: its module, no recompilation
        was_training = enc.training
        enc.eval()
        try:
            out = [enc(self.subset.x[i : i + self.batch_size].to(self.device)).float().cpu()
                   for i in range(0, len(self.subset.x), self.batch_size)]
        finally:
            enc.train(was_training)
        z = torch.cat(out).numpy()
        return per_record(z, self.subset.record_of, len(self.subset.targets.indices))

    def score(self, z: np.ndarray) -> dict[str, float]:
        """Each probe's primary metric on the probe-test records from per-record embeddings ``z (n, D)``."""
        s, t, cfg = self.subset, self.subset.targets, self.cfg
        n_classes = len(t.names)
        metric = PRIMARY[t.task_type]
        out: dict[str, float] = {}
        for probe in cfg.probes:
            for fraction, train in s.train.items():
                if probe == "knn":
                    scores = knn_scores(z[train], t.y[train], z[s.test], cfg.k, t.task_type, n_classes)
                else:
                    head = fit_linear_head(z[train], t.y[train], t.task_type, 1 if t.task_type == "regression"
                                           else n_classes, epochs=cfg.linear_epochs, lr=cfg.linear_lr, seed=self.seed)
                    scores = head.scores(z[s.test])
                value = primary_score(t.task_type, t.y[s.test], scores, t.names)
                # primary_score is higher-better (-MAE for regression): log the metric itself.
                out[monitor_key(probe, fraction, cfg.task, metric)] = -value if t.task_type == "regression" else value
        return out

    def measure(self, encoder: nn.Module) -> dict[str, float]:
        """Probe scores and ``monitor/embed/std``, ``monitor/embed/erank`` (the collapse statistics of the subset's
        per-record embeddings, in eval mode: also for objectives whose training batches log none)."""
        z = self.embed(encoder)
        stats = embedding_stats(torch.from_numpy(z))
        return {**self.score(z), **{f"monitor/{k}": v for k, v in stats.items()}}

    def check(self, encoder: nn.Module, step: int) -> dict[str, float]:
        """The monitor keys of ``encoder`` at ``step``; the training's RNG states untouched."""
        with rng_preserved():
            return self.measure(encoder)

    def reference(self, build_encoder: Callable[[], nn.Module]) -> dict[str, float]:
        """The same keys with ``/random`` for a freshly built encoder (``build_encoder()`` after seeding torch
        with the run's seed, as the evaluations' random init of that seed; the global RNGs restored)."""
        with rng_preserved():
            torch.manual_seed(self.seed)
            fresh = build_encoder().to(self.device)
            return {f"{k}/random": v for k, v in self.measure(fresh).items()}
