"""The pretraining loop on Accelerate: the only module that imports it.

One code path serves a laptop CPU, one GPU and many (``accelerate launch -m ecgforge run ...``): Accelerate
places the model, shards the data, averages gradients and handles mixed precision. Objectives declare
their optimiser groups and phases (see ``objectives.base``); the loop steps each phase's optimiser in turn,
with only that group's parameters requiring gradients, so alternating min-max objectives need no special
case here. Progress goes to a `Reporter` (``ecgforge.progress``), which the loop does not render.

`Trainer` takes the run's plan (window, split indices, build context: ``rundir.RunPlan``) and directory
(``rundir.RunDir``: where checkpoints go and which is the last complete one). It is set up once (``setup``),
may continue from the last checkpoint (``resume``), then ``fit`` runs ``step`` per batch, ``log`` per log
window and ``save_checkpoint`` per checkpoint interval. A resumed run is bit-identical to an uninterrupted
one: every process's RNG states, the data order (``EpochSampler``) and the log window travel in the checkpoint.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import (
    ProjectConfiguration,
    is_mlflow_available,
    is_tensorboard_available,
    is_wandb_available,
    set_seed,
)
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ecgforge.config_files import to_toml_dict
from ecgforge.data.dataset import RandomWindows, collate_windows
from ecgforge.data.splits import task_targets
from ecgforge.encoders import ENCODERS
from ecgforge.errors import UserError
from ecgforge.fsio import atomic_write_json, replace_dir
from ecgforge.interrupts import StopOnSignal
from ecgforge.objectives import OBJECTIVES
from ecgforge.progress import Reporter
from ecgforge.recipe import Recipe
from ecgforge.registry import build
from ecgforge.rundir import PROGRESS, MetricsLog, RunDir, RunPlan
from ecgforge.train.collapse import EmbeddingProbe
from ecgforge.train.monitor import OnlineMonitor, draw_subset
from ecgforge.train.optim import make_optimizer, make_schedule


class EpochSampler(Sampler[int]):
    """A permutation drawn from ``(seed, epoch)``: the same order on every run and after a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0  # optimiser steps completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    samples: int = 0
    elapsed_s: float = 0.0
    world_size: int = 1  # batch_in_epoch counts per-process batches: a resume needs the same world size
    pending_logs: list[dict[str, float]] = field(default_factory=list)  # logged steps not yet written
    stopped_by: str | None = None  # "time_budget_s": train.time_budget_s ended pretraining before its last step
    budget_lifted: bool = False  # resumed after the time budget stopped it: runs to the last step, budget ignored


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C to the main process, which stops at a step boundary and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def launch_mismatch(num_processes: int) -> str | None:
    """The warning for a launch that asked for several processes but runs as ``num_processes`` == 1, else None.

    ``accelerate launch --cpu --num_processes N`` (no ``--multi_cpu``) uses Accelerate's simple launcher: one
    process, with only MASTER_ADDR/MASTER_PORT set for the N asked (WORLD_SIZE, which a real multi-process
    launcher sets, is absent).
    """
    asked = "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ
    if num_processes != 1 or not asked:
        return None
    return ("the launch asked for several processes (MASTER_ADDR is set) but this is one process: training runs "
            "once, on one process; for N CPU processes launch `torchrun --nproc_per_node N -m ecgforge run ...` "
            "or `accelerate launch --multi_cpu --num_processes N -m ecgforge run ...`")


def make_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    """The run's Accelerator (precision, accumulation, DDP settings, experiment trackers), refusing a launch that
    asked for several processes but got one (N independent runs would share one directory)."""
    t = recipe.train
    for name in t.trackers:
        check = _TRACKER_CHECKS.get(name)
        if check is not None and not check():
            raise UserError(f"train.trackers: {name!r} needs the {name} package: pip install 'ecgforge[{name}]'")
    # Alternating phases change which parameters get gradients; one phase may still leave some unused
    # (wav2vec2's mask embedding under SimCLR): a static graph lets DDP learn that set once.
    multi_phase = recipe.ssl is not None and len(dict.fromkeys(recipe.ssl.phases)) > 1
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched == 1:
        # Accelerate keeps its settings in process-wide singletons, so a second run in one process (a notebook,
        # `ecgforge eval` after a run, a test session) with another precision would be refused. Not launched as
        # several processes: nothing else shares that state, start it afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    ddp = DistributedDataParallelKwargs(find_unused_parameters=multi_phase, static_graph=not multi_phase)
    acc = Accelerator(
        mixed_precision=t.precision,
        gradient_accumulation_steps=t.grad_accum_steps,
        kwargs_handlers=[ddp],
        # Schedules count optimiser steps; Accelerate's default would step them once per process per step.
        step_scheduler_with_optimizer=False,
        log_with=list(t.trackers) or None,
        # Trackers that write files (TensorBoard events) write them under RUN/tb/<recipe name>/.
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tb")) if t.trackers else None,
    )
    if launched > 1 and acc.num_processes == 1:
        raise UserError(
            f"launched as {launched} processes but Accelerate started a single-process run; on CPU set "
            "ACCELERATE_USE_CPU=true (see docs/scaling.md)"
        )
    return acc


#: Tracker -> the Accelerate check that its package is installed (trackers ecgforge has no extra for are
#: checked by Accelerate itself when it starts them).
#: Lambdas: the check is looked up when called, so a test can replace it.
_TRACKER_CHECKS = {"tensorboard": lambda: is_tensorboard_available(), "mlflow": lambda: is_mlflow_available(),
                   "wandb": lambda: is_wandb_available()}


def tracker_config(recipe: Recipe) -> dict[str, bool | int | float | str]:
    """The resolved recipe as one flat table (``train.batch_size``: 64) of the scalar types every tracker stores
    as hyperparameters; lists and tables below a key are kept whole as JSON text."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (bool, int, float, str)):
            out[prefix] = node
        else:  # a list, an empty table
            out[prefix] = json.dumps(node, default=str)

    walk("", to_toml_dict(recipe))
    return out


def start_trackers(acc: Accelerator, recipe: Recipe, run_dir: Path) -> None:
    """``init_trackers`` with the resolved recipe as the run's config: the project is the recipe's name (the
    W&B project, the MLflow experiment, TensorBoard's folder under RUN/tb), the run is the run directory's name.
    MLflow without ``MLFLOW_TRACKING_URI`` keeps its store in RUN/mlflow.db (SQLite: offline, beside the run;
    MLflow 3 refuses its older ``./mlruns`` folder store by default)."""
    if "mlflow" in recipe.train.trackers and "MLFLOW_TRACKING_URI" not in os.environ and acc.is_main_process:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    acc.init_trackers(recipe.name, config=tracker_config(recipe),
                      init_kwargs={"mlflow": {"run_name": run_dir.name}, "wandb": {"name": run_dir.name, "dir": str(run_dir)}})


class Trainer:
    """Pretrain ``recipe.ssl`` on a cache: ``Trainer(...).fit(encoder)`` returns the trained encoder."""

    def __init__(self, plan: RunPlan, run_dir: RunDir, accelerator: Accelerator, *,
                 resume: bool = False, reporter: Reporter | None = None) -> None:
        self.plan, self.recipe, self.cache = plan, plan.recipe, plan.cache
        self.dir, self.run_dir, self.acc = run_dir, run_dir.path, accelerator
        self.resume_requested = resume
        self.reporter = reporter or Reporter()
        self.is_main = accelerator.is_main_process

    # ----------------------------------------------------------------------------------------- setup

    def setup(self, encoder: nn.Module) -> None:
        """Objective, data, optimisers and schedules for ``encoder``, prepared by Accelerate."""
        r, t, acc, cache = self.recipe, self.recipe.train, self.acc, self.cache
        window, train_idx = self.plan.window, self.plan.pretrain_indices
        targets = None
        ctx = self.plan.ctx.replace(encoder=encoder)
        if r.ssl.needs_labels:  # targets first: the objective's head needs their width
            targets = task_targets(cache, r.ssl.task, train_idx)
            ctx = ctx.replace(n_classes=1 if targets.task_type == "regression" else len(targets.names))
        objective = build(OBJECTIVES, r.ssl, ctx)
        self.ds = RandomWindows(cache, train_idx, window, n_segments=r.ssl.n_segments, seed=r.seed,
                                targets=targets, segment_pairing=r.ssl.segment_pairing)
        if len(self.ds) < t.batch_size * acc.num_processes:
            raise UserError(
                f"pretraining split {r.data.pretrain_split!r} has {len(self.ds)} records, fewer than one batch "
                f"({t.batch_size} x {acc.num_processes} processes); lower train.batch_size"
            )
        if acc.num_processes > 1 and t.sync_batchnorm:
            if acc.device.type == "cpu":
                # torch's SyncBatchNorm has no CPU kernel: with gloo each process normalises over its own batch.
                if self.is_main:
                    self.reporter.note("train.sync_batchnorm: not available on CPU; BatchNorm uses each "
                                       "process's own batch")
            else:
                objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
        # Augmentations draw from torch's global generator: one stream per process (process 0 keeps `seed`, so
        # a one-process run is unchanged); DDP broadcasts process 0's initial weights, so models start equal.
        set_seed(r.seed, device_specific=True)
        self.sampler = EpochSampler(len(self.ds), r.seed)
        loader = DataLoader(
            self.ds, batch_size=t.batch_size, sampler=self.sampler, drop_last=True, num_workers=r.data.num_workers,
            collate_fn=collate_windows, persistent_workers=False, pin_memory=torch.cuda.is_available(),
            # Its own generator: the worker base seed drawn by every iter() must not advance the global one,
            # or a resumed epoch (a fresh iter() after load_state) would see other augmentations.
            generator=torch.Generator().manual_seed(r.seed),
            worker_init_fn=_ignore_sigint if r.data.num_workers else None,
        )
        self.loader = acc.prepare(loader)  # first: its per-process length fixes the schedule's length
        groups = objective.param_groups()
        missing = [p for p in r.ssl.phases if p not in groups]
        if missing:
            raise ValueError(f"objective {r.ssl.kind!r} has no parameter group {missing}")
        # Accelerate also syncs at the end of each epoch's data, so a short last accumulation still steps.
        steps_per_epoch = max(1, math.ceil(len(self.loader) / t.grad_accum_steps))
        self.total = min(t.max_steps or 10**12, steps_per_epoch * t.epochs)
        optims = {g: make_optimizer(t.optim[g], groups[g]) for g in dict.fromkeys(r.ssl.phases)}
        scheds = {g: make_schedule(t.schedule, o, self.total) for g, o in optims.items()}
        if t.compile:
            objective.encoder = torch.compile(objective.encoder)
        names = list(optims)
        prepared = acc.prepare(objective, *optims.values(), *scheds.values())
        self.objective = prepared[0]
        self.optims = dict(zip(names, prepared[1 : 1 + len(names)], strict=True))
        self.scheds = dict(zip(names, prepared[1 + len(names) : 1 + 2 * len(names)], strict=True))
        self.inner = acc.unwrap_model(self.objective)
        self.groups = groups
        self.group_ids = {g: {id(p) for p in groups[g]} for g in names}
        self.all_params = list(self.inner.parameters())
        self.trainable = {id(p) for g in names for p in groups[g]}
        self.state = LoopState(world_size=acc.num_processes)
        self.resume_step: int | None = None
        # Per-step logs of the current log window: `pending` (local tensors, not yet averaged over processes, so
        # that a step costs no host-device sync) and `reduced` (floats; carried in checkpoints so the first row
        # after a resume averages the same steps as it would have without the interruption).
        self.pending: list[dict[str, torch.Tensor]] = []
        self.reduced: list[dict[str, float]] = []
        # Collapse monitor: embedding statistics of the last step of each log window (this process's batch).
        self.embed_probe = EmbeddingProbe(self.inner.encoder)
        # Online probe (main process only; the others meet it at the next collective): the subset is read now.
        self.monitor: OnlineMonitor | None = None
        if t.monitor is not None and self.is_main:
            m = t.monitor
            subset = draw_subset(m, cache, self.plan.split_indices[m.split], window, self.plan.stride, r.seed)
            self.monitor = OnlineMonitor(m, subset, acc.device, r.seed, batch_size=max(t.batch_size, 64))

    def resume(self) -> None:
        """Remove half-written checkpoints; with ``--resume``, load the last complete one (every process's part)."""
        acc = self.acc
        if self.is_main:
            self.dir.remove_scratch_checkpoints()  # left by a process killed while saving
        acc.wait_for_everyone()
        ckpts = self.dir.checkpoints()
        if self.resume_requested and ckpts:
            saved = LoopState(**json.loads((ckpts[-1] / PROGRESS).read_text()))
            if saved.world_size != acc.num_processes:
                raise UserError(
                    f"{ckpts[-1]}: written by {saved.world_size} process(es); resume with the same number "
                    f"(this launch has {acc.num_processes}), or start over with --overwrite"
                )
            acc.load_state(str(ckpts[-1]))  # model, optimisers, schedulers, scaler, every process's RNGs
            self.state = saved
            self.resume_step = saved.step
            lifted = saved.stopped_by == "time_budget_s" and saved.step < self.total
            if lifted:  # the budget stopped this run once; resuming it asks for the rest
                saved.stopped_by, saved.budget_lifted = None, True
            if self.is_main:
                self.reporter.note(f"resume from {ckpts[-1].name} (epoch {saved.epoch}, step {saved.step})"
                                   + (f": it was stopped by train.time_budget_s; continuing to step {self.total} "
                                      "without the budget" if lifted else ""))
        self.reduced = list(self.state.pending_logs)

    # ------------------------------------------------------------------------------------------ steps

    def step(self, batch: dict[str, torch.Tensor], micro: dict[str, list[torch.Tensor]]) -> None:
        """One batch: every phase's forward, backward and (at accumulation boundaries) optimiser step; the
        phase logs are appended to ``micro``."""
        acc, t, names = self.acc, self.recipe.train, list(self.optims)
        with acc.accumulate(self.objective):
            for phase in self.recipe.ssl.phases:
                if len(names) > 1:  # only this phase's group accumulates gradients
                    for p in self.all_params:
                        p.requires_grad_(id(p) in self.group_ids[phase] or id(p) not in self.trainable)
                loss, phase_logs = self.objective(batch, phase)
                acc.backward(loss)
                if acc.sync_gradients and t.grad_clip_norm:
                    acc.clip_grad_norm_(self.groups[phase], t.grad_clip_norm)
                self.optims[phase].step()
                if acc.sync_gradients and not self.optims[phase].step_was_skipped:  # fp16 overflow: no step
                    self.scheds[phase].step()
                self.optims[phase].zero_grad(set_to_none=True)
                for k, v in phase_logs.items():
                    micro.setdefault(f"{phase}/{k}" if len(names) > 1 else k, []).append(v.detach())

    def reduce_pending(self, interrupt: bool, out_of_time: bool) -> tuple[bool, bool]:
        """Average ``pending`` over processes into ``reduced``; returns (any interrupted, any out of time)."""
        acc, pending = self.acc, self.pending
        keys = list(pending[0]) if pending else []
        vec = torch.cat([*(torch.stack([p[k] for p in pending]).float() for k in keys),
                         torch.tensor([float(interrupt), float(out_of_time)], device=acc.device)])
        if acc.num_processes > 1:
            vec = acc.reduce(vec, "mean")
        values = vec[:-2].view(len(keys), len(pending)).cpu().tolist() if keys else []
        self.reduced.extend({k: values[j][i] for j, k in enumerate(keys)} for i in range(len(pending)))
        pending.clear()
        flags = vec[-2:].cpu().tolist()
        return flags[0] > 0, flags[1] > 0

    def log_row(self, now: float, span: float, samples: int, wait: float, t_start: float) -> dict[str, Any]:
        """The metrics/train.jsonl row of the log window that just ended (``reduced`` averaged)."""
        s = self.state
        row: dict[str, Any] = {k: float(np.mean([w[k] for w in self.reduced])) for k in self.reduced[0]}
        row.update(self.embed_probe.take())
        row.update(step=s.step, epoch=s.epoch, samples=s.samples,
                   lr={g: sch.get_last_lr()[0] for g, sch in self.scheds.items()},
                   samples_per_s=samples / span, data_wait_frac=min(1.0, wait / span), elapsed_s=now - t_start)
        self.reduced.clear()
        return row

    def monitor_row(self, log: MetricsLog | None, reference: bool = False) -> float:
        """Score the online monitor at the current step; write its row and send it to the trackers. Returns
        the seconds it took (left out of the throughput of the log window it interrupts)."""
        if self.monitor is None:
            return 0.0
        t0 = time.perf_counter()
        armed, self.embed_probe.armed = self.embed_probe.armed, False  # the monitor's embeddings are not a batch's
        encoder = self.inner.encoder
        values: dict[str, float] = {}
        if reference:
            values.update(self.monitor.reference(lambda: build(ENCODERS, self.recipe.model.encoder)))
        values.update(self.monitor.check(encoder, self.state.step))
        self.embed_probe.armed = armed
        seconds = time.perf_counter() - t0
        values["monitor/seconds"] = seconds
        if log is not None:
            log.write({**values, "step": self.state.step, "epoch": self.state.epoch, "samples": self.state.samples})
        if self.recipe.train.trackers:
            self.acc.log(values, step=self.state.step)
        return seconds

    def save_checkpoint(self) -> None:
        """Every process writes its part into one scratch folder (its RNG states; process 0 also the model,
        optimisers, schedulers and progress), renamed to ``step_<N>`` when complete: a kill at any moment
        leaves the previous checkpoints intact. Needs a filesystem shared by all nodes."""
        acc, s = self.acc, self.state
        if self.dir.is_complete(self.dir.checkpoint(s.step)) and s.step != self.resume_step:
            return  # saved at this very step already (a checkpoint step that was also the last)
        tmp = self.dir.scratch_checkpoint(s.step)
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        s.pending_logs = list(self.reduced)
        try:
            acc.save_state(str(tmp), safe_serialization=True)
        except RuntimeError as exc:
            # torch's zip writer reports a write that failed (a full disk) as "unexpected pos N vs M": say so,
            # so the CLI prints one line; the previous checkpoints are untouched and the scratch folder goes
            # at the next start.
            if "unexpected pos" in str(exc) or "file write failed" in str(exc) or \
                    shutil.disk_usage(tmp).free < 1 << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from exc
            raise
        acc.wait_for_everyone()
        if self.is_main:
            atomic_write_json(tmp / PROGRESS, asdict(s))  # last: it makes the checkpoint complete
            replace_dir(tmp, self.dir.checkpoint(s.step))  # the same step again: a complete resumed run
            self.dir.prune_checkpoints(self.recipe.train.keep_checkpoints)
        acc.wait_for_everyone()

    def note_budget(self, spent: bool) -> None:
        """Record in the state (and so in the next checkpoint) that the time budget ends pretraining here."""
        if spent and self.state.step < self.total:
            self.state.stopped_by = "time_budget_s"

    def outcome(self) -> dict[str, Any]:
        """What pretraining reached, for results.json: ``steps`` done of ``max_steps``, ``seconds`` (all
        invocations), and ``stopped_by`` ("time_budget_s" where the time budget ended it early, else None)."""
        s = self.state
        return {"steps": s.step, "max_steps": self.total, "seconds": round(s.elapsed_s, 3),
                "stopped_by": s.stopped_by, "time_budget_s": self.recipe.train.time_budget_s}

    # -------------------------------------------------------------------------------------------- fit

    def fit(self, encoder: nn.Module) -> nn.Module:
        """Set up, resume if asked, train to the step budget (or a signal, or the time budget); the encoder."""
        self.setup(encoder)
        self.resume()
        r, t, acc = self.recipe, self.recipe.train, self.acc
        state, loader = self.state, self.loader
        log = MetricsLog(self.dir.metrics_jsonl, self.resume_step) if self.is_main else None
        if t.trackers:
            start_trackers(acc, r, self.run_dir)
        t_start = time.perf_counter() - state.elapsed_s
        window_t, window_samples, window_wait = time.perf_counter(), 0, 0.0
        batch_size_global = t.batch_size * acc.num_processes
        budget = None if state.budget_lifted else t.time_budget_s
        budget_spent = budget is not None and state.elapsed_s >= budget
        self.note_budget(budget_spent)
        stop = state.step >= self.total or budget_spent
        interrupted = False
        if self.resume_step is None:  # step 0: the initial encoder and the random reference (kept on resume)
            self.monitor_row(log, reference=self.monitor is not None and self.monitor.cfg.reference)
        ctx = self.reporter.task(f"pretrain {r.ssl.kind}", self.total, state.step) if self.is_main else _no_task()
        with ctx as update, StopOnSignal() as signalled:
            while not stop and state.epoch < max(t.epochs, 1):
                if state.batch_in_epoch >= len(loader):  # the checkpoint closed this epoch
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    continue
                self.sampler.set_epoch(state.epoch)
                self.ds.set_epoch(state.epoch)
                epoch_loader = acc.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
                # A DataLoaderShard re-applies its own pass count as the sampler's epoch on iter(); a fresh one
                # (after a resume) would restart at epoch 0.
                epoch_loader.set_epoch(state.epoch)
                batches = iter(epoch_loader)
                micro: dict[str, list[torch.Tensor]] = {}
                while True:
                    t_wait = time.perf_counter()
                    batch = next(batches, None)
                    window_wait += time.perf_counter() - t_wait
                    if batch is None:
                        break
                    if (state.step + 1) % t.log_every_steps == 0 or state.step + 1 == self.total:
                        self.embed_probe.arm()  # the step that ends a log window: its first embeddings
                    self.step(batch, micro)
                    state.batch_in_epoch += 1
                    state.samples += batch_size_global
                    window_samples += batch_size_global
                    if not acc.sync_gradients:
                        continue
                    state.step += 1
                    self.inner.on_step_end(state.step, self.total)
                    self.pending.append({k: torch.stack(v).float().mean() for k, v in micro.items()})
                    micro = {}
                    state.elapsed_s = time.perf_counter() - t_start
                    out_of_time = budget is not None and state.elapsed_s >= budget
                    # Stopping early is decided together: every process must leave the loop at the same step.
                    # One process decides alone; several agree at log and checkpoint steps (no per-step sync).
                    if acc.num_processes == 1:
                        interrupted, budget_spent = signalled.is_set(), out_of_time
                    if state.step % t.log_every_steps == 0 or state.step == self.total:
                        flags = self.reduce_pending(signalled.is_set(), out_of_time)
                        if acc.num_processes > 1:
                            interrupted, budget_spent = flags
                        now = time.perf_counter()
                        span = max(now - window_t, 1e-9)
                        row = self.log_row(now, span, window_samples, window_wait, t_start)
                        if log is not None:
                            log.write(row)
                        if t.trackers:
                            scalars = {k: v for k, v in row.items() if isinstance(v, float)}
                            scalars.update({f"lr/{g}": v for g, v in row["lr"].items()})
                            acc.log(scalars, step=state.step)
                        main_loss = next(iter(v for k, v in row.items() if k.endswith("loss")), float("nan"))
                        update(state.step, status=f"loss {main_loss:.4f}  {row['samples_per_s']:,.0f} samples/s")
                        window_t, window_samples, window_wait = now, 0, 0.0
                    # Also at the last step, whether the step budget or the time budget ends the run.
                    if state.step % (t.monitor.every_steps if t.monitor else 1) == 0 or state.step == self.total \
                            or budget_spent:
                        window_t += self.monitor_row(log)
                    update(state.step)
                    self.note_budget(budget_spent)
                    if state.step >= self.total or interrupted or budget_spent:
                        stop = True
                        break
                    if state.step % t.checkpoint_every_steps == 0:
                        if acc.num_processes > 1:  # the processes meet here anyway: agree on stopping too
                            interrupted, budget_spent = self.reduce_pending(signalled.is_set(), out_of_time)
                            self.note_budget(budget_spent)
                        self.save_checkpoint()
                        if interrupted or budget_spent:
                            stop = True
                            break
                if not stop:
                    state.epoch += 1
                    state.batch_in_epoch = 0
            if self.pending:
                self.reduce_pending(False, False)
            for p in self.all_params:
                p.requires_grad_(True)
            self.embed_probe.close()
            self.save_checkpoint()
        if t.trackers:
            acc.end_training()
        if interrupted:
            raise KeyboardInterrupt
        return acc.unwrap_model(self.objective).encoder


class _no_task:
    """The progress of a process that does not report (every process but the main one)."""

    def __enter__(self) -> Any:
        return lambda *a, **k: None

    def __exit__(self, *exc: object) -> None:
        return None
