"""The ``ecgforge`` command line. User mistakes print one line per problem and exit with code 2."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ecgforge.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Self-supervised pretraining and data-scarce evaluation of ECG encoders.")
cache_app = typer.Typer(no_args_is_help=True, help="Build, inspect and verify HDF5 dataset caches.")
app.add_typer(cache_app, name="cache")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn UserError into one-line messages and exit 2; Ctrl-C into a short note and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                err.print(f"[red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: completed work is saved; rerun with --resume to continue")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe field: dotted.key=TOML-value")]


# ------------------------------------------------------------------------------------------------ run


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="run recipe (TOML)")],
    set_: SetOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run directory (default runs/<name>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run directory")] = False,
) -> None:
    """Pretrain and evaluate as the recipe says; writes the run directory, ending with results.json."""
    from ecgforge.artifacts import RunLock, prepare_run_dir
    from ecgforge.recipe import load_recipe
    from ecgforge.train.runner import Runner

    r = load_recipe(recipe, set_ or [])
    run_dir = out_dir or Path("runs") / r.name
    runner = Runner(r, run_dir, resume=resume, console=err, recipe_text=recipe.read_text(encoding="utf-8"))
    if runner.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir):
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            results = runner.run()
        print_results(results)
        out.print(f"results: {run_dir / 'results.json'}")
    else:
        runner.run()


def print_results(results: dict[str, Any]) -> None:
    rows = results.get("eval", [])
    if not rows:
        return
    metric_names = list(dict.fromkeys(k for row in rows for k in row.get("metrics", {})))[:4]
    table = Table(title=f"{results.get('recipe', '')}: evaluation")
    for col in ("protocol", "task", "init", "fraction", "seed", *metric_names):
        table.add_column(col, justify="right" if col not in ("protocol", "task", "init") else "left")
    for row in rows:
        m = row.get("metrics", {})
        table.add_row(
            row.get("kind", ""), row.get("task", ""), row.get("init", ""), f"{row.get('label_fraction', 1.0):g}",
            str(row.get("seed", "")), *(f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-" for k in metric_names),
        )
    out.print(table)


@app.command()
@user_errors
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="run or cache recipes")],
    set_: SetOpt = None,
) -> None:
    """Validate recipes without running them (exit 0 when all are valid, 2 otherwise)."""
    from ecgforge.recipe import RecipeError, is_cache_recipe, load_cache_recipe, load_recipe

    failed = 0
    for path in recipes:
        try:
            kind = "cache recipe" if is_cache_recipe(path) else "recipe"
            (load_cache_recipe if kind == "cache recipe" else load_recipe)(path, set_ or [])
            out.print(f"[green]ok[/] {path} ({kind})")
        except RecipeError as exc:
            failed += 1
            for line in str(exc).splitlines():
                err.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """The registered component kinds per category."""
    from ecgforge.registry import kinds

    table = kinds()
    if as_json:
        print(json.dumps(table))
        return
    t = Table(title="registered kinds")
    t.add_column("category")
    t.add_column("kinds")
    for name, ks in table.items():
        t.add_row(name, ", ".join(ks))
    out.print(t)


# ---------------------------------------------------------------------------------------------- cache


def build_cache_with_progress(spec: Any, out_path: str | Path | None, console: Console, workers: int | None = None) -> Any:
    """Build a cache with a progress bar and print the summary table (skipped records with reasons)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ecgforge.data.cache import build_cache

    with Progress(TextColumn(f"[bold]cache[/] {spec.name}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("records", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = build_cache(spec, out_path, workers=workers, progress=advance)
    t = Table(title=f"cache {summary.path}")
    t.add_column("records")
    t.add_column("skipped")
    t.add_column("clipped samples")
    t.add_column("seconds")
    t.add_row(str(summary.n_records), str(summary.n_skipped), str(summary.clipped_samples), f"{summary.seconds:.1f}")
    console.print(t)
    if summary.skipped:
        s = Table(title="skipped records")
        s.add_column("record")
        s.add_column("reason")
        for rec, why in summary.skipped[:50]:
            s.add_row(rec, why)
        if len(summary.skipped) > 50:
            s.add_row("...", f"{len(summary.skipped) - 50} more: `ecgforge cache info {summary.path}`")
        console.print(s)
    return summary


@cache_app.command("build")
@user_errors
def cache_build(
    spec: Annotated[Path, typer.Argument(help="cache recipe (TOML)")],
    source: Annotated[Path | None, typer.Option("--source", help="dataset folder (overrides source.path)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="output HDF5 (overrides out)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="reader processes (default: CPU cores)")] = None,
    set_: SetOpt = None,
) -> None:
    """Read a dataset's records into one HDF5 cache (atomic; unreadable records are listed, not fatal)."""
    from ecgforge.recipe import load_cache_recipe

    overrides = list(set_ or [])
    if source is not None:
        if not source.is_dir():
            raise UserError(f"--source {source}: no such directory")
        overrides.append(f"source.path={json.dumps(str(source))}")
    r = load_cache_recipe(spec, overrides)
    if r.source.kind != "synthetic" and not Path(r.source.path).is_dir():
        raise UserError(f"{spec}: source.path: no such directory {r.source.path!r} (use --source DIR)")
    build_cache_with_progress(r, out_path, err, workers)


@cache_app.command("info")
@user_errors
def cache_info(
    path: Annotated[Path, typer.Argument(help="cache file")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Counts of records, patients, labels, sexes, sources, and the skipped records with reasons."""
    from ecgforge.data.cache import info

    d = info(path)
    if as_json:
        print(json.dumps(d))
        return
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
    out.print(t)
    for s in d["skipped"][:20]:
        out.print(f"  skipped {s['record']}: {s['reason']}", highlight=False)


@cache_app.command("verify")
@user_errors
def cache_verify(path: Annotated[Path, typer.Argument(help="cache file")]) -> None:
    """Re-check a cache against its spec hash and stored checksums (exit 1 on any problem)."""
    from ecgforge.data.cache import verify

    problems = verify(path)
    for p in problems:
        err.print(f"[red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    out.print(f"[green]ok[/] {path}: spec hash and every record checksum match")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
