"""Read throughput: ``wfdb.rdrecord`` in a plain loop vs ``ecgforge.data.wfdb_io.read_record``.

Usage: ``python benchmarks/bench_read.py [--n 2000] [--data ../shared/data/ptb-xl]``. Reads the first N
PTB-XL records100 records (format 16, 12 x 1000 samples) with each reader in the same run, after one
untimed warm-up pass so that both see the same (warm) page cache, and prints records/s and the ratio.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
import wfdb
from rich.console import Console
from rich.table import Table

from ecgforge.data.wfdb_io import read_record

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, paths: list[str]) -> float:
    """Seconds to call ``fn`` on every path once."""
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return time.perf_counter() - t0


def main(
    n: int = typer.Option(2000, min=1, help="records to read with each reader"),
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "ptb-xl", help="PTB-XL root"),
    repeats: int = typer.Option(3, min=1, help="timed passes per reader; the best is reported"),
) -> None:
    paths = sorted(str(h.with_suffix("")) for h in (data / "records100").glob("*/*.hea"))[:n]
    if not paths:
        raise typer.BadParameter(f"no records100 headers under {data}")

    # Warm-up and a correctness check on the first record: same physical values as wfdb (float32).
    ref = wfdb.rdrecord(paths[0]).p_signal.T.astype(np.float32)
    if not np.array_equal(read_record(paths[0]).data, ref, equal_nan=True):
        raise SystemExit(f"readers disagree on {paths[0]}")
    for p in paths:
        Path(p + ".dat").read_bytes()

    def wfdb_read(p: str) -> None:
        wfdb.rdrecord(p)

    def ours(p: str) -> None:
        read_record(p)

    # Interleave the passes so that drift in machine load affects both readers alike.
    best = {"wfdb.rdrecord": float("inf"), "wfdb_io.read_record": float("inf")}
    for _ in range(repeats):
        best["wfdb.rdrecord"] = min(best["wfdb.rdrecord"], _time(wfdb_read, paths))
        best["wfdb_io.read_record"] = min(best["wfdb_io.read_record"], _time(ours, paths))

    table = Table(title=f"PTB-XL records100: {len(paths)} records, best of {repeats}")
    table.add_column("reader")
    table.add_column("seconds", justify="right")
    table.add_column("records/s", justify="right")
    for name, sec in best.items():
        table.add_row(name, f"{sec:.3f}", f"{len(paths) / sec:,.0f}")
    ratio = best["wfdb.rdrecord"] / best["wfdb_io.read_record"]
    table.caption = f"speed-up: {ratio:.1f}x"
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
