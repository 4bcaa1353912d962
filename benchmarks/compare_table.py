"""Markdown table of several runs scored by `compare_runs.py score`, one run paired against the others.

    python benchmarks/compare_table.py --ref adv=runs/x/adv_D simclr=runs/x/simclr 3kg=runs/x/threekg \
        random=runs/x/random --n-boot 1000

Rows: task and label fraction; columns: each run's macro AUROC (mean over probe seeds), then for every other
run the paired difference ref − other with its 95 % interval and p (`compare_runs.compare`: test patients and
probe seeds resampled). Every column uses the probe seeds that all the runs hold. Also writes the rows as JSON next to the reference run (``paired/table_*.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import compare, load_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="name=run_dir of the run paired against every other")
    ap.add_argument("runs", nargs="+", help="name=run_dir")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    ref_name, ref_dir = args.ref.split("=", 1)
    others = [r.split("=", 1) for r in args.runs]
    # Every column on the same probe seeds: those all the runs hold, per task and fraction.
    held = [load_rows(Path(d)) for d in (ref_dir, *(d for _, d in others))]
    common = {k: set.intersection(*(set(h[k]) for h in held)) for k in set.intersection(*(set(h) for h in held))}
    results = {name: {(r["task"], r["fraction"]): r for r in compare(Path(ref_dir), Path(d), args.n_boot, common)}
               for name, d in others}
    keys = sorted(set.intersection(*(set(v) for v in results.values())))
    head = ["task", "labels", ref_name, *(n for n, _ in others), *(f"{ref_name} − {n}" for n, _ in others)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in keys:
        rows = [results[n][key] for n, _ in others]
        n_seeds = len(rows[0]["seeds"])
        cells = [key[0], f"{key[1] * 100:g} % ({n_seeds} seeds)", f"{rows[0]['a']:.3f}",
                 *(f"{r['b']:.3f}" for r in rows)]
        for r in rows:
            lo, hi = r["ci95"]
            mark = "**" if lo > 0 or hi < 0 else ""
            cells.append(f"{mark}{r['delta']:+.3f}{mark} [{lo:+.3f}, {hi:+.3f}] p {r['p']:.3f}")
        print("| " + " | ".join(cells) + " |")
    out = Path(ref_dir) / "paired" / f"table_{ref_name}.json"
    out.write_text(json.dumps({n: list(v.values()) for n, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
