"""``report.html``: the report as one self-contained page, read in any browser without network or JavaScript.

The page holds the score card (app/scorecard.py), the tables of report.md and every PNG of the report,
embedded as base64 ``data:`` URIs, styled by one inline stylesheet: it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ecgforge.app.between import LEGEND, Comparison, condition_keys, row_cells, table_head
from ecgforge.app.scorecard import PAIRED_HEAD, Cell, entry_text, legend, paired_rows
from ecgforge.evaluation.rows import ResultRow
from ecgforge.fsio import atomic_write_text

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td.txt, th.txt { text-align: left; }
td.best { font-weight: bold; background: #e8f4e8; }
.note { color: #555; font-size: 0.85em; max-width: 70em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.85em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(head: list[str], rows: list[list[tuple[str, str]]], text_cols: int) -> str:
    """``rows``: cells as (text, css class); the first ``text_cols`` columns are left-aligned text."""
    out = ["<table>", "<tr>" + "".join(f'<th class="{"txt" if i < text_cols else ""}">{_e(h)}</th>'
                                       for i, h in enumerate(head)) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="{cls}">{_e(text)}</td>' for text, cls in row) + "</tr>")
    return "\n".join([*out, "</table>"])


def _card_html(runs: dict[str, list[ResultRow]], cells: list[Cell]) -> str:
    names = list(runs)
    refs = [i for i in ("random", "supervised") if any(i in c.references for c in cells)]
    rows = []
    for c in cells:
        row = [(c.kind, "txt"), (c.task, "txt"), (c.metric, "txt"), (f"{c.label_fraction:g}", "")]
        for n in names:
            e = c.entries.get(n)
            row.append(("", "") if e is None else (entry_text(e), "best" if e.best else ""))
        row += [(f"{c.references[i]:.4f}" if i in c.references else "", "") for i in refs]
        rows.append(row)
    notes = "".join(f'<p class="note">{_e(line).replace("`", "")}</p>' for line in legend(runs))
    out = _table(["protocol", "task", "metric", "label fraction", *names, *refs], rows, 3) + notes
    paired = paired_rows(cells)
    if paired:
        out += ('<h3>Paired differences to random</h3>\n'
                + _table(PAIRED_HEAD, [[(x, "txt" if i < 5 else "") for i, x in enumerate(r)] for r in paired], 5))
    return out


def _summary_html(summary: list[dict[str, Any]]) -> str:
    """The tables of report.md: one per (protocol, task), a row per run x init x fraction x condition."""
    by_table: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_table[(str(s["kind"]), str(s["task"]))].append(s)
    parts = []
    for (kind, task), items in by_table.items():
        metrics = list(dict.fromkeys(s["metric"] for s in items))
        extra = list(dict.fromkeys(k for s in items for k in s.get("conditions", [])))
        grouped: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        for s in items:
            grouped.setdefault((s["run"], s["init"], s["label_fraction"], *(s.get(f) for f in extra)), {})[s["metric"]] = s
        rows = []
        for key, by_metric in grouped.items():
            row = [(str(k), "txt") for k in key[:2]] + [(f"{k:g}" if isinstance(k, float) else str(k), "") for k in key[2:]]
            row.append((str(max(c["n"] for c in by_metric.values())), ""))
            for m in metrics:
                c = by_metric.get(m)
                text = "" if c is None else f"{c['mean']:.4f} ± {c['std']:.4f}"
                if c is not None and not math.isnan(c["ci_low"]):
                    text += f" [{c['ci_low']:.4f}, {c['ci_high']:.4f}]"
                row.append((text, ""))
            rows.append(row)
        parts += [f"<h3>{_e(kind)}: {_e(task)}</h3>",
                  _table(["run", "init", "label fraction", *extra, "n", *metrics], rows, 2)]
    return "\n".join(parts)


def _between_html(c: Comparison) -> str:
    """The paired differences between runs (app/between.py), as report.md has them."""
    rows = c.primary_rows()
    conditions = condition_keys(rows)
    out = [f'<p class="note">{_e(LEGEND)}</p>']
    if rows:  # text columns: the two runs, protocol, task
        out.append(_table(table_head(conditions), [[(x, "txt" if i < 4 else "") for i, x in enumerate(row_cells(r, conditions))]
                                                   for r in rows], 4))
    out += [f'<p class="note">{_e(n)}</p>' for n in c.notes]
    return "\n".join(out)


def write_html(path: Path, runs: dict[str, list[ResultRow]], summary: list[dict[str, Any]], cells: list[Cell],
               images: list[Path], card_image: Path | None, comparison: Comparison | None = None) -> Path:
    """Write the page to ``path``: score card (table, then its PNG grid), the paired differences between runs,
    tables, then the other figures."""
    figures = "\n".join(
        f'<figure><img src="{_png_uri(p)}" alt="{_e(p.stem)}"><figcaption>{_e(p.name)}</figcaption></figure>'
        for p in images if p != card_image)
    card = ""
    if cells:
        card = "<h2>Score card</h2>\n" + _card_html(runs, cells)
        if card_image is not None:
            card += f'\n<figure><img src="{_png_uri(card_image)}" alt="score card"><figcaption>{_e(card_image.name)}</figcaption></figure>'
    between = "" if comparison is None else "<h2>Paired differences between runs</h2>\n" + _between_html(comparison)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ecgforge report: {_e(", ".join(runs))}</title>
<style>{_CSS}</style></head>
<body>
<h1>ecgforge report</h1>
<p class="note">Runs: {_e(", ".join(runs))}. Written {_e(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))}.
Mean ± std over seeds (std with ddof = 1; n = seeds); [low, high] = the rows' 95% interval (bootstrap over test
records; Wilson interval over probes for identification top-1), averaged over seeds.</p>
{card}
{between}
<h2>Tables</h2>
{_summary_html(summary)}
<h2>Figures</h2>
{figures or '<p class="note">no figures</p>'}
</body></html>
"""
    atomic_write_text(path, page)
    return path
