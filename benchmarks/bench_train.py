"""Training throughput: ecgforge's runner vs a minimal hand-written PyTorch loop doing the same work.

Usage::

    python benchmarks/bench_train.py                                  # CPU, resnet1d-18 SimCLR
    python benchmarks/bench_train.py --device cuda --precision bf16 --encoder resnet1d18 --batch-size 256
    python benchmarks/bench_train.py --device cuda --precision bf16 --encoder wav2vec2 --batch-size 64

Both sides train the same SimCLR objective (projection head, NT-Xent, the same augmentation) on the same
encoder config, the same windows of the same cache (``RandomWindows``: random crops of WFDB records written
here with ``wfdb.wrsamp`` and cached through the ``wfdb_folder`` source) with Adam, in this one process, one
after the other, repeated ``--repeats`` times, best of each reported. ecgforge's figure is the runner's own
``samples_per_s`` from ``metrics/train.jsonl`` past the warm-up steps (so it includes its metric averaging,
logging, progress bar and a checkpoint write if one falls in the window); the baseline is timed the same way.

Reported per side: samples/s, the fraction of wall time spent waiting for the next batch, and on CUDA the
model FLOPs utilisation (FLOPs of one training step counted with ``torch.utils.flop_counter`` x steps/s,
over the device's dense bf16 peak, ``--peak-tflops`` or looked up by name).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

ENCODERS: dict[str, dict[str, Any]] = {
    "resnet1d18": {"kind": "resnet1d", "depth": 18, "width": 64},
    # wav2vec 2.0 BASE shape (Baevski et al. 2020) on 1D ECG: 4 strided convs, 12 x 768 transformer.
    "wav2vec2": {"kind": "wav2vec2"},
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}

console = Console(stderr=True)


def make_cache(root: Path, n_records: int, fs_hz: int = 100, duration_s: float = 10.0) -> Path:
    """``n_records`` 12-lead WFDB records (sines + noise, mV) cached at ``fs_hz``; returns the HDF5 path."""
    import wfdb

    from ecgforge.data.cache_build import build_cache
    from ecgforge.data.cache_spec import CacheRecipe
    from ecgforge.data.leads import CANONICAL_LEADS

    folder = root / "wfdb"
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(duration_s * fs_hz)) / fs_hz
    for i in range(n_records):
        rng = np.random.default_rng(i)
        x = np.sin(2 * np.pi * rng.uniform(0.8, 2.5) * t)[None] * rng.uniform(0.2, 1.5, (12, 1))
        x = x + 0.05 * rng.standard_normal((12, t.size))
        wfdb.wrsamp(f"r{i:05d}", fs=fs_hz, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x.T,
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    spec = CacheRecipe.model_validate({"name": "bench", "out": str(root / "bench.h5"),
                                       "source": {"kind": "wfdb_folder", "path": str(folder)},
                                       "signal": {"fs_hz": fs_hz}})
    return build_cache(spec, workers=1).path


def recipe(cache: Path, encoder: dict[str, Any], batch_size: int, steps: int, precision: str, workers: int,
           compile_: bool) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": "bench-train", "seed": 0,
        "data": {"cache": str(cache), "window_s": 2.5, "splits": {"train": {}}, "pretrain_split": "train",
                 "in_memory": True, "num_workers": workers},
        "model": {"encoder": encoder},
        "ssl": {"kind": "simclr", "projector_hidden": 512, "projector_dim": 128,
                "augment": [{"kind": "gaussian_noise", "std_mv": 0.05}]},
        "train": {"epochs": 10**6, "max_steps": steps, "batch_size": batch_size, "precision": precision,
                  "log_every_steps": 1, "checkpoint_every_steps": 10**6, "compile": compile_,
                  "optim": {"encoder": {"kind": "adam", "lr": 1e-3}}},
    }


def rate_from_rows(rows: list[dict[str, Any]], warmup: int) -> tuple[float, float]:
    """Samples/s and data-wait fraction over the logged steps after ``warmup``."""
    timed = rows[warmup:]
    span = timed[-1]["elapsed_s"] - rows[warmup - 1]["elapsed_s"]
    samples = timed[-1]["samples"] - rows[warmup - 1]["samples"]
    # data_wait_frac is per log window (one step each): weight by each window's duration.
    durations = np.diff([rows[warmup - 1]["elapsed_s"], *[r["elapsed_s"] for r in timed]])
    wait_frac = float(np.sum(durations * np.array([r["data_wait_frac"] for r in timed])) / max(span, 1e-9))
    return samples / span, wait_frac


def run_ecgforge(r: dict[str, Any], out: Path, warmup: int) -> tuple[float, float]:
    from ecgforge.app.run import Run
    from ecgforge.recipe import Recipe
    from ecgforge.rundir import read_jsonl

    out.mkdir(parents=True, exist_ok=True)
    Run(Recipe.model_validate(r), out).run()  # what `ecgforge run` does (no [[eval]] here), without the CLI
    return rate_from_rows(read_jsonl(out / "metrics" / "train.jsonl"), warmup)


def run_baseline(r: dict[str, Any], device: str, warmup: int) -> tuple[float, float, float]:
    """The same work in a plain loop: DataLoader -> augment x2 -> encoder -> projector -> NT-Xent -> Adam.

    Returns (samples/s, data-wait fraction, FLOPs per training step)."""
    import torch
    from torch.utils.data import DataLoader

    from ecgforge.data.cache import Cache
    from ecgforge.data.dataset import RandomWindows
    from ecgforge.data.dataset import collate_windows as collate
    from ecgforge.data.splits import select
    from ecgforge.encoders import ENCODERS
    from ecgforge.objectives import OBJECTIVES
    from ecgforge.recipe import Recipe
    from ecgforge.registry import BuildContext, build
    from ecgforge.train.loop import EpochSampler

    rec = Recipe.model_validate(r)
    torch.manual_seed(0)
    cache = Cache(r["data"]["cache"], in_memory=True)
    window = int(round(rec.data.window_s * cache.fs_hz))
    ctx = BuildContext(encoder=build(ENCODERS, rec.model.encoder), fs_hz=cache.fs_hz, window=window,
                       n_leads=cache.n_leads)
    objective = build(OBJECTIVES, rec.ssl, ctx).to(device)
    if rec.train.compile:
        objective.encoder = torch.compile(objective.encoder)
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    ds = RandomWindows(cache, select(cache, {}), window, seed=0)
    loader = DataLoader(ds, batch_size=rec.train.batch_size, sampler=EpochSampler(len(ds), 0), drop_last=True,
                        num_workers=rec.data.num_workers, collate_fn=collate, pin_memory=device == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rec.train.precision)
    steps, done, wait, t0 = rec.train.max_steps, 0, 0.0, 0.0
    flops = 0.0
    while done < steps:
        it = iter(loader)
        while done < steps:
            tw = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if done >= warmup:
                wait += time.perf_counter() - tw
            with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, _ = objective(batch, "encoder")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
    if device == "cuda":
        torch.cuda.synchronize()
    span = time.perf_counter() - t0
    if device == "cuda":  # FLOPs of one training step, counted once, outside the timed part
        from torch.utils.flop_counter import FlopCounterMode

        batch = {k: v.to(device) for k, v in next(iter(loader)).items()}
        with FlopCounterMode(display=False) as fc:
            with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, _ = objective(batch, "encoder")
            loss.backward()
        flops = float(fc.get_total_flops())
        opt.zero_grad(set_to_none=True)
    return (steps - warmup) * rec.train.batch_size / span, wait / span, flops


def main(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    encoder: str = typer.Option("resnet1d18", help=f"one of {sorted(ENCODERS)}"),
    width: int = typer.Option(0, help="resnet1d width override (0: the preset's)"),
    batch_size: int = typer.Option(32, min=1),
    steps: int = typer.Option(30, min=3, help="training steps per measurement"),
    warmup: int = typer.Option(5, min=1, help="untimed first steps"),
    precision: str = typer.Option("no", help="no, bf16 or fp16"),
    workers: int = typer.Option(0, min=0, help="DataLoader workers (both sides)"),
    records: int = typer.Option(512, min=8),
    repeats: int = typer.Option(2, min=1),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the encoder (both sides)"),
    peak_tflops: float = typer.Option(0.0, help="device peak for MFU (default: looked up by device name)"),
) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda: no CUDA device here")
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # Accelerate would otherwise pick a visible GPU
    enc = dict(ENCODERS[encoder])
    if width:
        enc["width"] = width
    with tempfile.TemporaryDirectory() as tmp:
        cache = make_cache(Path(tmp), records)
        r = recipe(cache, enc, batch_size, steps, precision, workers, compile_)
        best: dict[str, tuple[float, float, float]] = {}
        for i in range(repeats):  # interleaved, so that drift in machine load affects both alike
            rate, wait = run_ecgforge(r, Path(tmp) / f"run{i}", warmup)
            if rate > best.get("ecgforge runner", (0, 0, 0))[0]:
                best["ecgforge runner"] = (rate, wait, 0.0)
            b = run_baseline(r, device, warmup)
            if b[0] > best.get("hand-written loop", (0, 0, 0))[0]:
                best["hand-written loop"] = b
    flops_per_step = best["hand-written loop"][2]
    peak = peak_tflops
    if device == "cuda" and not peak:
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0.0)
    title = (f"{encoder} SimCLR, batch {batch_size}, {precision}, {device}"
             f"{' ' + torch.cuda.get_device_name(0) if device == 'cuda' else f' ({torch.get_num_threads()} threads)'}"
             f", best of {repeats} x {steps - warmup} timed steps")
    table = Table(title=title)
    for col in ("loop", "samples/s", "data wait", "MFU"):
        table.add_column(col, justify="left" if col == "loop" else "right")
    result: dict[str, Any] = {"device": device, "encoder": enc, "batch_size": batch_size, "precision": precision}
    for name, (rate, wait, _) in best.items():
        mfu = rate / batch_size * flops_per_step / (peak * 1e12) if peak and flops_per_step else None
        table.add_row(name, f"{rate:,.1f}", f"{100 * wait:.1f} %", f"{100 * mfu:.1f} %" if mfu else "-")
        result[name] = {"samples_per_s": rate, "data_wait_frac": wait, "mfu": mfu}
    ratio = best["ecgforge runner"][0] / best["hand-written loop"][0]
    result["ratio"] = ratio
    Console().print(table)
    Console().print(f"ratio ecgforge / hand-written: {ratio:.3f} (target >= 0.95)")
    print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
