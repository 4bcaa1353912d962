"""Paired differences between runs (``ecgforge report A B``): is run A's encoder better than run B's?

``versus`` in results.json pairs a run's pretrained rows with its own random / supervised rows. Two runs'
pretrained rows pair the same way when they share protocol, task, label fraction, seed, split and conditions
and were scored on the same test records (the same ``source/record_id`` in the same order, and the same
targets): both read their stored evidence (``scores/``, `RunDir.read_scores`) and `paired.compare` gives the
difference ``A - B`` with its 95 % interval and p over resamples of the test patients, the statistics of
``versus.random``. Beside the rows of each seed, one row per group of seeds both runs hold compares the
seeds' mean (`paired.mean_evidence`: each resample recomputes every seed's metric).

Rows scored on different test records are not compared (one line says so), nor runs evaluated before
ecgforge kept scores (one line: ``ecgforge eval RUN`` stores them).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecgforge.errors import UserError
from ecgforge.evaluation.paired import compare, mean_evidence, pair_key
from ecgforge.rundir import RunDir, StoredRow

#: Resamples where a row's table used none (``bootstrap = 0``): the protocols' default.
DEFAULT_BOOT = 200

#: Columns of paired.csv, in order (the conditions of the rows are added after ``split``).
COLUMNS = ("a", "b", "kind", "task", "label_fraction", "seed", "split", "metric", "primary", "a_value", "b_value",
           "delta", "ci_low", "ci_high", "p_value", "n_records", "n_patients", "n_boot")


@dataclass
class Comparison:
    """What ``ecgforge report`` compares between runs.

    Attributes:
        pairs: (A, B) run names; each row's ``delta`` is A - B.
        rows: one dict per pair x shared row (or seed mean, ``seed = "mean"``) x metric: the keys of `COLUMNS`
            and the row's conditions.
        notes: one line per thing not compared (a run without stored scores, rows on other test records).
    """

    pairs: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def primary_rows(self) -> list[dict[str, Any]]:
        """The rows of each shared row's primary metric (what tables show)."""
        return [r for r in self.rows if r["primary"]]


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """The name each run goes by in a report: its directory's name, or ``parent/name`` where names repeat."""
    dirs = [Path(d) for d in run_dirs]
    names = [d.name for d in dirs]
    return [d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}" for d in dirs]


def resolve_pairs(run_dirs: Sequence[str | Path], pairs: Sequence[str] | None = None,
                  reference: str | None = None) -> list[tuple[int, int]]:
    """(A, B) positions in ``run_dirs`` of the pairs to compare: ``pairs`` (``"A:B"`` each, a run named by its
    path as given or its report name), else every run against ``reference``, else every run against the first."""
    dirs = [Path(d) for d in run_dirs]
    names = run_names(dirs)

    def find(which: str, option: str) -> int:
        for i, (d, n) in enumerate(zip(dirs, names, strict=True)):
            if which in (n, str(d)) or Path(which).resolve() == d.resolve():
                return i
        raise UserError(f"{option}: {which} is not one of the runs given ({', '.join(map(str, dirs))})")

    if pairs:
        out = []
        for p in pairs:
            parts = p.split(":")
            if len(parts) != 2 or not all(parts):
                raise UserError(f"--pair {p}: expected RUN_A:RUN_B")
            out.append((find(parts[0], f"--pair {p}"), find(parts[1], f"--pair {p}")))
        return out
    ref = find(reference, f"--reference {reference}") if reference is not None else 0
    return [(i, ref) for i in range(len(dirs)) if i != ref]


def compare_runs(run_dirs: Sequence[str | Path], pairs: Sequence[str] | None = None, reference: str | None = None,
                 n_boot: int | None = None) -> Comparison:
    """The paired differences of the chosen pairs of ``run_dirs`` (`resolve_pairs`) on every shared row.

    ``n_boot``: resamples per comparison; default the larger of the two rows' tables' ``bootstrap``
    (`DEFAULT_BOOT` where both are 0). Resamples are seeded by the row's seed, as ``versus`` is.
    """
    dirs = [Path(d) for d in run_dirs]
    names = run_names(dirs)
    chosen = resolve_pairs(dirs, pairs, reference)
    stored: dict[int, list[StoredRow] | None] = {}
    out = Comparison([(names[a], names[b]) for a, b in chosen])
    for i in dict.fromkeys(k for pair in chosen for k in pair):
        rd = RunDir(dirs[i])
        results = rd.read_results()
        if results is None:
            raise UserError(f"{dirs[i]}: no results.json (not a finished run directory?)")
        stored[i] = rd.read_scores(results)
        if stored[i] is None:
            out.notes.append(f"{names[i]}: no stored test scores (evaluated before ecgforge kept them in scores/), "
                             f"so no paired difference with it; `ecgforge eval {dirs[i]}` stores them")
    for a, b in chosen:
        sa, sb = stored[a], stored[b]
        if sa is not None and sb is not None:
            _compare_pair(names[a], names[b], sa, sb, n_boot, out)
    return out


def _pretrained(rows: list[StoredRow]) -> dict[tuple[Any, ...], StoredRow]:
    return {pair_key(s.row): s for s in rows if s.row.init == "pretrained"}


def _compare_pair(a: str, b: str, rows_a: list[StoredRow], rows_b: list[StoredRow], n_boot: int | None,
                  out: Comparison) -> None:
    by_a, by_b = _pretrained(rows_a), _pretrained(rows_b)
    shared = [k for k in by_a if k in by_b]
    if not shared:
        out.notes.append(f"{a} vs {b}: no shared row (pretrained rows of the same protocol, task, label "
                         "fraction, seed, split and conditions)")
        return
    refused: dict[tuple[str, str], list[str]] = defaultdict(list)
    # Rows of one protocol, task, fraction, split and conditions, by seed: a group of the table.
    groups: dict[tuple[Any, ...], list[tuple[StoredRow, StoredRow]]] = defaultdict(list)
    for key in shared:
        sa, sb = by_a[key], by_b[key]
        why = _not_paired(sa, sb)
        if why is None:
            groups[(*key[:3], *key[4:])].append((sa, sb))
        else:
            refused[(sa.row.kind, sa.row.task)].append(why)
    for (kind, task), whys in refused.items():
        out.notes.append(f"{a} vs {b}: {kind} on {task}: {len(whys)} shared row(s) not compared: {whys[0]}")
    for members in groups.values():
        for sa, sb in members:
            boot = n_boot if n_boot is not None else (max(sa.bootstrap, sb.bootstrap) or DEFAULT_BOOT)
            out.rows += _entries(a, b, [sa], [sb], sa.row.seed, compare(sa.evidence, sb.evidence, boot, sa.row.seed), boot)
        if len(members) < 2:
            continue
        try:  # one evidence per side, of the seeds' mean: only where every seed was scored on the same records
            ma, mb = mean_evidence([m[0].evidence for m in members]), mean_evidence([m[1].evidence for m in members])
        except ValueError:
            continue
        seed = min(m[0].row.seed for m in members)
        boot = n_boot if n_boot is not None else (max(max(m[0].bootstrap, m[1].bootstrap) for m in members) or DEFAULT_BOOT)
        out.rows += _entries(a, b, [m[0] for m in members], [m[1] for m in members], "mean",
                             compare(ma, mb, boot, seed), boot)


def _not_paired(sa: StoredRow, sb: StoredRow) -> str | None:
    """Why two rows with one key cannot be paired (one line), or None."""
    ea, eb = sa.evidence, sb.evidence
    if not np.array_equal(ea.records, eb.records):
        common = len(np.intersect1d(ea.records, eb.records))
        return f"scored on different test records ({len(ea.records)} and {len(eb.records)}, {common} in common)"
    if not np.array_equal(ea.units, eb.units):
        return "the same test records with different patient ids (caches of different metadata?)"
    ya, yb = ea.data.get("y"), eb.data.get("y")
    if ya is not None and yb is not None and not (ya.shape == yb.shape and np.array_equal(ya, yb)):
        return "the same test records with different targets (label sets of different caches?)"
    return None


def _entries(a: str, b: str, rows_a: list[StoredRow], rows_b: list[StoredRow], seed: int | str,
             result: dict[str, dict[str, Any]], n_boot: int) -> list[dict[str, Any]]:
    """One dict per metric of ``result`` (`paired.compare`); values are the rows' own (their mean over seeds)."""
    first = rows_a[0].row
    ev = rows_a[0].evidence
    out = []
    for metric, delta in result["delta"].items():
        ci = result["ci95"].get(metric)
        out.append({
            "a": a, "b": b, "kind": first.kind, "task": first.task, "label_fraction": first.label_fraction,
            "seed": seed, "split": first.split, **first.conditions, "conditions": list(first.conditions),
            "metric": metric, "primary": metric == first.primary,
            "a_value": _mean_value(rows_a, metric), "b_value": _mean_value(rows_b, metric), "delta": delta,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "p_value": result["p_value"].get(metric),
            "n_records": len(ev.records), "n_patients": len(np.unique(ev.units)), "n_boot": n_boot,
        })
    return out


def _mean_value(rows: list[StoredRow], metric: str) -> float | None:
    values = [s.row.value(metric) for s in rows]
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known and len(known) == len(values) else None


# ------------------------------------------------------------------------------------------------ tables


def condition_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The condition fields of the rows (robustness: ``noise_level``, ``leads``), in order of appearance."""
    return list(dict.fromkeys(k for r in rows for k in r.get("conditions", [])))


def _num(v: Any, fmt: str = ".4f") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def row_cells(r: dict[str, Any], conditions: list[str]) -> list[str]:
    """The text cells of one row of the tables (Markdown, HTML, the terminal): see `table_head`."""
    interval = "" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
    return [r["a"], r["b"], r["kind"], r["task"], f"{r['label_fraction']:g}", str(r["seed"]),
            *(str(r.get(k, "")) for k in conditions), r["metric"], _num(r["a_value"]), _num(r["b_value"]),
            f"{r['delta']:+.4f}", interval, _num(r["p_value"], ".3g"), str(r["n_records"]), str(r["n_patients"])]


def table_head(conditions: list[str]) -> list[str]:
    return ["A", "B", "protocol", "task", "label fraction", "seed", *conditions, "metric", "A value", "B value",
            "Δ = A − B", "95% interval", "p", "records", "patients"]


LEGEND = ("Δ = A − B on the same test records; 95% interval and p: paired bootstrap over test patients "
          "(a patient's records together; two-sided p from the distribution shifted to the null), as versus.random. "
          "Seed \"mean\": the mean over the seeds both runs hold, every seed recomputed on each resample.")


def comparison_markdown(c: Comparison) -> str:
    """The section of report.md: the primary metric of every compared row, then the lines of what was not."""
    lines = ["## Paired differences between runs", "", LEGEND, ""]
    rows = c.primary_rows()
    if rows:
        conditions = condition_keys(rows)
        h = table_head(conditions)
        lines += ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        lines += ["| " + " | ".join(row_cells(r, conditions)) + " |" for r in rows]
    else:
        lines.append("No row was compared.")
    if c.notes:
        lines += ["", *(f"- {n}" for n in c.notes)]
    return "\n".join([*lines, ""])


def comparison_csv(c: Comparison) -> str:
    """Every metric of every compared row, full precision."""
    conditions = condition_keys(c.rows)
    i = COLUMNS.index("split") + 1
    fields = [*COLUMNS[:i], *conditions, *COLUMNS[i:]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in c.rows:
        w.writerow({k: "" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in fields})
    return buf.getvalue()


def comparison_json(c: Comparison) -> dict[str, Any]:
    return {"pairs": [list(p) for p in c.pairs], "rows": c.rows, "notes": c.notes}
