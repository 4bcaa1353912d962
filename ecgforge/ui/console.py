"""Everything the command line draws: progress bars (a `Reporter`), results, cache and list tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ecgforge.evaluation.rows import EXCLUDED_LEGEND, rows_from_json
from ecgforge.progress import Reporter, Update

out = Console()
err = Console(stderr=True)


def progress_bar(label: str, console: Console) -> Progress:
    """The one progress-bar layout: label, bar, n / total, a status text, elapsed and remaining time."""
    return Progress(TextColumn(f"[bold]{escape(label)}[/]"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console)


class RichReporter(Reporter):
    """Progress as rich bars and notes as one dim line each, on ``console`` (stderr by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or err

    def note(self, text: str) -> None:
        self.console.print(f"[bold]·[/] {escape(text)}", highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def task(self, label: str, total: int | None = None, completed: int = 0) -> Iterator[Update]:
        with progress_bar(label, self.console) as bar:
            t = bar.add_task(label, total=total, completed=completed, status="")

            def update(done: int, total: int | None = None, status: str | None = None) -> None:
                fields: dict[str, Any] = {"completed": done}
                if total is not None:
                    fields["total"] = total
                if status is not None:
                    fields["status"] = status
                bar.update(t, **fields)

            yield update


SHORT_HEADS = {"noise_level": "noise"}  # a header as wide as its numbers keeps the table within 80 columns


def split_conditions(keys: list[str], values: list[Mapping[str, Any]]) -> tuple[list[str], str]:
    """The condition ``keys`` that vary over the rows' ``values`` (a table's columns), and the rest as a title
    suffix ``", leads 12"``: a column that holds one value everywhere only widens the table."""
    fixed = [k for k in keys if len({str(v.get(k, "")) for v in values}) == 1]
    return [k for k in keys if k not in fixed], "".join(f", {k} {values[0].get(k, '')}" for k in fixed)


def results_tables(results: dict[str, Any]) -> list[Table]:
    """The evaluation rows of a results.json, a table per protocol and task (init, fraction, seed, the
    conditions that vary, up to four metrics; a condition the same on every row goes into the title), narrow
    enough for 80 columns without cutting a number. A macro AUROC that leaves classes out is marked
    (``ResultRow.mark``), and the caption says what the mark means."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows_from_json(results.get("eval", [])):
        groups.setdefault((row.kind, row.task), []).append(row)
    tables = []
    for (kind, task), rows in groups.items():
        metric_names = list(dict.fromkeys(k for row in rows for k in row.metrics))[:4]
        conditions = list(dict.fromkeys(k for row in rows for k in row.conditions))
        varying, where = split_conditions(conditions, [row.conditions for row in rows])
        marked = any(row.mark(k) for row in rows for k in metric_names)
        cells = [[row.init, f"{row.label_fraction:g}", str(row.seed), *(str(row.conditions.get(k, "")) for k in varying),
                  *((f"{row.metrics[k]:.4f}" if isinstance(row.metrics.get(k), (int, float)) else "-") + row.mark(k)
                    for k in metric_names)] for row in rows]
        table = Table(title=f"{results.get('recipe', '')}: {kind} on {task}{where}",
                      caption=EXCLUDED_LEGEND if marked else None)
        heads = ["init", "fraction", "seed", *(SHORT_HEADS.get(k, k) for k in varying), *metric_names]
        for i, col in enumerate(heads):
            numeric = i >= 3 + len(varying)  # a metric: never squeezed below its widest value (and mark)
            table.add_column(col, justify="left" if i == 0 else "right", overflow="fold",
                             min_width=max(len(c[i]) for c in cells) if numeric else None)
        for c in cells:
            table.add_row(*c)
        tables.append(table)
    return tables


def between_tables(comparison: Any) -> list[Table]:
    """The rows `app.between.compare_runs` compared, in the primary metric: a table per pair, protocol and
    task, narrow enough for 80 columns (report.md has every column). A condition that is the same on every row of
    a table (robustness: ``leads`` when only the noise varies) goes into the title rather than a column, and the
    numbers are never squeezed: a header wraps first."""
    from rich import box

    from ecgforge.app.between import condition_keys, row_cells

    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in comparison.primary_rows():
        groups.setdefault((r["a"], r["b"], r["kind"], r["task"], r["metric"]), []).append(r)
    tables = []
    for (a, b, kind, task, metric), rows in groups.items():
        conditions = condition_keys(rows)
        varying, where = split_conditions(conditions, rows)
        cells = [row_cells(r, varying) for r in rows]  # a, b, protocol, task, fraction, seed, conditions, metric, ...
        cells = [[*c[4:6 + len(varying)], *c[7 + len(varying):-2]] for c in cells]
        table = Table(title=f"A = {a}, B = {b}: {kind} on {task}, {metric}{where}", box=box.SIMPLE_HEAD,
                      collapse_padding=True, pad_edge=False)
        heads = ("fraction", "seed", *(SHORT_HEADS.get(k, k) for k in varying), "A", "B", "Δ = A − B", "95% interval",
                 "p")
        for i, col in enumerate(heads):
            table.add_column(col, justify="right", overflow="fold", min_width=max(len(c[i]) for c in cells))
        for c in cells:
            table.add_row(*c)
        tables.append(table)
    return tables


def cache_summary_tables(summary: Any) -> list[Table]:
    """A cache build's counts, and its skipped records with reasons (the first 50)."""
    t = Table(title=f"cache {summary.path}")
    for col in ("records", "skipped", "clipped samples", "seconds"):
        t.add_column(col)
    t.add_row(str(summary.n_records), str(summary.n_skipped), str(summary.clipped_samples), f"{summary.seconds:.1f}")
    tables = [t]
    if summary.skipped:
        s = Table(title="skipped records")
        s.add_column("record")
        s.add_column("reason")
        for rec, why in summary.skipped[:50]:
            s.add_row(rec, why)
        if len(summary.skipped) > 50:
            s.add_row("...", f"{len(summary.skipped) - 50} more: `ecgforge cache info {summary.path}`")
        tables.append(s)
    return tables


def cache_info_table(path: Any, d: dict[str, Any]) -> Table:
    t = Table(title=f"{path}")
    t.add_column("field")
    t.add_column("value")
    for k in ("name", "n_records", "n_patients", "fs_hz", "spec_hash"):
        t.add_row(k, str(d[k]))
    t.add_row("leads", " ".join(d["leads"]))
    t.add_row("duration_s", ", ".join(f"{k} {v:.1f}" for k, v in d["duration_s"].items()))
    for k in ("sex", "sources", "folds"):
        t.add_row(k, ", ".join(f"{a}: {b}" for a, b in d[k].items()))
    for name, counts in d["label_sets"].items():
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:12]
        t.add_row(f"labels/{name}", ", ".join(f"{a}: {b}" for a, b in top) + (" ..." if len(counts) > 12 else ""))
    t.add_row("skipped", str(len(d["skipped"])))
    return t


def kinds_table(origins: dict[str, dict[str, str]]) -> Table:
    """One row per category and package: the built-in kinds (package ``ecgforge``) first, then each plugin's."""
    t = Table(title="registered kinds")
    t.add_column("category")
    t.add_column("package")
    t.add_column("kinds")
    for name, kinds in origins.items():
        packages = sorted(set(kinds.values()), key=lambda pkg: (pkg != "ecgforge", pkg))
        for pkg in packages:
            t.add_row(name, pkg, ", ".join(k for k, origin in kinds.items() if origin == pkg))
    return t
