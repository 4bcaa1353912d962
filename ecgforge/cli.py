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
from rich.markup import escape  # messages quote TOML tables like [model.encoder]
from typer.core import TyperCommand, TyperGroup, TyperOption

from ecgforge.errors import Failure, UserError, resolved_against
from ecgforge.ui.console import err, out


def _flags_take_no_value(params: list[Any]) -> list[Any]:
    """typer shows an option's type after it, a flag's too (``--help <bool>``); a flag takes no value, so it
    shows none (an empty metavar)."""
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Self-supervised pretraining and data-scarce evaluation of ECG encoders.")
cache_app = typer.Typer(cls=Group, no_args_is_help=True, help="Build, inspect and verify HDF5 dataset caches.")
app.add_typer(cache_app, name="cache")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn UserError into one-line messages and exit 2; a full disk or a `Failure` into one line and exit 1;
    Ctrl-C into a short note and exit 130 (SIGTERM caught by a long task: 143)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in _user_message(exc) or [type(exc).__name__]:
                err.print(f"[red]error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Failure as exc:  # a reader process died, ...: one line, what happened and what to do
            err.print(f"[red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:  # only a full disk is handled here; anything else keeps its traceback
            if not _disk_full(exc):
                raise
            # Every file is written to a scratch name and renamed: what was there before is intact.
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            then = "rerun with --resume to continue" if fn.__name__ == "run" else "rerun the command"
            err.print(f"[red]error:[/] no space left on device{escape(where)}; nothing complete was lost: free some "
                      f"space, then {then}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)  # ecgforge.interrupts.Interrupted names the signal
            if signum != signal.SIGINT:
                err.print(f"[yellow]interrupted[/] by {signal.Signals(signum).name}: "
                          + ("completed work is saved; rerun with --resume to continue" if fn.__name__ == "run"
                             else "nothing was written; rerun the command to start again"))
                raise typer.Exit(128 + signum) from None
            if fn.__name__ == "run":  # the runner saved a checkpoint at the step it stopped
                err.print("[yellow]interrupted[/]: completed work is saved; rerun with --resume to continue")
            else:  # the other commands write atomically and have no --resume: nothing half-written is left
                err.print("[yellow]interrupted[/]: nothing was written; rerun the command to start again")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _user_message(exc: UserError) -> list[str]:
    """The lines of a user error. One raised in a DataLoader worker (a damaged cache record) arrives re-raised
    by torch as "Caught X in DataLoader worker process N." + the worker's traceback: only X's message is kept."""
    lines = str(exc).splitlines()
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        name = type(exc).__name__
        for k in range(len(lines) - 1, 0, -1):
            head, sep, rest = lines[k].partition(": ")
            if sep and (head == name or head.endswith("." + name)):
                return [rest, *lines[k + 1 :]]
    return lines


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, also where a library reports it only in its message (HDF5: "errno = 28", safetensors:
    "StorageFull")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "Disk quota exceeded", "errno = 28,", "StorageFull"))


SetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override a recipe field: dotted.key=TOML-value")]


# ------------------------------------------------------------------------------------------------ run


@app.command(cls=Command)
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="run recipe (TOML)")],
    set_: SetOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run directory (default runs/<name>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run directory")] = False,
    rebuild_cache: Annotated[bool, typer.Option(
        "--rebuild-cache", help="replace data.cache where it was built from another spec than data.build")] = False,
) -> None:
    """Pretrain and evaluate as the recipe says; writes the run directory, ending with results.json."""
    from ecgforge.app import preflight

    r = preflight.load_recipe(recipe, set_ or [])
    preflight.check(r, str(recipe))  # before the run directory is touched; with the cache in Run.run
    from ecgforge.app.run import Run
    from ecgforge.rundir import RunLock, prepare_run_dir
    from ecgforge.ui.console import RichReporter

    run_dir = out_dir or Path("runs") / r.name
    runner = Run(r, run_dir, resume=resume, reporter=RichReporter(err), recipe_text=recipe.read_text(encoding="utf-8"),
                 source=str(recipe), rebuild_cache=rebuild_cache)
    if runner.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir):
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            results = runner.run()
        print_results(results)
        out.print(f"results: {run_dir / 'results.json'}", highlight=False)
        print_claim(results, str(recipe), run_dir)
    else:
        runner.run()


def print_claim(results: dict[str, Any], recipe: str, run_dir: Path) -> None:
    """The run's last lines: a time budget that cut pretraining short, then what pretraining bought over a
    random encoder, in words, with the paired interval."""
    from ecgforge.app.claim import versus_random_lines
    from ecgforge.app.run import budget_stop_line

    stopped = budget_stop_line(results.get("pretraining") or {}, recipe, run_dir)
    if stopped:
        out.print(f"[yellow]warning:[/] {escape(stopped)}", highlight=False, soft_wrap=True)
    for line in versus_random_lines(results):
        out.print(escape(line), highlight=False, soft_wrap=True)


def print_results(results: dict[str, Any]) -> None:
    from ecgforge.ui.console import results_tables

    for table in results_tables(results):
        out.print(table)


@app.command(cls=Command)
@user_errors
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="run or cache recipes")],
    set_: SetOpt = None,
) -> None:
    """Validate recipes without running them: the schema, then a run recipe's pre-flight (splits, tasks and
    leakage against its cache where it is built). Exit 0 when all are valid, 2 otherwise."""
    from ecgforge.app import preflight
    from ecgforge.config_files import RecipeError, is_cache_recipe

    failed = 0
    for path in recipes:
        try:
            notes: list[str] = []
            if is_cache_recipe(path):  # torch-free: a cache recipe never needs the model libraries
                from ecgforge.data.cache_spec import load_cache_recipe

                kind = "cache recipe"
                with preflight.naming_component_errors(path):
                    load_cache_recipe(path, set_ or [])
            else:
                kind = "recipe"
                notes = preflight.validate(preflight.load_recipe(path, set_ or []), str(path)).notes
            out.print(f"[green]ok[/] {escape(str(path))} ({kind})" + "".join(f"; {escape(n)}" for n in notes),
                      highlight=False, soft_wrap=True)
        except RecipeError as exc:
            failed += 1
            for line in str(exc).splitlines():
                err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


@app.command("list", cls=Command)
def list_(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """The registered component kinds per category, with the package each comes from (plugins included)."""
    from ecgforge.app.catalog import kinds, origins

    if as_json:
        print(json.dumps(kinds()))
        return
    from ecgforge.ui.console import kinds_table

    out.print(kinds_table(origins()))


# ---------------------------------------------------------------------------------------- eval, report


@app.command("eval", cls=Command)
@user_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory (resolved.toml + encoder.safetensors)")],
    set_: SetOpt = None,
) -> None:
    """Re-run the run's evaluation tables (from resolved.toml, with --set overrides) on its saved encoder,
    without pretraining; rewrites results.json."""
    from ecgforge.app.run import evaluate_run
    from ecgforge.ui.console import RichReporter

    results = evaluate_run(run_dir, list(set_ or []), RichReporter(err))
    print_results(results)
    out.print(f"results: {run_dir / 'results.json'}", highlight=False)
    print_claim(results, str(run_dir / "recipe.toml"), run_dir)


@app.command(cls=Command)
@user_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories to compare")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default RUN_DIR/report, or ./report)")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="compare every other run with this one (default: the first)")] = None,
    pair: Annotated[list[str] | None, typer.Option(
        "--pair", help="RUN_A:RUN_B, a pair to compare (repeatable; instead of --reference)")] = None,
    bootstrap: Annotated[int | None, typer.Option(
        "--bootstrap", min=1, help="resamples per paired difference (default: the rows' eval table's bootstrap)")] = None,
) -> None:
    """Markdown + CSV table (mean ± std over seeds, bootstrap CIs), PNG plots, and the paired difference
    between runs (Δ, 95% interval, p over test patients) on every row they share."""
    from ecgforge.app.between import compare_runs
    from ecgforge.app.report import make_report
    from ecgforge.ui.console import between_tables

    if pair and reference is not None:
        raise UserError("--pair and --reference: give one of them")
    target = out_dir or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("report"))
    if len(run_dirs) == 1 and not pair:
        out.print(f"one run: nothing to compare {run_dirs[0]} with; the report shows it against its reference "
                  "initialisations (random, supervised)", highlight=False, soft_wrap=True)
    comparison = compare_runs(run_dirs, pair, reference, bootstrap) if len(run_dirs) > 1 or pair else None
    if comparison is not None:
        for table in between_tables(comparison):
            out.print(table)
        for line in comparison.notes:
            err.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for p in make_report(run_dirs, target, comparison):
        out.print(f"wrote {p}", highlight=False)


# ---------------------------------------------------------------------------------------------- cache


def build_cache_with_progress(spec: Any, out_path: str | Path | None, workers: int | None = None) -> Any:
    """Build a cache with a progress bar, then print the summary table (skipped records with reasons)."""
    from ecgforge.app.run import build_cache_reported
    from ecgforge.ui.console import RichReporter, cache_summary_tables

    summary = build_cache_reported(spec, out_path, RichReporter(err), workers)
    _quiet_ctrl_c()  # the command's work is done once the cache is in place (see `_quiet_ctrl_c`)
    for table in cache_summary_tables(summary):
        err.print(table)
    return summary


@cache_app.command("build", cls=Command)
@user_errors
def cache_build(
    spec: Annotated[Path, typer.Argument(help="cache recipe (TOML)")],
    source: Annotated[Path | None, typer.Option("--source", help="dataset folder or file (overrides source.path)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="output HDF5 (overrides out)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="reader processes (default: CPU cores)")] = None,
    set_: SetOpt = None,
) -> None:
    """Read a dataset's records into one HDF5 cache (atomic; unreadable records are listed, not fatal)."""
    from ecgforge.data.cache_spec import load_cache_recipe

    overrides = list(set_ or [])
    if source is not None:
        if not source.exists():  # a folder, or a file for sources that read one (arrays)
            raise UserError(f"--source {source}: no such file or directory{resolved_against(source)}")
        overrides.append(f"source.path={json.dumps(str(source))}")
    from ecgforge.data.cache import CacheError

    r = load_cache_recipe(spec, overrides)
    folder = getattr(r.source, "path", None)  # a plugin source may name its data otherwise
    if r.source.kind != "synthetic" and folder is not None and not Path(folder).exists():
        raise UserError(f"{spec}: source.path: no such file or directory {folder!r}{resolved_against(folder)} "
                        "(use --source DIR)")
    try:
        build_cache_with_progress(r, out_path, workers)
    except CacheError as exc:  # a source's listing failed (labels CSV missing, ...): name the recipe too
        raise CacheError(f"{spec}: {exc}") from None


@cache_app.command("info", cls=Command)
@user_errors
def cache_info(
    path: Annotated[Path, typer.Argument(help="cache file")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Counts of records, patients, labels, sexes, sources, and the skipped records with reasons."""
    from ecgforge.data.cache_inspect import info

    d = info(path)
    if as_json:
        print(json.dumps(d))
        return
    from ecgforge.ui.console import cache_info_table

    out.print(cache_info_table(path, d))
    for line in d["caveats"]:
        out.print(f"[yellow]caveat:[/] {line}", highlight=False)
    for s in d["skipped"][:20]:
        out.print(f"  skipped {s['record']}: {s['reason']}", highlight=False)


@cache_app.command("verify", cls=Command)
@user_errors
def cache_verify(path: Annotated[Path, typer.Argument(help="cache file")]) -> None:
    """Re-check a cache against its spec hash and stored checksums (exit 1 on any problem)."""
    from ecgforge.data.cache_inspect import verify

    notes: list[str] = []
    problems = verify(path, notes)
    for n in notes:
        err.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)
    for p in problems:
        err.print(f"[red]problem:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    what = "spec hash and every record checksum match" if notes else "metadata, spec hash and every record checksum match"
    out.print(f"[green]ok[/] {path}: {what}", highlight=False)


# --------------------------------------------------------------------------------------- embed, export


@app.command(cls=Command)
@user_errors
def embed(
    encoder: Annotated[str, typer.Argument(
        help=r"run directory, export folder, hf://ORG/NAME\[@REVISION] (needs ecgforge\[hub]), fairseq-signals .pt, "
        r"or a foundation model's released checkpoint: KIND:PATH or KIND:hf://ORG/NAME/FILE\[@REVISION]")],
    cache: Annotated[Path, typer.Option("--cache", help="HDF5 cache to embed")],
    out_path: Annotated[Path, typer.Option("--out", help="embeddings HDF5 to write (atomically)")],
    split: Annotated[list[str] | None, typer.Option(
        "--split", help=r"NAME={column = \[values]} (TOML inline table, as in \[data.splits]); repeatable; "
        "default: every record")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="windows per batch")] = 256,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes")] = 0,
) -> None:
    """One embedding per record (mean over the encoder's windows), with ids and metadata to join back; a
    foundation model's input as a run feeds it (a cache at its rate derived beside --cache, its filters)."""
    import contextlib

    from ecgforge.app.embed import embed_cache, parse_split
    from ecgforge.ui.console import RichReporter, progress_bar

    splits = dict(parse_split(s) for s in split or [])
    with contextlib.ExitStack() as stack:

        def progress(total: int) -> Any:  # started once any cache to derive is built: one live bar at a time
            bar = stack.enter_context(progress_bar("embed windows", err))
            task = bar.add_task("windows", total=total, status="")
            return lambda n: bar.advance(task, n)

        summary = embed_cache(encoder, cache, out_path, splits=splits or None, batch_size=batch_size, device=device,
                              num_workers=workers, progress=progress, reporter=RichReporter(err))
    parts = ", ".join(f"{k or 'all'}: {v}" for k, v in summary["splits"].items())
    out.print(f"[green]wrote[/] {summary['out']}: {summary['n_records']} records ({parts}), "
              f"{summary['n_windows']} windows, {summary['embed_dim']}-d, on {summary['device']}", highlight=False)


@app.command(cls=Command)
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or a fairseq-signals .pt checkpoint)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write: encoder files + README.md model card")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing folder")] = False,
) -> None:
    """A self-describing folder to share as is; loads with ecgforge.load_encoder(DIR)."""
    from ecgforge.app.export import export as export_encoder

    path = export_encoder(run_dir, out_dir, overwrite=overwrite)
    out.print(f"[green]exported[/] {run_dir} -> {path} (encoder.json, encoder.safetensors, README.md)", highlight=False)


@app.command(cls=Command)
@user_errors
def push(
    src: Annotated[Path, typer.Argument(help="export folder, or a run directory / fairseq .pt (exported on the way)")],
    repo: Annotated[str, typer.Option("--repo", help="Hub model repository ORG/NAME (created if absent)")],
    private: Annotated[bool, typer.Option("--private", help="create the repository private")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="branch to commit to (created if absent)")] = None,
    message: Annotated[str | None, typer.Option("--message", help="commit message")] = None,
) -> None:
    r"""Upload an export to the Hugging Face Hub (needs ecgforge\[hub] and HF_TOKEN); loads as hf://ORG/NAME."""
    from ecgforge.app.push import push as push_export

    info = push_export(src, repo, private=private, revision=revision, message=message)
    via = " (exported on the way)" if info["exported"] else ""
    at = f"@{info['revision']}" if revision else ""
    out.print(f"[green]pushed[/] {src}{via} -> hf://{info['repo_id']}{at}: {', '.join(info['files'])}; "
              f"commit {info['commit']} ({info['url']})", highlight=False)


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
