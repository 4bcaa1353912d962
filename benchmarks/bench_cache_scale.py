"""Cache build at scale: records/s and peak memory at several sizes side by side, and the projected time for
800,000 records at 500 Hz.

Usage: ``python benchmarks/bench_cache_scale.py [--runs 10000:500:2.5,200000:500:2.5,10000:500] [--pool PATH]
[--workers 2] [--work DIR]``.

The records are real ones replicated on local disk: every ``*.hea`` of ``--pool`` (default PTB-XL's
records500: 10 s, 12 leads, 500 Hz) is written again under a new name, in folders of 1,000 records, its
signal file a hard link to the original (no copy of the samples, a file of its own name). A build of each run
``N:FS[:S]`` (N records stored at FS Hz, each cut to its first S seconds by ``signal.max_duration_s``: every
record is still read and decoded in full; the cut keeps 200,000 records' cache within a shared disk) lists that tree with the ``wfdb_folder`` source, streaming, and runs in a
fresh Python process, timed by the build's own clock (listing, reading, resampling, writing, fsync). Reported
per run: records/s, input samples/s (at 500 Hz), the build process's peak resident set (``VmHWM``, reset just
before the build, so the imports' own peak does not count) and the largest reader's (``RUSAGE_CHILDREN``).
Flat records/s and flat peak memory across sizes at one FS is what a streaming build must show; the parent's
growth per record is the difference of its peaks over the difference of the sizes.
The projection for 800,000 full records at 500 Hz uses the rate of the largest run stored in full at 500 Hz,
times the ratio of the largest run's rate to that of the run of the same size and settings as the full one
(where there is one; else the full run's rate as it is).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys
from pathlib import Path
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
tree, out, fs, workers = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
cut = float(sys.argv[5]) if sys.argv[5] != "full" else None
spec = CacheRecipe.model_validate({"name": "scale", "out": out, "source": {"kind": "wfdb_folder", "path": tree},
                                   "signal": {"fs_hz": fs, "max_duration_s": cut}})
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak of the build itself
summary = build_cache(spec, workers=workers)
hwm = [int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM")][0]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
size = os.path.getsize(out)
os.unlink(out)
print(json.dumps({"stored": summary.n_records, "skipped": summary.n_skipped, "seconds": summary.seconds,
                  "parent_mib": hwm / 1024, "reader_mib": kids / 1024, "cache_gb": size / 1e9}))
"""


def replicate(pool: Path, tree: Path, n: int) -> tuple[float, int]:
    """Write ``n`` records under ``tree`` (``dNNNN/rNNNNNNNN``) cycling through the records of ``pool``: a new
    header naming the record and its signal file, and the signal file hard-linked (symlinked across file
    systems). Returns (the pool's sampling rate, its samples per record) of the first record."""
    heads = sorted(pool.rglob("*.hea"))
    if not heads:
        raise SystemExit(f"--pool: no .hea under {pool}")
    texts = [(h, h.read_text()) for h in heads]
    first = texts[0][1].split("\n", 1)[0].split()
    for i in range(n):
        hea, text = texts[i % len(texts)]
        name = f"r{i:08d}"
        folder = tree / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        old = text.split(maxsplit=1)[0]
        dat = hea.with_suffix(".dat")
        header = re.sub(rf"^{re.escape(old)}(\.dat)?\b", name + r"\1", text, flags=re.MULTILINE)
        (folder / f"{name}.hea").write_text(header)
        try:
            os.link(dat, folder / f"{name}.dat")
        except OSError:
            os.symlink(dat.resolve(), folder / f"{name}.dat")
    return float(first[2]), int(first[3])


def main(runs: str = "10000:500:2.5,200000:500:2.5,10000:500", pool: Path = ROOT.parent / "shared/data/ptb-xl/records500",
         workers: int = 2, work: Path | None = None) -> None:
    plan = [(int(p[0]), float(p[1]), p[2] if len(p) > 2 else "full") for p in (r.split(":") for r in runs.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(dir=work, prefix="ecgforge-scale-") as d:
        trees: dict[int, Path] = {}
        for n, fs, cut in plan:
            if n not in trees:
                t0 = time.perf_counter()
                trees[n] = Path(d) / f"tree{n}"
                in_fs, in_len = replicate(pool, trees[n], n)
                print(f"replicated {n} records in {time.perf_counter() - t0:.0f} s (not timed)", file=sys.stderr,
                      flush=True)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(trees[n]), f"{d}/c.h5", str(fs), str(workers), cut],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"run {n}:{fs:g}:{cut} failed:\n{proc.stderr[-3000:]}")
            row = {"n": n, "fs": fs, "cut": cut, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"input: {pool} replicated ({in_fs:g} Hz, {in_len} samples per record); {workers} readers")
    print(f"{'records':>9} {'stored Hz':>9} {'stored s':>8} {'records/s':>10} {'Msamples/s':>11} {'build MiB':>10} "
          f"{'reader MiB':>11} {'cache GB':>9}")
    for r in rows:
        rate = r["stored"] / r["seconds"]
        print(f"{r['n']:>9} {r['fs']:>9g} {r['cut']:>8} {rate:>10.1f} {rate * in_len / 1e6:>11.2f} "
              f"{r['parent_mib']:>10.0f} {r['reader_mib']:>11.0f} {r['cache_gb']:>9.2f}")
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["fs"], r["cut"]), []).append(r)
    for (fs, cut), group in groups.items():
        if len(group) > 1:
            lo, hi = min(group, key=lambda r: r["n"]), max(group, key=lambda r: r["n"])
            growth = (hi["parent_mib"] - lo["parent_mib"]) * 2**20 / (hi["n"] - lo["n"])
            print(f"stored at {fs:g} Hz, {cut} s: build process peak {lo['parent_mib']:.0f} -> {hi['parent_mib']:.0f} "
                  f"MiB from {lo['n']} to {hi['n']} records ({growth:+.0f} bytes per record); records/s "
                  f"{lo['stored'] / lo['seconds']:.0f} -> {hi['stored'] / hi['seconds']:.0f}")
    full = [r for r in rows if r["fs"] == 500 and r["cut"] == "full"]
    if full:
        best = max(full, key=lambda r: r["n"])
        rate = best["stored"] / best["seconds"]
        largest = max(rows, key=lambda r: r["n"])
        same = [r for r in rows if r["n"] == best["n"] and (r["fs"], r["cut"]) == (largest["fs"], largest["cut"])]
        if largest is not best and same:  # how the rate holds up from this size to the largest one
            rate *= (largest["stored"] / largest["seconds"]) / (same[0]["stored"] / same[0]["seconds"])
        hours = 800_000 / rate / 3600
        print(f"projected: 800,000 records of {in_len / in_fs:g} s at {in_fs:g} Hz stored in full at 500 Hz with "
              f"{workers} readers: {hours:.1f} h on this machine ({800_000 * in_len * 12 * 2 / 1e9:.0f} GB of cache)")


if __name__ == "__main__":
    typer.run(main)
