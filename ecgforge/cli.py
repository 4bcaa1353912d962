"""The ``ecgforge`` command line. User mistakes print one line per problem and exit with code 2."""

from __future__ import annotations

import errno
import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape  # messages quote TOML tables like [model.encoder]
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
    """Turn UserError into one-line messages and exit 2; a full disk into one line and exit 1; Ctrl-C into a
    short note and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                err.print(f"[red]error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # only a full disk is handled here; anything else keeps its traceback
            if not _disk_full(exc):
                raise
            # Every file is written to a scratch name and renamed: what was there before is intact.
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            then = "rerun with --resume to continue" if fn.__name__ == "run" else "rerun the command"
            err.print(f"[red]error:[/] no space left on device{escape(where)}; nothing complete was lost: free some "
                      f"space, then {then}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if fn.__name__ == "run":  # the runner saved a checkpoint at the step it stopped
                err.print("[yellow]interrupted[/]: completed work is saved; rerun with --resume to continue")
            else:  # the other commands write atomically and have no --resume: nothing half-written is left
                err.print("[yellow]interrupted[/]: nothing was written; rerun the command to start again")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, also where a library reports it only in its message (HDF5: "errno = 28", safetensors:
    "StorageFull")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "Disk quota exceeded", "errno = 28,", "StorageFull"))


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
    # Protocol-specific conditions (robustness: noise level, lead subset) get a column when present.
    extra = [k for k in ("noise_level", "leads") if any(k in row for row in rows)]
    table = Table(title=f"{results.get('recipe', '')}: evaluation")
    for col in ("protocol", "task", "init", "fraction", "seed", *extra, *metric_names):
        table.add_column(col, justify="right" if col not in ("protocol", "task", "init") else "left")
    for row in rows:
        m = row.get("metrics", {})
        table.add_row(
            row.get("kind", ""), row.get("task", ""), row.get("init", ""), f"{row.get('label_fraction', 1.0):g}",
            str(row.get("seed", "")), *(str(row.get(k, "")) for k in extra),
            *(f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-" for k in metric_names),
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
            loaded = (load_cache_recipe if kind == "cache recipe" else load_recipe)(path, set_ or [])
            build = getattr(getattr(loaded, "data", None), "build", None)
            if build is not None:  # the cache recipe a run would build from must exist and be valid too
                try:
                    load_cache_recipe(build)
                except RecipeError as exc:
                    raise RecipeError(f"{path}: data.build: {str(exc).splitlines()[0]}") from None
            out.print(f"[green]ok[/] {path} ({kind})")
        except RecipeError as exc:
            failed += 1
            for line in str(exc).splitlines():
                err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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


# ---------------------------------------------------------------------------------------- eval, report


@app.command("eval")
@user_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory (resolved.toml + encoder.safetensors)")],
    set_: SetOpt = None,
) -> None:
    """Re-run the run's evaluation tables (from resolved.toml, with --set overrides) on its saved encoder,
    without pretraining; rewrites results.json."""
    from ecgforge.artifacts import RunLock, atomic_write_json
    from ecgforge.data.cache import Cache
    from ecgforge.pretrained import check_contract, load_encoder_weights
    from ecgforge.recipe import load_recipe
    from ecgforge.report import plot_run
    from ecgforge.train.runner import Runner

    resolved = run_dir / "resolved.toml"
    if not resolved.is_file():
        raise UserError(f"{run_dir}: no resolved.toml here (not a run directory)")
    r = load_recipe(resolved, set_ or [])
    if not r.eval:
        raise UserError(f"{resolved}: eval: the recipe has no [[eval]] table (add one with --set or in the recipe)")
    encoder, meta = load_encoder_weights(run_dir)
    if meta["config"] != r.model.encoder.model_dump(mode="json"):
        # The random/supervised references are built from model.encoder: they must match the saved weights.
        raise UserError(f"{resolved}: model.encoder differs from {run_dir / 'encoder.json'}; eval cannot change the encoder")
    cache = Cache(r.data.cache, in_memory=r.data.in_memory)
    check_contract(meta, fs_hz=cache.fs_hz, leads=list(cache.leads), source=str(cache.path))
    with RunLock(run_dir):
        rows = Runner(r, run_dir, console=err).evaluate(cache, encoder)
        path = run_dir / "results.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        results = {**previous, "recipe": r.name, "seed": r.seed, "cache": str(cache.path),
                   "cache_spec_hash": cache.spec_hash, "eval": rows, "eval_overrides": list(set_ or [])}
        atomic_write_json(path, results)
        plot_run(run_dir)
    print_results(results)
    out.print(f"results: {path}")


@app.command()
@user_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories to compare")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default RUN_DIR/report, or ./report)")] = None,
) -> None:
    """Markdown + CSV table (mean ± std over seeds, bootstrap CIs) and PNG plots comparing runs."""
    from ecgforge.report import make_report

    target = out_dir or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("report"))
    for p in make_report(run_dirs, target):
        out.print(f"wrote {p}", highlight=False)


# ---------------------------------------------------------------------------------------------- cache


def build_cache_with_progress(
    spec: Any, out_path: str | Path | None, console: Console, workers: int | None = None, *, quiet_after: bool = False
) -> Any:
    """Build a cache with a progress bar and print the summary table (skipped records with reasons).
    ``quiet_after``: the whole command's work is done once the cache is in place (see `_quiet_ctrl_c`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ecgforge.data.cache import build_cache

    with Progress(TextColumn(f"[bold]cache[/] {spec.name}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("records", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = build_cache(spec, out_path, workers=workers, progress=advance)
    if quiet_after:
        _quiet_ctrl_c()
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
    from ecgforge.data.cache import CacheError

    r = load_cache_recipe(spec, overrides)
    if r.source.kind != "synthetic" and not Path(r.source.path).is_dir():
        raise UserError(f"{spec}: source.path: no such directory {r.source.path!r} (use --source DIR)")
    try:
        build_cache_with_progress(r, out_path, err, workers, quiet_after=True)
    except CacheError as exc:  # a source's listing failed (labels CSV missing, ...): name the recipe too
        raise CacheError(f"{spec}: {exc}") from None


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


# --------------------------------------------------------------------------------------- embed, export


@app.command()
@user_errors
def embed(
    encoder: Annotated[str, typer.Argument(help="run directory, export folder, or fairseq-signals .pt")],
    cache: Annotated[Path, typer.Option("--cache", help="HDF5 cache to embed")],
    out_path: Annotated[Path, typer.Option("--out", help="embeddings HDF5 to write (atomically)")],
    split: Annotated[list[str] | None, typer.Option(
        "--split", help=r"NAME={column = \[values]} (TOML inline table, as in \[data.splits]); repeatable; "
        "default: every record")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="windows per batch")] = 256,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes")] = 0,
) -> None:
    """One embedding per record (mean over the encoder's windows), with ids and metadata to join back."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ecgforge.embed import embed_cache, parse_split

    splits = dict(parse_split(s) for s in split or [])
    from rich.progress import TimeRemainingColumn

    with Progress(TextColumn("[bold]embed[/] windows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err) as bar:

        def progress(total: int) -> Any:
            task = bar.add_task("windows", total=total)
            return lambda n: bar.advance(task, n)

        summary = embed_cache(encoder, cache, out_path, splits=splits or None, batch_size=batch_size, device=device,
                              num_workers=workers, progress=progress)
    parts = ", ".join(f"{k or 'all'}: {v}" for k, v in summary["splits"].items())
    out.print(f"[green]wrote[/] {summary['out']}: {summary['n_records']} records ({parts}), "
              f"{summary['n_windows']} windows, {summary['embed_dim']}-d, on {summary['device']}", highlight=False)


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or a fairseq-signals .pt checkpoint)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write: encoder files + README.md model card")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing folder")] = False,
) -> None:
    """A self-describing folder to share as is; loads with ecgforge.load_encoder(DIR)."""
    from ecgforge.export import export as export_encoder

    path = export_encoder(run_dir, out_dir, overwrite=overwrite)
    out.print(f"[green]exported[/] {run_dir} -> {path} (encoder.json, encoder.safetensors, README.md)", highlight=False)


def main() -> None:
    try:
        app()
    finally:
        _quiet_ctrl_c()


def _quiet_ctrl_c() -> None:
    """From here on the command's work is done (or reported): a Ctrl-C ends the process by the signal, instead
    of a KeyboardInterrupt traceback from whatever cleanup the interpreter runs at exit, or a note that
    nothing was written."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
