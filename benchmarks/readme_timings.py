"""The timings README.md quotes for its first block: the install, and ``ecgforge run recipes/quickstart.toml``
(its cache build, pretraining and evaluation), measured as a new user meets them.

Usage: ``python benchmarks/readme_timings.py [--keep DIR]``.

In a fresh copy of the project (``tests/readme_blocks.fresh_copy``) the README's first shell block runs as
written, in two timed parts: everything before ``&& ecgforge run`` (the virtual environment and the install),
then the quickstart. Printed: the date, the machine (CPU model, cores, memory, the 1-minute load average before
and after), the wall time of each part, the run's CPU seconds, and the run's own account of its cache build
(its console line), pretraining and evaluation (results.json), then the sentence for the README.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.readme_blocks import clean_env, fresh_copy, shell_blocks  # noqa: E402


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB"


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(script: str, cwd: Path, env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    t0, c0 = time.perf_counter(), children_cpu_s()
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"failed (exit {proc.returncode}): {script}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, children_cpu_s() - c0, proc


def main() -> None:
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    first = shell_blocks()[0].text.strip()
    install, sep, run = first.partition(" && ecgforge run ")
    if not sep or "\n" in first:
        sys.exit(f"README's first block is not `INSTALL && ecgforge run RECIPE` on one line: {first!r}")
    where = keep or Path(tempfile.mkdtemp(prefix="readme-timings-"))
    fresh = fresh_copy(where / "ecgforge")
    env = clean_env()
    load0 = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {machine()}; 1-min load average {load0:.1f} at the start; "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}; fresh copy {fresh}")
    install_s, _, _ = timed(install, fresh, env)
    print(f"install ({install}): {install_s:.0f} s")
    run_s, run_cpu, proc = timed(f". .venv/bin/activate && ecgforge run {run}", fresh, env)
    results = json.loads((fresh / "runs" / "quickstart" / "results.json").read_text())
    m = re.search(r"cache \S+: \d+ records, \d+ skipped, ([\d.]+) s", " ".join(proc.stderr.split()))
    cache_s = float(m.group(1)) if m else float("nan")
    pre, ev = results["pretrain_seconds"], results["eval_seconds"]
    print(f"ecgforge run {run}: {run_s:.0f} s wall, {run_cpu:.0f} s CPU; cache {cache_s:.1f} s, pretraining "
          f"{pre:.0f} s ({results['pretraining']['steps']} steps), evaluation {ev:.0f} s")
    print(f"1-min load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"README: the install took {int(install_s // 60)} min {install_s % 60:.0f} s on {time.strftime('%Y-%m-%d')}; "
          f"the run {run_s:.0f} s, of which the synthetic cache {cache_s:.1f} s, pretraining {pre:.0f} s and the "
          f"evaluation {ev:.0f} s")
    print("last lines of the run:\n" + "\n".join(proc.stdout.strip().splitlines()[-2:]))


if __name__ == "__main__":
    main()
