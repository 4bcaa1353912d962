"""Training-window throughput: the cache through ecgforge's training path vs random crops of a numpy memmap.

Usage: ``python benchmarks/bench_cache_windows.py [--data ../shared/data/ptb-xl] [--workers 2] [--epochs 8] [--in-memory]``.

Builds the PTB-XL records100 cache (100 Hz, 10 s) in a temporary folder and writes the same signals as a
``(N, 12, 1000)`` float32 mV ``np.memmap`` beside it (the plainest fast format for fixed-length records).
Both loaders draw 2.5 s crops (250 samples) with the record's superdiagnostic multi-hot labels, batch 256,
the same number of DataLoader worker processes, persistent workers, each over every record once per epoch:

- cache: exactly what ``Trainer.setup`` builds: ``RandomWindows`` (per-item ``default_rng((seed, epoch, k))``,
  ``x``, ``lead_mask``, ``patient``, ``record``, ``y``) over a ``Cache`` read with ``os.pread``, the runner's
  ``EpochSampler`` and ``collate_windows``;
- memmap: a minimal ``Dataset`` returning ``(x, y)`` tensors, a crop start from a per-worker generator,
  PyTorch's default sampler and collate.

Workers are persistent, so worker start-up is not timed (the runner restarts them each epoch, the same
fixed cost for any dataset); a persistent worker keeps the crops of its first epoch, which changes nothing
here (``RandomWindows`` draws a whole epoch's starts once per worker and epoch: about 0.2 ms). One untimed
warm-up epoch per loader (page cache, worker start), then the epochs alternate between the loaders so that
drift in machine load affects each alike; the median epoch rate of each is reported.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.dataset import RandomWindows
from ecgforge.data.dataset import collate_windows as collate
from ecgforge.data.splits import select, task_targets
from ecgforge.train.loop import EpochSampler

ROOT = Path(__file__).resolve().parents[1]


class MemmapCrops(Dataset):
    """Random ``window``-sample crops of ``signals (N, leads, T)`` float32 with labels ``y (N, C)``."""

    def __init__(self, path: Path, shape: tuple[int, int, int], y: np.ndarray, window: int) -> None:
        self.path, self.shape, self.y, self.window = path, shape, y, window
        self.signals: np.memmap | None = None  # opened in each worker
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.signals is None or self.rng is None:
            self.signals = np.memmap(self.path, dtype=np.float32, mode="r", shape=self.shape)
            self.rng = np.random.default_rng(torch.initial_seed() % 2**32)
        start = int(self.rng.integers(0, self.shape[2] - self.window + 1))
        x = np.array(self.signals[i, :, start : start + self.window])
        return torch.from_numpy(x), torch.from_numpy(self.y[i])


def epoch_rate(loader: DataLoader) -> float:
    """Windows per second over one full pass of the loader."""
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        n += len(batch["x"] if isinstance(batch, dict) else batch[0])
    return n / (time.perf_counter() - t0)


def main(
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "ptb-xl", help="PTB-XL root"),
    workers: int = typer.Option(2, min=0, help="DataLoader worker processes (both loaders)"),
    batch_size: int = typer.Option(256, min=1),
    window_s: float = typer.Option(2.5, min=0.01),
    epochs: int = typer.Option(8, min=1, help="timed epochs per loader"),
    in_memory: bool = typer.Option(False, help="also time the cache with in_memory=True"),
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-windows-") as tmp:
        spec = CacheRecipe.model_validate({
            "name": "bench-ptbxl", "out": str(Path(tmp) / "ptbxl.h5"),
            "source": {"kind": "ptbxl", "path": str(data), "label_sets": ["superdiagnostic"]},
            "signal": {"fs_hz": 100}})
        cache = Cache(build_cache(spec).path)
        targets = task_targets(cache, "superdiagnostic", select(cache, {}), task_type="multilabel")
        window = int(round(window_s * cache.fs_hz))

        # The memmap holds the same records (those with a label), as float32 mV (leads, T).
        n_rec, n_samples = len(targets.indices), int(cache.lengths[targets.indices].max())
        if (cache.lengths[targets.indices] != n_samples).any():
            raise SystemExit("the memmap baseline needs fixed-length records")
        mm_path = Path(tmp) / "signals.f32"
        mm = np.memmap(mm_path, dtype=np.float32, mode="w+", shape=(n_rec, cache.n_leads, n_samples))
        for row, i in enumerate(targets.indices):
            mm[row] = cache.read(int(i))
        mm.flush()
        del mm

        common = dict(batch_size=batch_size, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0)
        loaders: dict[str, DataLoader] = {}
        ds = RandomWindows(cache, targets.indices, window, seed=0, targets=targets)
        loaders["cache (RandomWindows, pread)"] = DataLoader(
            ds, sampler=EpochSampler(len(ds), 0), collate_fn=collate, **common)  # type: ignore[arg-type]
        if in_memory:
            ds_mem = RandomWindows(Cache(cache.path, in_memory=True), targets.indices, window, targets=targets)
            loaders["cache (RandomWindows, in_memory)"] = DataLoader(
                ds_mem, sampler=EpochSampler(len(ds_mem), 0), collate_fn=collate, **common)  # type: ignore[arg-type]
        mm_ds = MemmapCrops(mm_path, (n_rec, cache.n_leads, n_samples), targets.y, window)
        loaders["numpy memmap (baseline)"] = DataLoader(mm_ds, shuffle=True, **common)  # type: ignore[arg-type]

        for loader in loaders.values():  # warm-up: worker start, page cache
            epoch_rate(loader)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for epoch in range(epochs):
            for name in list(loaders) if epoch % 2 else list(reversed(loaders)):
                rates[name].append(epoch_rate(loaders[name]))

    base = statistics.median(rates["numpy memmap (baseline)"])
    table = Table(title=f"PTB-XL 100 Hz: {window}-sample crops + labels, batch {batch_size}, {workers} workers, "
                        f"{len(ds) // batch_size * batch_size} windows/epoch, {os.cpu_count()} CPU cores")
    for col in ("loader", "windows/s (median)", "min - max", "vs memmap"):
        table.add_column(col, justify="left" if col == "loader" else "right")
    for name, rs in rates.items():
        med = statistics.median(rs)
        table.add_row(name, f"{med:,.0f}", f"{min(rs):,.0f} - {max(rs):,.0f}", f"{med / base:.2f}x")
    table.caption = "target: cache >= 0.8x memmap"
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
