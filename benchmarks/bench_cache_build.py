"""Cache build throughput: a full ``build_cache`` of PTB-XL records100 vs a plain ``wfdb.rdrecord`` loop.

Usage: ``python benchmarks/bench_cache_build.py [--data ../shared/data/ptb-xl] [--baseline-n 0] [--workers 0]``.

Both sides run in this one process, on the same records, after one untimed pass that reads every ``.hea``
and ``.dat`` so that both see a warm page cache (its rate is printed too: the ceiling set by the disk).
The build is timed from the call to the renamed, complete file: listing ``ptbxl_database.csv``, reading,
checking, quantising every record in the worker pool, and writing the HDF5 file, exactly as
``ecgforge cache build recipes/caches/ptbxl.toml`` does (minus interpreter start-up and the progress bar).
The order is build, first half of the rdrecord loop, build, second half, build; the best build and the
better half of the loop are reported, so that drift in machine load affects both sides alike.
``--baseline-n`` times the rdrecord loop on the first N records only (0: all of them).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import typer
import wfdb
from rich.console import Console
from rich.table import Table

from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe

ROOT = Path(__file__).resolve().parents[1]


def cpu_s() -> float:
    """User + system CPU seconds of this process and of its terminated children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "ptb-xl", help="PTB-XL root"),
    baseline_n: int = typer.Option(0, min=0, help="records for the rdrecord loop (0: all)"),
    workers: int = typer.Option(0, min=0, help="build worker processes (0: one per CPU core)"),
) -> None:
    spec = CacheRecipe.model_validate({
        "name": "bench-ptbxl", "out": "unused.h5",
        "source": {"kind": "ptbxl", "path": str(data), "records": "records100",
                   "label_sets": ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]},
        "signal": {"fs_hz": 100},
    })
    heads = sorted((data / "records100").glob("*/*.hea"))
    if not heads:
        raise typer.BadParameter(f"no records100 headers under {data}")
    paths = [str(h.with_suffix("")) for h in heads]

    t0 = time.perf_counter()
    for p in paths:  # warm the page cache; also the raw-bytes ceiling
        Path(p + ".hea").read_bytes()
        Path(p + ".dat").read_bytes()
    raw_s = time.perf_counter() - t0

    baseline = paths[: baseline_n or None]
    halves = [baseline[: len(baseline) // 2], baseline[len(baseline) // 2 :]]
    builds: list[float] = []
    rd_rates: list[float] = []
    build_cpu: list[float] = []  # CPU seconds of this process and its (reaped) workers, per build
    rd_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        def build() -> int:
            # A new path each time: replacing the previous build's file would add the deletion of 160 MB to
            # the timing, which belongs to neither side.
            out = Path(tmp) / f"ptbxl-{len(builds)}.h5"
            c0, t = cpu_s(), time.perf_counter()
            summary = build_cache(spec, out, workers=workers or None)
            builds.append(time.perf_counter() - t)
            build_cpu.append(cpu_s() - c0)
            return summary.n_records

        n_built = build()
        for half in halves:  # build, rdrecord half, build, rdrecord half, build: load drift hits both
            c0, t0 = cpu_s(), time.perf_counter()
            for p in half:
                wfdb.rdrecord(p)
            rd_rates.append(len(half) / (time.perf_counter() - t0))
            rd_cpu.append(cpu_s() - c0)
            build()
        size_mb = (Path(tmp) / "ptbxl-0.h5").stat().st_size / 1e6

    rd_rate, build_rate = max(rd_rates), n_built / min(builds)
    table = Table(title=f"PTB-XL records100 -> HDF5 cache ({size_mb:.0f} MB), {os.cpu_count()} CPU cores")
    for col, justify in (("what", "left"), ("records", "right"), ("seconds", "right"), ("records/s", "right"),
                         ("CPU ms/record", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_row("read raw .hea + .dat bytes (ceiling)", f"{len(paths)}", f"{raw_s:.2f}", f"{len(paths) / raw_s:,.0f}", "")
    best_half = halves[rd_rates.index(rd_rate)]
    table.add_row(f"wfdb.rdrecord loop, better half ({', '.join(f'{r:,.0f}' for r in rd_rates)} records/s)",
                  f"{len(best_half)}", f"{len(best_half) / rd_rate:.2f}", f"{rd_rate:,.0f}",
                  f"{rd_cpu[rd_rates.index(rd_rate)] / len(best_half) * 1e3:.3f}")
    table.add_row(f"build_cache, best of {len(builds)} ({', '.join(f'{b:.2f}' for b in builds)} s)",
                  f"{n_built}", f"{min(builds):.2f}", f"{build_rate:,.0f}",
                  f"{build_cpu[builds.index(min(builds))] / n_built * 1e3:.3f}")
    table.caption = f"build / rdrecord: {build_rate / rd_rate:.1f}x (target >= 20x)"
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
