"""Paired comparisons between pretrained runs, on the same test records (issue 26).

``versus.random`` pairs a run only with its own random encoder; this pairs two runs. Two steps:

``score RUN [RUN ...]``: for each run directory, load its saved encoder (``encoder.safetensors``) and its
resolved recipe's splits, train the linear probe (``evaluation.probing.train_probe``, the linear_probe
protocol's code path) for every task, label fraction and seed asked, and keep the per-record test scores in
``RUN/paired/<task>_<init>_f<fraction>_s<seed>.npz`` (record indices, patient codes, targets, scores).
``--init random`` scores the same architecture freshly initialised with each probe seed instead (written to
``--out``), the random-init reference.

``compare A B``: for every (task, fraction) both directories hold, the paired difference A − B of the
primary metric (macro AUROC), averaged over the probe seeds both hold. Each bootstrap resample draws test
patients with replacement (``evaluation.paired.unit_resamples``) and probe seeds with replacement (a seed
draws the same labelled records and head initialisation for both runs, so seeds pair too), and recomputes
A − B on those patients averaged over those seeds: the interval holds the test-set sampling and the probe's
seed-to-seed variation (large at 1 % labels), unlike ``versus``, which conditions on the trained heads.
p as in ``evaluation.paired.compare`` (the bootstrap distribution shifted to the null). The seed-to-seed
spread of the difference is reported beside it (``delta_seed_sd``).

    python benchmarks/compare_runs.py score runs/x/simclr --tasks superdiagnostic rhythm sex \
        --fractions 0.01 0.05 0.1 1 --seeds 0 1
    python benchmarks/compare_runs.py score runs/x/simclr --init random --out runs/x/random
    python benchmarks/compare_runs.py compare runs/x/adv_D runs/x/simclr --md
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from ecgforge.evaluation.metrics import auroc_columns, compute_metrics
from ecgforge.evaluation.paired import unit_resamples

NAME = re.compile(r"(?P<task>[a-z_]+)_(?P<init>pretrained|random)_f(?P<frac>[0-9.]+)_s(?P<seed>\d+)\.npz")


def score(run: Path, tasks: list[str], fractions: list[float], seeds: list[int], init: str, out: Path | None,
          epochs: int, low_seeds: int = 0) -> None:
    """Per-record test scores of the linear probe on ``run``'s encoder (or a random one), one file per row."""
    from ecgforge.app.recipes import load_run_recipe
    from ecgforge.data.cache import Cache
    from ecgforge.encoder_files import load_encoder_weights
    from ecgforge.encoders import ENCODERS
    from ecgforge.evaluation.context import EvalContext
    from ecgforge.evaluation.features import per_record
    from ecgforge.evaluation.linear_probe import LinearProbeConfig
    from ecgforge.evaluation.probing import train_probe
    from ecgforge.evaluation.tasks import load_task
    from ecgforge.registry import build

    r = load_run_recipe(run / "resolved.toml")
    encoder, _ = load_encoder_weights(run)
    cache = Cache(r.data.cache, in_memory=r.data.in_memory)
    window = int(round(r.data.window_s * cache.fs_hz))
    stride = int(round((r.data.eval_stride_s or r.data.window_s) * cache.fs_hz))

    def make_encoder(which: str, seed: int) -> torch.nn.Module:
        if which == "pretrained":
            return copy.deepcopy(encoder)
        torch.manual_seed(seed)  # as app.run.evaluate: the random reference is seeded by the probe seed
        return build(ENCODERS, r.model.encoder)

    ctx = EvalContext(cache=cache, splits=r.data.splits, window=window, stride=stride, make_encoder=make_encoder,
                      device=torch.device("cpu"), batch_size=256, num_workers=0,
                      exclude_ptbxl_overlap=r.data.exclude_ptbxl_overlap, run_dir=run)
    share_embeddings(ctx, np.arange(len(cache)))
    dest = (out or run) / "paired"
    dest.mkdir(parents=True, exist_ok=True)
    summary: list[dict] = []
    for task in tasks:
        cfg = LinearProbeConfig(task=task, label_fractions=fractions, seeds=seeds, inits=[init], epochs=epochs)
        data = load_task(ctx, "linear_probe", task, None, None, cfg.train_split, cfg.val_split, cfg.test_split)
        # Fractions below 10 % vary most from seed to seed: they get `low_seeds` seeds (0, 1, ...) if more.
        all_seeds = sorted(set(seeds) | set(range(low_seeds)))
        for seed in all_seeds:
            f_te, t_te = ctx.features.windows(init, seed, data.cache, data.test.indices)
            for frac in fractions:
                if seed not in seeds and frac >= 0.1:
                    continue
                t0 = time.perf_counter()
                head, pos, _ = train_probe(ctx, data, cfg, init, seed, frac)
                scores = per_record(head.scores(f_te), t_te.record_of, len(data.test.indices))
                np.savez_compressed(
                    dest / f"{task}_{init}_f{frac:g}_s{seed}.npz", records=data.test.indices,
                    units=data.test_patients, y=data.test.y, scores=scores, names=np.asarray(data.train.names),
                    task_type=np.asarray(data.task_type), n_train=len(pos))
                m, _ = compute_metrics(data.task_type, data.test.y, scores, data.train.names)
                row = {"task": task, "init": init, "fraction": frac, "seed": seed, "n_train": int(len(pos)),
                       "macro_auroc": float(m["macro_auroc"]), "s": round(time.perf_counter() - t0, 1)}
                summary.append(row)
                print(json.dumps(row), flush=True)
    (dest / f"summary_{init}.json").write_text(json.dumps(summary, indent=1))


def share_embeddings(ctx: object, all_indices: np.ndarray) -> None:
    """Make ``ctx.features.windows`` embed every record of ``all_indices`` once per encoder and serve any subset
    from it (the same windows, in the same order), instead of re-embedding each task's splits."""
    features = ctx.features  # type: ignore[attr-defined]
    original = features.windows
    full: dict[tuple[str, int], tuple[np.ndarray, dict[int, np.ndarray]]] = {}

    def windows(init: str, seed: int, cache: object, indices: np.ndarray, transform: object = None):  # noqa: ANN202
        if transform is not None:
            return original(init, seed, cache, indices, transform)
        key = (init, seed if init == "random" else 0)
        if key not in full:
            emb, tiles = original(init, seed, cache, all_indices)
            rows: dict[int, list[int]] = {}
            for w, j in enumerate(tiles.record_of):
                rows.setdefault(int(all_indices[j]), []).append(w)
            full[key] = (emb, {k: np.asarray(v) for k, v in rows.items()})
        emb, rows = full[key]
        sub = features.tiles(cache, indices)
        take = np.empty(len(sub.record_of), dtype=np.int64)
        seen: dict[int, int] = {}
        for w, j in enumerate(sub.record_of):
            rec = int(indices[j])
            k = seen.get(rec, 0)
            seen[rec] = k + 1
            take[w] = rows[rec][k]
        return emb[take], sub

    features.windows = windows


def load_rows(d: Path) -> dict[tuple[str, float], dict[int, dict]]:
    """``(task, fraction) -> seed -> arrays`` of the scored rows under ``d/paired``."""
    rows: dict[tuple[str, float], dict[int, dict]] = {}
    for f in sorted((d / "paired").glob("*.npz")):
        m = NAME.fullmatch(f.name)
        if m:
            z = np.load(f)
            rows.setdefault((m["task"], float(m["frac"])), {})[int(m["seed"])] = {k: z[k] for k in z.files}
    return rows


def macro_auroc(task_type: str, y: np.ndarray, scores: np.ndarray) -> float:
    """Macro AUROC over the classes with positives and negatives (one-vs-rest for multiclass), as
    ``evaluation.metrics`` computes it, without the other metrics (this runs inside the bootstrap)."""
    onehot = y.astype(bool) if task_type == "multilabel" else y[:, None] == np.arange(scores.shape[1])[None, :]
    auc = auroc_columns(onehot, scores)
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan


def weighted_macro_auroc(task_type: str, y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Macro AUROC under record multiplicities ``w (B, n)`` (B bootstrap resamples at once) -> (B,).

    A resample that draws a record k times counts it k times, so this equals ``macro_auroc`` on the resample
    with its records repeated (Mann-Whitney with tied scores counting half), in one sorted pass per class."""
    onehot = y.astype(bool) if task_type == "multilabel" else y[:, None] == np.arange(scores.shape[1])[None, :]
    per_class = []
    for k in range(scores.shape[1]):
        order = np.argsort(scores[:, k], kind="stable")
        s_sorted, pos = scores[order, k], onehot[order, k]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # groups of tied scores
        wo = w[:, order]
        p_g = np.add.reduceat(wo * pos, starts, axis=1)
        n_g = np.add.reduceat(wo * ~pos, starts, axis=1)
        below = np.cumsum(n_g, axis=1) - n_g
        u = (p_g * (below + 0.5 * n_g)).sum(axis=1)
        n_p, n_n = p_g.sum(axis=1), n_g.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class.append(np.where((n_p > 0) & (n_n > 0), u / (n_p * n_n), np.nan))
    auc = np.stack(per_class, axis=1)
    with np.errstate(all="ignore"):
        return np.nanmean(auc, axis=1)


def compare(a: Path, b: Path, n_boot: int, only_seeds: dict[tuple[str, float], set[int]] | None = None) -> list[dict]:
    """Paired A − B for every (task, fraction) both hold, averaged over their common probe seeds (of those in
    ``only_seeds[key]`` where given, so that a table compares every run on the same seeds)."""
    ra, rb = load_rows(a), load_rows(b)
    out = []
    for key in sorted(set(ra) & set(rb)):
        seeds = sorted(set(ra[key]) & set(rb[key]) & (only_seeds or {}).get(key, set(ra[key])))
        first_a, first_b = ra[key][seeds[0]], rb[key][seeds[0]]
        if not np.array_equal(first_a["records"], first_b["records"]):
            raise SystemExit(f"{a} and {b}: {key} scored on different test records; not paired")
        units = first_a["units"]
        n = len(units)
        w = np.stack([np.bincount(pos, minlength=n) for pos in unit_resamples(units, n_boot, seed=0)]).astype(float)
        # Seeds are paired too (a seed draws the same labelled records for both runs): each resample also draws
        # the seeds with replacement, so the interval holds the probe's seed-to-seed variation as well.
        seed_draw = np.random.default_rng(1).integers(0, len(seeds), size=(n_boot, len(seeds)))
        seed_w = np.stack([np.bincount(r, minlength=len(seeds)) for r in seed_draw]).astype(float) / len(seeds)
        full, boot = [], []
        for rows in (ra[key], rb[key]):
            f, bs = [], []
            for s in seeds:
                z = rows[s]
                tt = str(z["task_type"])
                f.append(macro_auroc(tt, z["y"], z["scores"]))
                ref, _ = compute_metrics(tt, z["y"], z["scores"], list(z["names"]))  # type: ignore[arg-type]
                assert math.isclose(ref["macro_auroc"], f[-1], abs_tol=1e-9), key  # the framework's metric
                bs.append(weighted_macro_auroc(tt, z["y"], z["scores"], w))
            full.append(f)
            boot.append((seed_w * np.stack(bs, axis=1)).sum(axis=1))
        per_seed_a, per_seed_b = full
        ma, mb = float(np.mean(per_seed_a)), float(np.mean(per_seed_b))
        delta = ma - mb
        d = boot[0] - boot[1]
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [0.025, 0.975])
        extreme = np.abs(d - delta) >= abs(delta) if delta != 0 else np.ones(len(d), bool)
        p = float((1 + extreme.sum()) / (1 + len(d)))
        out.append({"task": key[0], "fraction": key[1], "seeds": seeds, "a": ma, "b": mb, "delta": delta,
                    "a_per_seed": per_seed_a, "b_per_seed": per_seed_b,
                    "delta_seed_sd": float(np.std(np.subtract(per_seed_a, per_seed_b), ddof=1)) if len(seeds) > 1 else None,
                    "ci95": [float(lo), float(hi)], "p": p, "n_boot": len(d), "n_test": n,
                    "n_patients": int(len(np.unique(units)))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="linear-probe per-record test scores of runs' encoders")
    s.add_argument("runs", nargs="+", type=Path)
    s.add_argument("--tasks", nargs="+", default=["superdiagnostic", "rhythm", "sex"])
    s.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.05, 0.1, 1.0])
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    s.add_argument("--init", choices=["pretrained", "random"], default="pretrained")
    s.add_argument("--out", type=Path, help="write here instead of the run directory (for --init random)")
    s.add_argument("--epochs", type=int, default=100, help="probe epochs (the linear_probe default)")
    s.add_argument("--low-seeds", type=int, default=0, help="seeds 0..N-1 for the fractions below 10 %%")
    c = sub.add_parser("compare", help="paired A - B over the shared rows")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--n-boot", type=int, default=1000)
    c.add_argument("--md", action="store_true", help="print markdown table rows")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "score":
        for run in args.runs:
            score(run, args.tasks, args.fractions, args.seeds, args.init, args.out, args.epochs, args.low_seeds)
        return
    rows = compare(args.a, args.b, args.n_boot)
    (args.a / "paired" / f"vs_{args.b.name}.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        lo, hi = r["ci95"]
        if args.md:
            print(f"| {args.a.name} − {args.b.name} | {r['task']} | {r['fraction']:g} | {r['a']:.3f} | {r['b']:.3f} | "
                  f"{r['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['p']:.3f} |")
        else:
            sd = r["delta_seed_sd"]
            print(f"{r['task']:16s} {r['fraction']:5g} seeds {r['seeds']}  A {r['a']:.3f}  B {r['b']:.3f}  "
                  f"delta {r['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]  p {r['p']:.3f}"
                  + (f"  (delta sd over seeds {sd:.3f})" if sd is not None else ""))


if __name__ == "__main__":
    main()
