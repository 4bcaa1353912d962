"""Cache build at scale: records/s and peak memory at two (or more) sizes side by side, and the projected time
for 800,000 records at 500 Hz.

Usage: ``python benchmarks/bench_cache_scale.py [--sizes 10000,200000] [--duration-s 10] [--fs-hz 500]
[--workers 2] [--work DIR]``.

Each size runs in a fresh Python process: the synthetic source first writes its WFDB records (not timed), then
``build_cache`` streams the listing into the reader processes (timed by the build's own clock). Reported: records
per second, samples per second, the build process's peak resident set (``VmHWM``, measured from the start of the
build by resetting it) and the largest reader's (``RUSAGE_CHILDREN``). Flat memory and flat records/s across
sizes is what a streaming build must show. The projection for 800,000 records scales the largest size's samples
per second to 800,000 x 10 s x 500 Hz.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.sources.synthetic import SyntheticSource
n, duration, fs, workers, work = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
src = {"kind": "synthetic", "path": f"{work}/wfdb-{n}", "n_patients": n // 4, "records_per_patient": 4,
       "duration_s": duration, "fs_hz": fs, "label_sets": ["rhythm"]}
SyntheticSource(**{k: v for k, v in src.items() if k != "kind"}).records()  # writes the WFDB records once: not timed
spec = CacheRecipe.model_validate({"name": f"scale{n}", "out": f"{work}/c{n}.h5", "source": src,
                                   "signal": {"fs_hz": fs}})
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak of the build itself
summary = build_cache(spec, workers=workers)
hwm = [int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM")][0]
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
os.unlink(spec.out)
print(json.dumps({"n": n, "stored": summary.n_records, "seconds": summary.seconds, "parent_mib": hwm / 1024,
                  "reader_mib": kids / 1024, "samples": summary.n_records * duration * fs}))
"""


def main(sizes: str = "10000,200000", duration_s: float = 10.0, fs_hz: float = 500.0, workers: int = 2,
         work: Path | None = None) -> None:
    rows = []
    with tempfile.TemporaryDirectory(dir=work) as d:
        for n in (int(x) for x in sizes.split(",")):
            proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(duration_s), str(fs_hz), str(workers), d],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'records':>9} {'records/s':>10} {'Msamples/s':>11} {'build MiB':>10} {'reader MiB':>11}")
    for r in rows:
        print(f"{r['n']:>9} {r['stored'] / r['seconds']:>10.1f} {r['samples'] / r['seconds'] / 1e6:>11.2f} "
              f"{r['parent_mib']:>10.0f} {r['reader_mib']:>11.0f}")
    last = rows[-1]
    rate = last["samples"] / last["seconds"]
    hours = 800_000 * 10 * 500 / rate / 3600
    print(f"projected: 800,000 records x 10 s at 500 Hz with {workers} readers: {hours:.1f} h on this machine")


if __name__ == "__main__":
    typer.run(main)
