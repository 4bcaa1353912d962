"""Embedding throughput of the foundation-model encoders on this machine: records per second.

    OMP_NUM_THREADS=1 python benchmarks/bench_foundation_embed.py [--batch 16] [--records 32] [--threads 1]

A record is 10 s of 12-lead ECG at the model's sampling rate (random weights at the released size; the numbers
do not depend on the weights). Per record: the contract's record-scope steps (``prepare_record``), the windows
the contract cuts (ECGFounder, MERL, ECG-JEPA: one 10 s window; ST-MEM: three 9 s crops; HuBERT-ECG: two 5 s
windows), the window-scope filters (``prepare_window``), then the encoder's forward in eval mode without
gradients (lead selection, scaling, the network, pooling) and the mean over the record's windows. One batch is
run first to warm up; the rest is timed. The first row, timed in the same run, is ecgforge's default ``resnet1d``
(depth 18, width 64) on the same 10 s records at 500 Hz without preprocessing, so that a slower machine or a
busier one shows as a lower baseline too.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import torch

from ecgforge.encoders import ENCODERS

MODELS = ["resnet1d", "ecgfounder", "merl_resnet", "st_mem", "ecg_jepa", "hubert_ecg"]


def windows_of(record: np.ndarray, window: int, n: int) -> np.ndarray:
    """``n`` equally spaced windows of ``window`` samples from ``record (12, T)`` -> ``(n, 12, window)``."""
    t = record.shape[-1]
    starts = [0] if n == 1 else np.linspace(0, t - window, n).astype(int)
    return np.stack([record[:, s : s + window] for s in starts])


def bench(kind: str, batch: int, records: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = ENCODERS[kind](ENCODERS.config(kind)(), None).eval()
    c = getattr(model, "contract", None)
    if c is None:  # the baseline: an ecgforge encoder on the raw 10 s, 500 Hz record
        data = torch.randn(records + batch, 12, 5000)
        with torch.no_grad():
            model(data[:batch])
            start = time.perf_counter()
            for i in range(batch, batch + records, batch):
                model(data[i : i + batch])
        return {"records_per_s": records / (time.perf_counter() - start), "windows_per_record": 1,
                "embed_dim": model.embed_dim}
    t = round(10 * c.fs_hz)
    n_windows = max(1, round((t - c.window) / (c.stride_s * c.fs_hz)) + 1) if t > c.window else 1
    rng = np.random.default_rng(0)
    data = (0.3 * rng.standard_normal((records + batch, 12, t))).astype(np.float32)

    def run(chunk: np.ndarray) -> torch.Tensor:
        wins = np.concatenate([windows_of(c.prepare_record(r), c.window, n_windows) for r in chunk])
        with torch.no_grad():
            z = model(torch.from_numpy(c.prepare_window(wins)))
        return z.reshape(len(chunk), n_windows, -1).mean(1)

    run(data[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(batch, batch + records, batch):
        run(data[i : i + batch])
    seconds = time.perf_counter() - start
    return {"records_per_s": records / seconds, "windows_per_record": n_windows, "embed_dim": model.embed_dim}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16, help="records per forward batch")
    ap.add_argument("--records", type=int, default=32, help="records timed after one warm-up batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="*", default=MODELS)
    args, _ = ap.parse_known_args()  # `nox -s bench -- ...` passes the same arguments to every script
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs (load average {load:.1f} at "
          f"start), torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} records, "
          f"{args.records} records timed")
    print("| kind | windows / record | embedding | records / s |")
    print("|---|---|---|---|")
    for kind in args.models:
        r = bench(kind, args.batch, args.records)
        print(f"| `{kind}` | {r['windows_per_record']} | {r['embed_dim']} | {r['records_per_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
