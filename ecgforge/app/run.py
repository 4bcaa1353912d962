"""Running a recipe: its cache, pretraining, the saved encoder, the evaluations, results.json and plots.

The application layer: it orchestrates the layers below and reports through a `Reporter`, and knows
nothing of the command line or of how progress is drawn.
"""

from __future__ import annotations

import copy
import hashlib
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from pydantic import ValidationError
from torch import nn

from ecgforge.app import preflight
from ecgforge.app.guard import guard_tables, table_label
from ecgforge.app.leakage import derived_from
from ecgforge.app.recipes import follow_contract, load_run_recipe, resolve_splits, spec_at
from ecgforge.config_files import to_toml_dict
from ecgforge.data.cache import Cache, CacheError
from ecgforge.data.cache_build import BuildSummary, build_cache
from ecgforge.data.cache_spec import CacheRecipe, load_cache_recipe
from ecgforge.encoder_files import initial_encoder, input_contract, read_contract, save_encoder
from ecgforge.encoders import ENCODERS
from ecgforge.encoders.foundation import InputContract
from ecgforge.errors import UserError, resolved_against
from ecgforge.evaluation import PROTOCOLS
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.paired import add_versus
from ecgforge.evaluation.rows import ResultRow
from ecgforge.fsio import atomic_write_json, atomic_write_text
from ecgforge.layers.device import default_device
from ecgforge.progress import Reporter
from ecgforge.recipe import Recipe
from ecgforge.registry import build
from ecgforge.rundir import Results, RunDir, RunLock, RunPlan, contract_input
from ecgforge.train.loop import Trainer, launch_mismatch, make_accelerator
from ecgforge.version import __version__


def build_cache_reported(spec: CacheRecipe, out: str | Path | None, reporter: Reporter,
                         workers: int | None = None) -> BuildSummary:
    """``build_cache`` with its progress sent to ``reporter``."""
    with reporter.task(f"cache {spec.name}") as update:
        return build_cache(spec, out, workers=workers, progress=lambda done, total: update(done, total))


def stale_cache(path: str | Path, spec: CacheRecipe, *, rebuild: bool, refusal: Callable[[Cache], str]) -> str | None:
    """Why the cache at ``path`` is to be built from ``spec``: "is absent", or, with ``rebuild``, "was built from
    another spec (--rebuild-cache)"; None where it was built from ``spec``. A cache built from another spec is
    refused (CacheError ``refusal(existing)``) unless ``rebuild``: it may be a cache made on purpose, with data
    this machine does not have."""
    if not Path(path).is_file():
        return "is absent"
    existing = Cache(path)
    try:
        if existing.spec_hash == spec.spec_hash():
            return None
        if not rebuild:
            raise CacheError(refusal(existing))
        return "was built from another spec (--rebuild-cache)"
    finally:
        existing.close()


def derive_cache(cache: Cache, contract: InputContract, reporter: Reporter) -> Cache:
    """``cache`` at ``contract``'s rate, derived as a run derives ``data.cache`` from ``data.build``
    (`follow_contract`, `Run.ensure_cache`): the cache itself where it is at that rate; else the cache of the spec
    it was built from (stored in it) at the contract's rate, beside it (`spec_at`), built from that spec's source
    where absent. ``rundir.contract_input`` then reads it as the model does.

    Raises:
        UserError: one line where no such cache can be had (the stored spec unreadable, its source not on this
            machine, a cache of another spec where the derived one goes).
    """
    fs = contract.fs_hz
    if abs(cache.fs_hz - fs) <= 1e-6:
        return cache
    given = f"{contract.model} takes {fs:g} Hz but {cache.path} is {cache.fs_hz:g} Hz"
    todo = f"build a cache at {fs:g} Hz (`ecgforge cache build`, signal.fs_hz = {fs:g})"
    try:
        spec = spec_at(CacheRecipe.model_validate(cache.spec), str(cache.path), fs)
    except ValidationError as exc:
        raise UserError(f"{given}, and the spec it was built from does not validate here "
                        f"({exc.errors()[0]['msg']}); {todo}") from None
    why = stale_cache(spec.out, spec, rebuild=False, refusal=lambda existing: (
        f"{given}; its spec at {fs:g} Hz goes to {spec.out}, which holds a cache of another spec "
        f"({existing.spec_hash}, not {spec.spec_hash()}); move that file away or {todo}"))
    if why is not None:
        reporter.note(f"{given}: deriving {spec.out} (the spec of {cache.path} at {fs:g} Hz; records resampled "
                      "polyphase from the source)")
        try:
            build_cache_reported(spec, spec.out, reporter)
        except UserError as exc:
            raise UserError(f"{given}, and its source cannot be read here to derive one ({exc}); {todo}") from None
    return Cache(spec.out)


def env_info(accelerator: Accelerator, recipe: Recipe, cache: Cache | None) -> dict[str, Any]:
    import accelerate
    import h5py
    import scipy
    import sklearn
    import wfdb

    return {
        "ecgforge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
        "scikit-learn": sklearn.__version__,
        "wfdb": wfdb.__version__,
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "world_size": accelerator.num_processes,
        "precision": recipe.train.precision,
        "cache": str(cache.path) if cache else None,
        "cache_spec_hash": cache.spec_hash if cache else None,
        "argv": sys.argv,
        "launch_warning": launch_mismatch(accelerator.num_processes),
    }


def eval_context(plan: RunPlan, encoder: nn.Module, device: torch.device, reporter: Reporter,
                 run_dir: Path | None = None) -> EvalContext:
    """What the plan's protocols run in: its cache, window and stride, ``encoder`` as the ``pretrained`` init (a
    copy each time) and the recipe's encoder freshly built for the others; a protocol's own ``cache =`` read as
    the plan's cache is (at the model's rate and through its input contract, where the plan has one)."""
    r = plan.recipe
    trained = copy.deepcopy(getattr(encoder, "_orig_mod", encoder)).cpu()

    def make_encoder(init: str, seed: int) -> nn.Module:
        if init == "pretrained":
            return copy.deepcopy(trained)
        torch.manual_seed(seed)
        return build(ENCODERS, r.model.encoder)

    def open_cache(path: str) -> Cache:
        own = Cache(path)
        if plan.contract is None:
            return own
        return contract_input(derive_cache(own, plan.contract, reporter), plan.contract)[0]

    return EvalContext(
        cache=plan.cache, splits=r.data.splits, window=plan.window, stride=plan.stride, make_encoder=make_encoder,
        device=device, batch_size=max(r.train.batch_size, 64), num_workers=r.data.num_workers,
        exclude_ptbxl_overlap=r.data.exclude_ptbxl_overlap, run_dir=run_dir, reader=open_cache,
    )


def evaluate(plan: RunPlan, encoder: nn.Module, device: torch.device, reporter: Reporter,
             run_dir: Path | None = None) -> Results:
    """Every ``[[eval]]`` table of the plan's recipe on ``encoder`` (and its reference initialisations).

    With ``run_dir``, the rows' test scores are written to its ``scores/`` (`RunDir.write_scores`) and the
    results name them; the caller writes results.json. For each table that has a random-init reference where
    the encoder is worse than it at every label fraction, one line says so (``reporter.note``) and the results'
    ``warnings`` keep it.
    """
    t0 = time.perf_counter()
    r, cache = plan.recipe, plan.cache
    warnings: list[str] = []
    ctx = eval_context(plan, encoder, device, reporter, run_dir)
    tables: list[list[ResultRow]] = []
    for i, ev in enumerate(r.eval):
        reporter.note(f"eval [{i}] {ev.kind} on {getattr(ev, 'task', '')}")
        table = add_versus(build(PROTOCOLS, ev).run(ctx), ev.bootstrap)
        for line in guard_tables([(table_label(i, ev), table)]):
            reporter.note(f"warning: {line}")
            warnings.append(line)
        tables.append(table)
    ctx.features.clear()
    results = Results.of_evaluation(r, cache, [row for t in tables for row in t], warnings=warnings,
                                    eval_seconds=time.perf_counter() - t0)
    if run_dir is None:
        return results
    # Before results.json, which the caller writes with the scores' id: a comparison never needs a re-evaluation.
    return results.replace(scores=RunDir(run_dir).write_scores(tables, [ev.bootstrap for ev in r.eval]))


def spec_mismatch(path: str | Path, cache: Cache, build: str | Path, spec: CacheRecipe) -> str:
    """``PATH was built from spec NAME (HASH) but data.build BUILD is spec NAME (HASH): FIELD = A in the cache, B
    in BUILD; ...`` (the first three fields that differ)."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    ignored = {"out", "name", "workers", "source.path"}  # not part of the spec hash (CacheRecipe.spec_hash)
    have, want = flat(cache.spec), flat(spec.model_dump(mode="json"))
    diff = [f"{k} = {have.get(k, '(absent)')!r} in the cache, {want.get(k, '(absent)')!r} in {build}"
            for k in sorted((set(have) | set(want)) - ignored) if have.get(k) != want.get(k)]
    fields = "; ".join(diff[:3]) + (f"; {len(diff) - 3} more" if len(diff) > 3 else "")
    return (f"{path} was built from spec {cache.spec.get('name', cache.name)!r} ({cache.spec_hash}) but data.build "
            f"{build} is spec {spec.name!r} ({spec.spec_hash()})" + (f": {fields}" if fields else ""))


def budget_stop_line(pretraining: dict[str, Any], recipe: str, run_dir: Path) -> str | None:
    """The warning for a run whose ``train.time_budget_s`` ended pretraining before its last step, else None."""
    if pretraining.get("stopped_by") != "time_budget_s":
        return None
    return (f"pretraining stopped at step {pretraining['steps']} of {pretraining['max_steps']}: train.time_budget_s = "
            f"{pretraining['time_budget_s']:g} s ran out; the evaluations are of this partly trained encoder; "
            f"`ecgforge run {recipe} --out {run_dir} --resume` continues it to step {pretraining['max_steps']}")


class Run:
    """Pretrain (if the recipe has ``[ssl]``), save the encoder, run the evaluations, write results."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = False, reporter: Reporter | None = None,
                 recipe_text: str | None = None, source: str = "recipe", rebuild_cache: bool = False) -> None:
        self.recipe, self.run_dir, self.resume, self.rebuild_cache = recipe, Path(run_dir), resume, rebuild_cache
        self.dir = RunDir(self.run_dir)
        self.reporter = reporter or Reporter()
        self.recipe_text = recipe_text
        self.source = source  # the recipe's path, for error lines
        self.accelerator = make_accelerator(recipe, self.run_dir)
        self.is_main = self.accelerator.is_main_process
        mismatch = launch_mismatch(self.accelerator.num_processes)
        if mismatch:  # before any training: the user asked for something else
            self.reporter.note(f"warning: {mismatch}")

    def ensure_cache(self, spec: CacheRecipe | None = None) -> Cache:
        """Open the recipe's cache, building it from ``[data].build`` (or ``spec``: the spec of a cache derived
        from it, `follow_contract`) when absent. A cache built from another spec is refused (one line naming
        both specs), and rebuilt only when the run was asked to (``rebuild_cache``): it may be a cache made on
        purpose, with data this machine does not have."""
        d = self.recipe.data
        if d.build is None and spec is None:
            if not Path(d.cache).is_file():
                raise CacheError(f"{d.cache}: no such cache{resolved_against(d.cache)}; build it with `ecgforge cache build` or set [data].build")
            return Cache(d.cache, in_memory=d.in_memory)
        derived = spec is not None
        spec = spec or load_cache_recipe(d.build)
        # Every process checks: all of them refuse a mismatch, none waits for a build.
        why = stale_cache(d.cache, spec, rebuild=self.rebuild_cache, refusal=lambda existing: (
            f"{self.source}: data.cache: {spec_mismatch(d.cache, existing, d.build, spec)}; "
            "rerun with --rebuild-cache to replace it, or point data.cache at another file"))
        if self.is_main:
            if why:
                self.reporter.note(f"cache {d.cache} {why}: building it from {d.build}"
                                   + (f" at {spec.signal.fs_hz:g} Hz" if derived else ""))
                summary = build_cache_reported(spec, d.cache, self.reporter)
                self.reporter.note(f"cache {summary.path}: {summary.n_records} records, {summary.n_skipped} "
                                   f"skipped, {summary.seconds:.1f} s")
        self.accelerator.wait_for_everyone()
        return Cache(d.cache, in_memory=d.in_memory)

    def write_run_files(self, cache: Cache | None) -> None:
        if not self.is_main:
            return
        if self.recipe_text is not None and not (self.resume and self.dir.recipe_toml.exists()):
            atomic_write_text(self.dir.recipe_toml, self.recipe_text)
        import tomli_w

        atomic_write_text(self.dir.resolved_toml, tomli_w.dumps(to_toml_dict(self.recipe)))
        atomic_write_json(self.dir.env_json, env_info(self.accelerator, self.recipe, cache))

    def save_encoder(self, encoder: nn.Module, cache: Cache) -> None:
        if not self.is_main:
            return
        enc = getattr(encoder, "_orig_mod", encoder)
        # A foundation-model encoder's own input contract (its lead selection, scaling, filters) goes along.
        own = enc.contract.encoder_json() if hasattr(getattr(enc, "contract", None), "encoder_json") else {}
        save_encoder(
            enc, self.recipe.model.encoder, self.run_dir,
            {
                **own,
                "fs_hz": cache.fs_hz, "window_s": self.recipe.data.window_s, "leads": cache.leads, "units": "mV",
                "normalisation": own.get("normalisation", "none (physical units, mV)"), "recipe": self.recipe.name,
                "recipe_hash": hashlib.sha256(self.recipe.model_dump_json().encode()).hexdigest()[:16],
                "pretrained": self.recipe.ssl.kind if self.recipe.ssl else None,
                # The released foundation model the weights start from (its licence and pretraining data
                # travel with every later export and evaluation); absent when there is none.
                **({"derived_from": origin} if (origin := derived_from(
                    self.recipe.model.init, getattr(self.recipe.model.encoder, "kind", None))) else {}),
            },
        )

    def run(self) -> dict[str, Any]:
        """Returns what results.json holds (empty on every process but the main one)."""
        r = self.recipe
        set_seed(r.seed)
        preflight.check(r, self.source)  # before the cache is built: what the recipe alone gets wrong
        # A model.init with its own input contract (a foundation model) is fed as its contract says: its
        # window and stride, a cache at its rate derived from data.build, its filters and scaling (RunPlan).
        contract = input_contract(read_contract(r.model.init)) if r.model.init is not None else None
        spec = None
        if contract is not None:
            r, spec = follow_contract(r, contract, self.reporter.note)
            self.recipe = r
        cache = self.ensure_cache(spec)
        r = self.recipe = resolve_splits(r, cache, self.reporter.note)  # a suite on a subset of its folds
        # Before any training: splits, tasks and leakage against the cache, refused here, not at evaluation.
        checked = preflight.check(r, self.source, cache)
        for line in checked.warnings:
            self.reporter.note(f"warning: {line}")
        plan = RunPlan.build(r, cache, contract)
        if (line := plan.input_line()) is not None:
            self.reporter.note(line)
        self.write_run_files(cache)
        t0 = time.perf_counter()
        # Fresh, or the saved weights of [model] init (contract checked against this cache, strict load).
        encoder = initial_encoder(r.model, fs_hz=cache.fs_hz, leads=cache.leads, source=str(cache.path),
                                  window_s=r.data.window_s)
        pretraining, stopped = None, None
        if r.ssl is not None:
            trainer = Trainer(plan, self.dir, self.accelerator, resume=self.resume, reporter=self.reporter)
            encoder = trainer.fit(encoder)
            pretraining = trainer.outcome()
            stopped = budget_stop_line(pretraining, self.source, self.run_dir)
            if stopped:
                self.reporter.note(f"warning: {stopped}")
        self.save_encoder(encoder, cache)
        pretrain_seconds = time.perf_counter() - t0  # before the evaluations, which can take longer than pretraining
        results: dict[str, Any] = {}
        if self.is_main:
            evaluated = evaluate(plan, encoder, self.accelerator.device, self.reporter, self.run_dir)
            evaluated = evaluated.replace(pretrain_seconds=pretrain_seconds, allowed_overlap=checked.allowed_overlap,
                                          pretraining=pretraining,
                                          warnings=[*([stopped] if stopped else []), *checked.warnings,
                                                    *(evaluated.warnings or [])])
            self.dir.write_results(evaluated)
            results = evaluated.to_json()
            from ecgforge.app.report import plot_run

            plot_run(self.run_dir)
        self.accelerator.wait_for_everyone()
        return results


def evaluate_run(run_dir: Path, overrides: list[str], reporter: Reporter | None = None) -> dict[str, Any]:
    """``ecgforge eval``: the run's ``[[eval]]`` tables (from resolved.toml with ``overrides``) on its saved
    encoder, without pretraining; rewrites results.json (the pretraining time and unknown keys kept,
    `Results.over`) and the plots."""
    from ecgforge.app.report import plot_run
    from ecgforge.encoder_files import check_contract, load_encoder_weights

    reporter = reporter or Reporter()
    rd = RunDir(run_dir)
    resolved = rd.resolved_toml
    if not resolved.is_file():
        raise UserError(f"{run_dir}: no resolved.toml here (not a run directory)")
    r = load_run_recipe(resolved, overrides)
    if not r.eval:
        raise UserError(f"{resolved}: eval: the recipe has no [[eval]] table (add one with --set or in the recipe)")
    encoder, meta = load_encoder_weights(run_dir)
    if meta["config"] != r.model.encoder.model_dump(mode="json"):
        # The random/supervised references are built from model.encoder: they must match the saved weights.
        raise UserError(f"{resolved}: model.encoder differs from {run_dir / 'encoder.json'}; eval cannot change the encoder")
    cache = Cache(r.data.cache, in_memory=r.data.in_memory)
    r = resolve_splits(r, cache, reporter.note)
    check_contract(meta, fs_hz=cache.fs_hz, leads=list(cache.leads), source=str(cache.path))
    checked = preflight.check(r, str(resolved), cache)
    for line in checked.warnings:
        reporter.note(f"warning: {line}")
    with RunLock(run_dir):
        plan = RunPlan.build(r, cache, input_contract(meta))
        if (line := plan.input_line()) is not None:
            reporter.note(line)
        evaluated = evaluate(plan, encoder, default_device(), reporter, run_dir)
        results = rd.merge_results(evaluated.replace(eval_overrides=list(overrides),
                                                     allowed_overlap=checked.allowed_overlap,
                                                     warnings=[*checked.warnings, *(evaluated.warnings or [])]))
        plot_run(run_dir)
    return results.to_json()
