"""The run object: what a run computes once from its recipe and cache (`RunPlan`), and its directory (`RunDir`).

Layout of ``runs/<name>/``::

    recipe.toml         the recipe as given (verbatim)
    resolved.toml       validated, with defaults and overrides: rerunnable as it is
    env.json            versions, device, world size, precision, cache hash
    checkpoints/        step_<N>/ (Accelerate state + progress.json), the last few kept
    encoder.safetensors the pretrained encoder's weights, with encoder.json (its config and input contract)
    metrics/train.jsonl one JSON object per logged step
    results.json        evaluation rows and run facts (`Results`; see README)
    scores/             eval_<i>.npz: the test scores behind the rows of [[eval]] table i (`RunDir.write_scores`)
    plots/              PNG figures
    .lock               held by the process that runs in this directory

Files are written atomically (``ecgforge.fsio``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ecgforge.encoders.foundation import InputContract
from ecgforge.errors import UserError
from ecgforge.evaluation.rows import ResultRow, rows_from_json
from ecgforge.fsio import atomic_dir, atomic_write_json, atomic_write_text, json_default
from ecgforge.registry import BuildContext
from ecgforge.version import __version__

if TYPE_CHECKING:
    from ecgforge.data.cache import Cache
    from ecgforge.evaluation.paired import Evidence
    from ecgforge.recipe import Recipe


class RunDirError(UserError):
    """A run-directory problem a user can fix (exists, locked); one line."""


_HELD: set[int] = set()  # descriptors of the run locks this process holds


def _close_locks_in_child() -> None:
    """In a forked child (DataLoader worker, reader process): close the inherited run-lock descriptors. A flock
    belongs to the open file, which a child's copy keeps open: a child that outlives a SIGKILLed parent would
    otherwise hold the lock and refuse the rerun."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


class RunLock:
    """An exclusive lock on a run directory, which the kernel releases when its process ends, however it ends.

    ``fcntl.flock`` on ``.lock``; the file also holds the owner's PID, for the message a second process gets.
    A PID alone would be wrong twice: a reused PID looks alive, and two processes taking over one stale file at
    the same instant could both believe they hold it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = os.pread(fd, 32, 0).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise RunDirError(
                        f"{self.path.parent}: another ecgforge process (pid {owner}) is running in this directory"
                    ) from None
                raise RunDirError(f"{self.path}: cannot lock: {exc.strerror}") from None
            # The holder may have released (removed) the file between our open and our lock: lock the new one.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked, so no one holds the removed file
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MetricsLog:
    """Append-only JSON lines (``metrics/train.jsonl``); each line is flushed as it is written.

    On resume, lines past the checkpoint's step are dropped so the log matches the resumed state.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if row.get("step", 0) <= resume_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=json_default) + "\n")
            f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless told to; ``overwrite`` clears it, ``resume`` keeps it."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite are mutually exclusive")
    occupied = run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir())
    if occupied and not (resume or overwrite):
        raise RunDirError(f"{run_dir}: a run already exists here; pass --resume to continue it or --overwrite to replace it")
    if overwrite and run_dir.exists():
        for child in run_dir.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------ the run plan


def samples(seconds: float, fs_hz: float) -> int:
    """A duration in samples at ``fs_hz``, rounded to the nearest sample."""
    return int(round(seconds * fs_hz))


def contract_input(cache: Cache, contract: InputContract, fix: str = "") -> tuple[Cache, int, int]:
    """What a model with ``contract`` reads of ``cache``: the cache seen through the contract's record- and
    window-scope steps (`PreparedCache`; the cache itself where it has none), and the contract's window and
    stride in samples. The one path of every read a foundation model makes: the run's cache (`RunPlan`), a
    protocol's own ``cache =`` and ``ecgforge embed`` (after `app.run.derive_cache`).

    Raises:
        UserError: the cache is not at the contract's rate (``fix``: what else the user may do), or does not
            hold the 12 canonical leads in their order (what the encoder selects its leads from).
    """
    from ecgforge.data.leads import CANONICAL_LEADS
    from ecgforge.data.prepared import PreparedCache

    c = contract
    if abs(c.fs_hz - cache.fs_hz) > 1e-6:
        raise UserError(f"encoder expects {c.fs_hz:g} Hz ({c.model}) but {cache.path} is {cache.fs_hz:g} Hz; "
                        f"build a cache at {c.fs_hz:g} Hz{' ' + fix if fix else ''}")
    if list(cache.leads) != list(CANONICAL_LEADS):
        raise UserError(f"{c.model} reads the 12 canonical leads ({' '.join(CANONICAL_LEADS)}) but {cache.path} "
                        f"has {' '.join(cache.leads)}; build a cache with those leads in that order")
    window, stride = samples(c.window_s, cache.fs_hz), samples(c.stride_s, cache.fs_hz)
    if c.record_steps or c.window_steps:
        cache = PreparedCache(cache, c.prepare_record if c.record_steps else None,  # type: ignore[assignment]
                              c.prepare_window if c.window_steps else None)
    return cache, window, stride


@dataclass(frozen=True)
class RunPlan:
    """What a run derives from (recipe, cache), computed once and passed to training, evaluation and reports.

    Attributes:
        window: samples per training and evaluation window (``data.window_s`` at ``cache.fs_hz``; with an
            input contract, the contract's ``window_s``).
        stride: samples between evaluation tiles (``data.eval_stride_s``, default ``window_s``; with an input
            contract, its ``stride_s``). Records longer than a window are tiled; scores and embeddings are
            averaged per record (``evaluation.features.per_record``).
        split_indices: split name -> ``(n,)`` int64 cache record indices, ascending (``data.splits`` with the
            PTB-XL overlap rule applied).
        ctx: the build context of the run's components: ``fs_hz``, ``window``, ``n_leads`` (the trainer adds
            the encoder and, for a supervised objective, ``n_classes``).
        contract: the input contract of the encoder the run starts from (a foundation model's, from its
            ``encoder.json``), or None. With one, ``cache`` is the recipe's cache seen through the contract's
            record- and window-scope steps (`PreparedCache`), so that every protocol, every initialisation
            (pretrained, random, supervised) and the trainer read the model's own input.
    """

    recipe: Recipe
    cache: Cache
    window: int
    stride: int
    split_indices: Mapping[str, np.ndarray]
    ctx: BuildContext
    contract: InputContract | None = None

    @classmethod
    def build(cls, recipe: Recipe, cache: Cache, contract: InputContract | Mapping[str, Any] | None = None) -> RunPlan:
        """The plan of ``recipe`` (its splits already resolved against ``cache``) on ``cache``; ``contract``
        (an `InputContract` or its JSON, ``encoder.json``'s ``input_contract``) replaces the recipe's window
        and stride and prepares every read (`contract_input`). UserError where the cache is not at the contract's
        rate or lacks the 12 canonical leads."""
        from ecgforge.data.splits import select

        d = recipe.data
        window = samples(d.window_s, cache.fs_hz)
        stride = samples(d.eval_stride_s or d.window_s, cache.fs_hz)
        indices = {name: select(cache, sel, d.exclude_ptbxl_overlap) for name, sel in d.splits.items()}
        ctx = BuildContext(fs_hz=cache.fs_hz, window=window, n_leads=cache.n_leads)
        c = None if contract is None else (
            contract if isinstance(contract, InputContract) else InputContract.model_validate(contract))
        if c is not None:
            cache, window, stride = contract_input(cache, c, "or set data.build (a cache recipe), from which a "
                                                             "run derives one")
            ctx = ctx.replace(window=window)
        return cls(recipe, cache, window, stride, indices, ctx, c)

    @property
    def pretrain_indices(self) -> np.ndarray:
        """Record indices of ``data.pretrain_split``."""
        return self.split_indices[self.recipe.data.pretrain_split]

    def input_line(self) -> str | None:
        """One line saying what the input contract makes of the cache, or None without one."""
        c = self.contract
        if c is None:
            return None
        fs = self.cache.fs_hz
        every = "" if self.stride == self.window else f" every {self.stride / fs:g} s"
        return (f"input of {c.model}: {self.cache.path} at {fs:g} Hz, {self.window / fs:g} s windows{every} "
                f"(window outputs averaged per record), leads {' '.join(c.leads)}; {c.describe_steps()}")


# ------------------------------------------------------------------------------------------ results.json


@dataclass(frozen=True)
class Results:
    """The content of ``results.json``: the evaluation rows and the facts of the run that made them.

    Keys whose value is None are not written. ``other``: keys this version does not know (written by
    another one), kept as they were.
    """

    rows: list[ResultRow]  # "eval"
    recipe: str | None = None
    ecgforge_version: str | None = None
    seed: int | None = None
    cache: str | None = None
    cache_spec_hash: str | None = None
    pretrain_seconds: float | None = None  # pretraining and saving the encoder, without the evaluations
    pretraining: dict[str, Any] | None = None  # steps reached of max_steps and why it stopped (Trainer.outcome)
    eval_seconds: float | None = None
    warnings: list[str] | None = None  # lines the run printed as warnings (the worse-than-random guard)
    eval_overrides: list[str] | None = None  # `ecgforge eval --set` items of the last re-evaluation
    allowed_overlap: dict[str, Any] | None = None  # overlaps the recipe allows (app/leakage.py)
    scores: dict[str, Any] | None = None  # {"id", "files"}: the scores/ written with these rows (`write_scores`)
    other: dict[str, Any] = field(default_factory=dict)

    #: JSON key -> field, in the order written.
    _KEYS: ClassVar[dict[str, str]] = {"recipe": "recipe", "ecgforge_version": "ecgforge_version", "seed": "seed", "cache": "cache",
             "cache_spec_hash": "cache_spec_hash", "pretrain_seconds": "pretrain_seconds", "pretraining": "pretraining",
             "eval_seconds": "eval_seconds", "eval": "rows", "warnings": "warnings",
             "eval_overrides": "eval_overrides", "allowed_overlap": "allowed_overlap", "scores": "scores"}

    @classmethod
    def of_evaluation(cls, recipe: Recipe, cache: Cache, rows: list[ResultRow], *, warnings: list[str],
                      eval_seconds: float) -> Results:
        """The results of evaluating ``recipe`` on ``cache`` with this version: the one place both a run and
        ``ecgforge eval`` build them."""
        return cls(rows=list(rows), recipe=recipe.name, ecgforge_version=__version__, seed=recipe.seed,
                   cache=str(cache.path), cache_spec_hash=cache.spec_hash, eval_seconds=eval_seconds,
                   warnings=list(warnings))

    def replace(self, **changes: Any) -> Results:
        return dataclasses.replace(self, **changes)

    def over(self, previous: Results | None) -> Results:
        """These results of a re-evaluation written over ``previous``: what an evaluation does not redo (the
        pretraining time, keys of other versions) is kept from ``previous``; everything else is these."""
        if previous is None:
            return self
        kept = self.pretrain_seconds if self.pretrain_seconds is not None else previous.pretrain_seconds
        pretraining = self.pretraining if self.pretraining is not None else previous.pretraining
        return self.replace(pretrain_seconds=kept, pretraining=pretraining, other={**previous.other, **self.other})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, name in self._KEYS.items():
            value = getattr(self, name)
            if name == "rows":
                out[key] = [row.to_json() for row in value]
            elif value is not None:
                out[key] = value
        return {**out, **{k: v for k, v in self.other.items() if k not in out}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], source: str = "results.json") -> Results:
        """The results a parsed results.json describes; UserError (one line naming ``source``) if it is not one."""
        rows = d.get("eval", []) if isinstance(d, Mapping) else None
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise UserError(f"{source}: not a results file (expected an object whose \"eval\" is a list of rows)")
        known = {name: d[key] for key, name in cls._KEYS.items() if key in d and name != "rows"}
        other = {k: v for k, v in d.items() if k not in cls._KEYS}
        return cls(rows=rows_from_json(rows), **known, other=other)


# ------------------------------------------------------------------------------------------ the directory

#: Written last into a checkpoint: a ``step_<N>`` folder without it is not a checkpoint (not yet, or never).
PROGRESS = "progress.json"


class RunDir:
    """The layout of one run directory (see the module docstring) and the reads and writes that go with it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    recipe_toml = property(lambda self: self.path / "recipe.toml")
    resolved_toml = property(lambda self: self.path / "resolved.toml")
    env_json = property(lambda self: self.path / "env.json")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    metrics_jsonl = property(lambda self: self.path / "metrics" / "train.jsonl")
    results_json = property(lambda self: self.path / "results.json")
    plots_dir = property(lambda self: self.path / "plots")
    scores_dir = property(lambda self: self.path / "scores")

    # ------------------------------------------------------------------------------------- checkpoints

    def checkpoint(self, step: int) -> Path:
        """Where the checkpoint of optimiser step ``step`` lives (complete or not)."""
        return self.checkpoints_dir / f"step_{step}"

    def scratch_checkpoint(self, step: int) -> Path:
        """The folder a checkpoint is written into before it is renamed to `checkpoint` (``step``)."""
        return self.checkpoints_dir / f".step_{step}.tmp"

    @staticmethod
    def is_complete(checkpoint: Path) -> bool:
        """The one rule: a checkpoint is complete when its ``progress.json`` (written last) is there."""
        return (checkpoint / PROGRESS).is_file()

    def checkpoints(self) -> list[Path]:
        """The run's complete checkpoints, oldest first."""
        d = self.checkpoints_dir
        found = [p for p in d.glob("step_*") if self.is_complete(p)] if d.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest_checkpoint(self) -> Path | None:
        """The run's last complete checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def remove_scratch_checkpoints(self) -> None:
        """Remove what a process killed while saving left behind (``.step_<N>.tmp``, ``.step_<N>.old``)."""
        if self.checkpoints_dir.is_dir():
            for scratch in self.checkpoints_dir.glob(".step_*"):
                shutil.rmtree(scratch, ignore_errors=True)

    def prune_checkpoints(self, keep: int) -> None:
        """Remove all but the last ``keep`` complete checkpoints."""
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    # ----------------------------------------------------------------------------------------- results

    def read_results(self) -> Results | None:
        """results.json, or None where the run has none; UserError (one line) where it is not valid."""
        path = self.results_json
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return Results.from_json(raw, str(path))

    def write_results(self, results: Results) -> None:
        """Write results.json atomically (a reader sees the old file or the new one, never half of one)."""
        atomic_write_json(self.results_json, results.to_json())

    def merge_results(self, results: Results) -> Results:
        """Write ``results`` over the run's results.json (`Results.over`: the pretraining facts kept); returns
        what was written."""
        merged = results.over(self.read_results())
        self.write_results(merged)
        return merged

    # ------------------------------------------------------------------------------------------ scores

    def write_scores(self, tables: Sequence[Sequence[ResultRow]], bootstrap: Sequence[int]) -> dict[str, Any]:
        """Keep the test scores behind the rows in ``scores/``, so runs compare without re-evaluation.

        ``tables``: the rows of each ``[[eval]]`` table, in order (concatenated, they are results.json's rows);
        ``bootstrap``: each table's resamples. One ``eval_<i>.npz`` per table holding rows with storable
        evidence (`StoredRow`); the folder is replaced whole (no file of an earlier evaluation is left). Returns
        what results.json keeps as ``scores``: ``{"id", "files"}``, the id also in every file, so that scores
        and rows written by different evaluations (a process killed between the two writes) are told apart.
        """
        token = uuid.uuid4().hex
        files = []
        with atomic_dir(self.scores_dir) as tmp:
            position = 0
            for i, (rows, n_boot) in enumerate(zip(tables, bootstrap, strict=True)):
                arrays, entries = _ScoreArrays(), []
                for k, row in enumerate(rows, start=position):
                    ev = row.evidence
                    if ev is None or ev.form is None:
                        continue
                    facts = {n: v for n, v in ev.data.items() if not isinstance(v, np.ndarray)}
                    entries.append({"position": k, **_row_identity(row), "form": ev.form, "facts": facts,
                                    "records": arrays.add(ev.records), "units": arrays.add(ev.units),
                                    "arrays": {n: arrays.add(v) for n, v in ev.data.items() if isinstance(v, np.ndarray)}})
                position += len(rows)
                if not entries:
                    continue
                meta = {"id": token, "layout": SCORES_LAYOUT, "table": i, "bootstrap": int(n_boot), "rows": entries}
                name = f"eval_{i}.npz"
                with open(tmp / name, "wb") as f:
                    np.savez_compressed(f, meta=np.asarray(json.dumps(meta, default=json_default)), **arrays.named)
                files.append(name)
        return {"id": token, "files": files}

    def read_scores(self, results: Results | None = None) -> list[StoredRow] | None:
        """The stored scores of the rows of ``results`` (default: results.json), matched to their rows; None
        where the run keeps none (evaluated before ecgforge kept them). UserError (one line) where scores/ and
        results.json were not written by the same evaluation, or a file is missing or unreadable."""
        from ecgforge.evaluation.paired import restore_evidence

        results = results if results is not None else self.read_results()
        if results is None or results.scores is None:
            return None
        index, rerun = results.scores, f"rerun `ecgforge eval {self.path}`"
        stored = []
        for name in index.get("files", []):
            path = self.scores_dir / str(name)
            try:
                with np.load(path, allow_pickle=False) as npz:
                    meta = json.loads(str(npz["meta"]))
                    arrays = {k: npz[k] for k in npz.files if k != "meta"}
            except (OSError, ValueError, KeyError) as exc:
                raise UserError(f"{path}: unreadable stored scores ({exc}); {rerun}") from None
            if meta.get("id") != index.get("id"):
                raise UserError(f"{path}: written by another evaluation than {self.results_json}; {rerun}")
            for e in meta["rows"]:
                pos = e["position"]
                row = results.rows[pos] if pos < len(results.rows) else None
                if row is None or _row_identity(row) != {k: e[k] for k in _IDENTITY}:
                    raise UserError(f"{path}: row {pos} does not match {self.results_json}; {rerun}")
                data = {**e["facts"], **{n: arrays[key] for n, key in e["arrays"].items()}}
                evidence = restore_evidence(e["form"], arrays[e["records"]], arrays[e["units"]], data)
                stored.append(StoredRow(row, evidence, int(meta["bootstrap"])))
        return stored


#: The version of the scores/ files' layout.
SCORES_LAYOUT = 1
#: What ties a stored row to its results.json row.
_IDENTITY = ("kind", "task", "init", "label_fraction", "seed", "split", "conditions")


def _row_identity(row: ResultRow) -> dict[str, Any]:
    # Through JSON, as read back: a tuple condition compares equal to the list it becomes.
    return json.loads(json.dumps({k: getattr(row, k) for k in _IDENTITY}, default=json_default))


class _ScoreArrays:
    """The arrays of one scores file, each stored once however many rows share it (the test records of every
    row of a table, usually), under the key `add` returns."""

    def __init__(self) -> None:
        self.named: dict[str, np.ndarray] = {}
        self._by_digest: dict[str, str] = {}

    def add(self, a: np.ndarray) -> str:
        a = np.asarray(a)
        if a.dtype == object:  # strings: stored as fixed-width unicode, which loads without pickle
            a = a.astype(str)
        digest = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()).hexdigest()
        if digest not in self._by_digest:
            self._by_digest[digest] = key = f"a{len(self.named)}"
            self.named[key] = a
        return self._by_digest[digest]


@dataclass(frozen=True)
class StoredRow:
    """A results.json row with the evidence it was scored on, from the run's ``scores/``.

    Attributes:
        row: the results.json row.
        evidence: its test records, patients and what its metrics are computed from (`paired.Evidence`).
        bootstrap: the resamples its ``[[eval]]`` table used for intervals and ``versus``.
    """

    row: ResultRow
    evidence: Evidence
    bootstrap: int
