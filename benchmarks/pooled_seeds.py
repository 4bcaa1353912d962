"""Paired differences between two methods pooled over their pretraining seeds.

``ecgforge report A B`` compares two runs, one pretraining seed each. Given several runs per method (the same
recipe pretrained with ``--set seed=N``), this pools them: for each shared row (protocol, task, label fraction,
split, conditions) the metric averaged over every pretraining seed x probe seed of A, minus the same of B, with
the 95 % interval and p of the paired bootstrap over test patients (`evaluation.paired.mean_evidence` and
`compare`: every resample recomputes every row). Each method's runs must hold the same rows, scored on the same
test records. Prints a Markdown table; also each pretraining seed's own Δ, to show the spread between seeds.

The interval is over test patients with the pretraining runs held fixed: it says how sure the Δ of *these*
encoders is, not how another pretraining seed would land. The per-seed column is the evidence for that (with
three seeds, a sign that flips between them is the finding).

    python benchmarks/pooled_seeds.py --a runs/e/adv_mask runs/e/adv_mask-s1 runs/e/adv_mask-s2 \\
        --b runs/e/simclr runs/e/simclr-s1 runs/e/simclr-s2 [--boot 1000]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from ecgforge.evaluation.paired import compare, mean_evidence, pair_key
from ecgforge.rundir import RunDir, StoredRow


def pretrained_rows(run: Path) -> dict[tuple, StoredRow]:
    """The run's pretrained rows with their evidence, by `pair_key`."""
    rd = RunDir(run)
    stored = rd.read_scores()
    if stored is None:
        raise SystemExit(f"{run}: no stored scores (`ecgforge eval {run}` stores them)")
    return {pair_key(s.row): s for s in stored if s.row.init == "pretrained"}


def group_key(key: tuple) -> tuple:
    """`pair_key` without the probe seed: (kind, task, label fraction, split, conditions)."""
    return (*key[:3], *key[4:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, nargs="+", required=True, help="method A's runs, one per pretraining seed")
    ap.add_argument("--b", type=Path, nargs="+", required=True, help="method B's runs, one per pretraining seed")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    runs_a, runs_b = [pretrained_rows(r) for r in args.a], [pretrained_rows(r) for r in args.b]
    shared = set.intersection(*(set(r) for r in runs_a + runs_b))
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for key in sorted(shared, key=repr):
        groups[group_key(key)].append(key)
    name_a, name_b = args.a[0].name, args.b[0].name
    print(f"A = {name_a} ({len(runs_a)} pretraining seeds), B = {name_b} ({len(runs_b)}); Δ = A − B, primary metric")
    print("\n| protocol | task | fraction | conditions | A | B | Δ pooled [95 % interval] p | Δ per pretraining seed |")
    print("|---|---|---|---|---|---|---|---|")
    for gkey, keys in groups.items():
        kind, task, fraction = gkey[:3]
        rows_a = [r[k] for r in runs_a for k in keys]
        rows_b = [r[k] for r in runs_b for k in keys]
        metric = rows_a[0].row.primary
        res = compare(mean_evidence([s.evidence for s in rows_a]), mean_evidence([s.evidence for s in rows_b]),
                      args.boot, seed=0)
        d, ci, p = res["delta"][metric], res["ci95"][metric], res["p_value"][metric]
        va = sum(s.row.value(metric) for s in rows_a) / len(rows_a)
        vb = sum(s.row.value(metric) for s in rows_b) / len(rows_b)
        per_seed = []  # each pretraining seed of A against the same seed's B (mean over probe seeds)
        for ra, rb in zip(runs_a, runs_b, strict=False):
            ma = sum(ra[k].row.value(metric) for k in keys) / len(keys)
            mb = sum(rb[k].row.value(metric) for k in keys) / len(keys)
            per_seed.append(f"{ma - mb:+.3f}")
        interval = f"[{ci[0]:+.3f}, {ci[1]:+.3f}] p {p:.3f}" if ci else "(no interval)"
        cond = ", ".join(f"{k} {v}" for k, v in sorted(rows_a[0].row.conditions.items()))
        print(f"| {kind} | {task} | {fraction:g} | {cond} | {va:.3f} | {vb:.3f} | {d:+.3f} {interval} | "
              f"{' / '.join(per_seed)} |")


if __name__ == "__main__":
    main()
