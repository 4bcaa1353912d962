"""The BENCHMARKS.md "What pretraining buys on PTB-XL" table: one row per run and label fraction of the first
linear-probe evaluation, pretrained vs random init, with the paired difference of results.json
``versus.random``.

    python benchmarks/ptbxl_versus_table.py runs/ptbxl-cpu-simclr runs/ptbxl-cpu-three_kg ...

Columns: macro AUROC mean ± std over probe seeds (pretrained, random); Δ = mean over seeds of the paired
difference; its 95 % interval (bootstrap over test records, paired, bounds averaged over seeds); per seed, Δ and
its two-sided bootstrap p (with the default 200 resamples the floor of p is 1/201 = 0.005); then
whether the run warned (pretrained worse than random at every fraction) and the last logged embed/std,
embed/erank (n/a where the objective does not call the encoder's forward, e.g. CPC and wav2vec 2.0).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def rows_of(run: Path) -> list[str]:
    res = json.loads((run / "results.json").read_text())
    probe = [r for r in res["eval"] if r["kind"] == "linear_probe" and r.get("reference", True)
             and not r.get("condition_keys")]
    by: dict[float, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in probe:
        by[r["label_fraction"]][r["init"]].append(r)
    log = [json.loads(x) for x in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    last = next((r for r in reversed(log) if "embed/std" in r or "samples_per_s" in r), {})  # not a monitor row
    monitor = (f"{last['embed/std']:.2f} / {last['embed/erank']:.1f}" if "embed/std" in last else "n/a")
    warn = "yes" if res.get("warnings") else "no"
    out = []
    for frac in sorted(by):
        pre, rnd = by[frac]["pretrained"], by[frac]["random"]
        m = [r["metrics"]["macro_auroc"] for r in pre]
        mr = [r["metrics"]["macro_auroc"] for r in rnd]
        vs = [r["versus"]["random"] for r in pre if "random" in r.get("versus", {})]
        delta = np.mean([v["delta"]["macro_auroc"] for v in vs]) if vs else float("nan")
        cis = [v["ci95"]["macro_auroc"] for v in vs if v["ci95"].get("macro_auroc")]
        ci = f"[{np.mean([c[0] for c in cis]):+.3f}, {np.mean([c[1] for c in cis]):+.3f}]" if cis else "n/a"
        # Per seed: the paired Δ and its bootstrap p (a mean of p values would mean nothing).
        p = ", ".join(f"{v['delta']['macro_auroc']:+.3f} ({v['p_value']['macro_auroc']:.3f})" for v in vs
                      if v["p_value"].get("macro_auroc") is not None) or "n/a"
        n = "/".join(str(k) for k in sorted({r.get("n_train_records") for r in pre} - {None}))
        out.append(f"| {run.name} | {frac:g} ({n}) | {np.mean(m):.3f} ± {np.std(m):.3f} | {np.mean(mr):.3f} ± "
                   f"{np.std(mr):.3f} | {delta:+.3f} | {ci} | {p} | {warn} | {monitor} |")
    return out


def main(runs: list[str]) -> None:
    print("| run | label fraction (records) | pretrained | random | Δ | Δ 95 % CI | per seed: Δ (p) | warning | embed std / erank |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        for line in rows_of(Path(run)):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
