"""The quickstart's synthetic cache build (800 records of 200 patients), quiet and beside CPU-bound processes.

Usage: ``python benchmarks/bench_synthetic_cache.py [--before DIR] [--repeats 3] [--busy 2]``.

Each measurement is a fresh process doing what ``ecgforge cache build recipes/caches/synthetic.toml`` does into an
empty folder, in two phases: generating the 800 WFDB records (``synthetic.generate``: a pool of spawned processes,
or in-process) and caching them (``build_cache`` with the folder present: forked reader processes, or
in-process). Its wall and CPU seconds (its own and its children's) are printed per phase, for this checkout's
defaults (on 2 cores: 2 generating processes, 2 readers), this checkout with neither pool, and (``--before DIR``: an earlier checkout's ``ecgforge``
package, e.g. ``git archive main ecgforge | tar -x -C DIR``) the earlier code's defaults, interleaved, on the
machine as it is and beside ``--busy`` processes that spin on the CPU (as a second job on a laptop would). The
median of ``--repeats`` measurements is shown; the machine's 1-minute load average is printed with each table.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
#: (label, generation processes, reader processes) of this checkout; 0 = as ecgforge chooses by itself.
CONFIGS = [("this checkout, default", 0, 0), ("this checkout, in-process (1 + 1)", 1, 1)]


def cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def one(gen_workers: int, read_workers: int, folder: str) -> None:
    """In a fresh process: both phases into ``folder``; prints one JSON line of wall / CPU seconds."""
    from ecgforge.data.cache_build import build_cache
    from ecgforge.data.cache_spec import load_cache_recipe
    from ecgforge.data.sources.synthetic import generate

    spec = load_cache_recipe(ROOT / "recipes" / "caches" / "synthetic.toml",
                             [f'source.path="{folder}/wfdb"', f'out="{folder}/synthetic.h5"'])
    s = spec.source
    t0, c0 = time.perf_counter(), cpu_s()
    generate(s.path, n_patients=s.n_patients, records_per_patient=s.records_per_patient, duration_s=s.duration_s,
             fs_hz=s.fs_hz, seed=s.seed, workers=gen_workers)
    t1, c1 = time.perf_counter(), cpu_s()
    summary = build_cache(spec, workers=read_workers or None)
    t2, c2 = time.perf_counter(), cpu_s()
    print(json.dumps({"generate_s": t1 - t0, "generate_cpu_s": c1 - c0, "cache_s": t2 - t1, "cache_cpu_s": c2 - c1,
                      "records": summary.n_records}))


def measure(gen_workers: int, read_workers: int, code: Path = ROOT) -> dict[str, float]:
    """One build by a fresh process importing ``ecgforge`` from ``code``."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "one", str(gen_workers), str(read_workers), d],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"})
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["process_s"] = time.perf_counter() - t0  # interpreter start-up and imports included
        return out


def table(title: str, results: dict[str, list[dict[str, float]]]) -> Table:
    t = Table(title=f"{title} (1-min load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    for col in ("configuration", "generate s (CPU s)", "cache s (CPU s)", "whole process s"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        t.add_row(label, f"{med['generate_s']:.1f} ({med['generate_cpu_s']:.1f})",
                  f"{med['cache_s']:.1f} ({med['cache_cpu_s']:.1f})", f"{med['process_s']:.1f}")
    return t


def main(before: Path | None = typer.Option(None, help="an earlier checkout (its ecgforge package) to compare"),
         repeats: int = typer.Option(3, min=1), busy: int = typer.Option(2, min=1, help="CPU-bound processes")) -> None:
    console = Console()
    console.print(f"{time.strftime('%Y-%m-%d %H:%M')}, {sys.executable}, records 800")
    configs = [(label, g, r, ROOT) for label, g, r in CONFIGS]
    if before is not None:
        configs.insert(0, (f"before ({before}), default", 0, 0, before.resolve()))
    for loaded in (False, True):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy if loaded else 0)]
        try:
            results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in configs}
            for _ in range(repeats):  # interleaved: drifting load hits every configuration alike
                for label, g, r, code in configs:
                    results[label].append(measure(g, r, code))
        finally:
            for p in spinners:
                p.kill()
                p.wait()
        console.print(table(f"beside {busy} CPU-bound processes" if loaded else "as the machine is", results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        one(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        typer.run(main)
