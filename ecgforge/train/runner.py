"""The training loop and the run's lifecycle. The only module that imports Accelerate.

One code path serves a laptop CPU, one GPU and many (``accelerate launch -m ecgforge run ...``): Accelerate
places the model, shards the data, averages gradients and handles mixed precision. Objectives declare
their optimiser groups and phases (see ``objectives.base``); the loop steps each phase's optimiser in turn,
with only that group's parameters requiring gradients, so alternating min-max objectives need no special
case here.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import is_tensorboard_available, set_seed
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn
from torch.utils.data import DataLoader, Sampler

import ecgforge
from ecgforge.artifacts import MetricsLog, atomic_write_json, atomic_write_text
from ecgforge.data.cache import Cache
from ecgforge.data.dataset import RandomWindows, collate_windows, select, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.common import EvalContext
from ecgforge.pretrained import initial_encoder
from ecgforge.recipe import OptimConfig, Recipe, ScheduleConfig, to_toml_dict
from ecgforge.registry import build
from ecgforge.signals import StopOnSignal


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


def make_optimizer(cfg: OptimConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(cfg.kind)


def make_schedule(cfg: ScheduleConfig, opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / cosine / linear decay to ``min_lr_ratio`` of the base rate."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.kind == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.kind == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


collate = collate_windows  # RandomWindows hands the loader whole batches (its __getitems__)


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0  # optimiser steps completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    samples: int = 0
    elapsed_s: float = 0.0
    world_size: int = 1  # batch_in_epoch counts per-process batches: a resume needs the same world size
    pending_logs: list[dict[str, float]] = field(default_factory=list)  # logged steps not yet written


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C to the main process, which stops at a step boundary and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _checkpoints(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    found = [p for p in d.glob("step_*") if (p / "progress.json").is_file()] if d.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def env_info(accelerator: Accelerator, recipe: Recipe, cache: Cache | None) -> dict[str, Any]:
    import accelerate
    import h5py
    import scipy
    import sklearn
    import wfdb

    return {
        "ecgforge": ecgforge.__version__,
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
    }


class Runner:
    """Pretrain (if the recipe has ``[ssl]``), save the encoder, run the evaluations, write results."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = False, console: Console | None = None,
                 recipe_text: str | None = None) -> None:
        self.recipe, self.run_dir, self.resume = recipe, Path(run_dir), resume
        self.console = console or Console(stderr=True)
        self.recipe_text = recipe_text
        t = recipe.train
        if t.tensorboard and not is_tensorboard_available():
            raise UserError("train.tensorboard = true needs the tensorboard package: pip install 'ecgforge[tensorboard]'")
        # Alternating phases change which parameters get gradients; one phase may still leave some unused
        # (wav2vec2's mask embedding under SimCLR): a static graph lets DDP learn that set once.
        multi_phase = recipe.ssl is not None and len(self._phases()) > 1
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # Accelerate keeps its settings in process-wide singletons, so a second Runner in one process (a
            # notebook, `ecgforge eval` after a run, a test session) with another precision would be refused.
            # Not launched as several processes: nothing else shares that state, start it afresh.
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        ddp = DistributedDataParallelKwargs(find_unused_parameters=multi_phase, static_graph=not multi_phase)
        self.accelerator = Accelerator(
            mixed_precision=t.precision,
            gradient_accumulation_steps=t.grad_accum_steps,
            kwargs_handlers=[ddp],
            # Schedules count optimiser steps; Accelerate's default would step them once per process per step.
            step_scheduler_with_optimizer=False,
            log_with="tensorboard" if t.tensorboard else None,
            project_dir=str(self.run_dir) if t.tensorboard else None,
        )
        self.is_main = self.accelerator.is_main_process
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.accelerator.num_processes == 1:  # N independent runs would share one directory
            raise UserError(
                f"launched as {launched} processes but Accelerate started a single-process run; on CPU set "
                "ACCELERATE_USE_CPU=true (see docs/scaling.md)"
            )

    def _phases(self) -> tuple[str, ...]:
        from ecgforge.objectives import OBJECTIVES

        return OBJECTIVES[self.recipe.ssl.kind].phases if self.recipe.ssl else ()

    # ----------------------------------------------------------------------------------------- setup

    def _ensure_cache(self) -> Cache:
        """Open the recipe's cache, building it from ``[data].build`` when absent or built from another spec."""
        d = self.recipe.data
        if d.build is None:
            if not Path(d.cache).is_file():
                from ecgforge.data.cache import CacheError

                raise CacheError(f"{d.cache}: no such cache; build it with `ecgforge cache build` or set [data].build")
            return Cache(d.cache, in_memory=d.in_memory)
        if self.is_main:
            from ecgforge.cli import build_cache_with_progress
            from ecgforge.recipe import load_cache_recipe

            spec = load_cache_recipe(d.build)
            why = "is absent" if not Path(d.cache).is_file() else None
            if why is None and Cache(d.cache).spec_hash != spec.spec_hash():
                why = "was built from another spec"
            if why:
                self.console.print(f"[bold]cache[/] {d.cache} {why}: building it from {d.build}")
                build_cache_with_progress(spec, d.cache, self.console)
        self.accelerator.wait_for_everyone()
        return Cache(d.cache, in_memory=d.in_memory)

    def write_run_files(self, cache: Cache | None) -> None:
        if not self.is_main:
            return
        if self.recipe_text is not None and not (self.resume and (self.run_dir / "recipe.toml").exists()):
            atomic_write_text(self.run_dir / "recipe.toml", self.recipe_text)
        import tomli_w

        atomic_write_text(self.run_dir / "resolved.toml", tomli_w.dumps(to_toml_dict(self.recipe)))
        atomic_write_json(self.run_dir / "env.json", env_info(self.accelerator, self.recipe, cache))

    # -------------------------------------------------------------------------------------- training

    def pretrain(self, cache: Cache) -> nn.Module:
        r, t, acc = self.recipe, self.recipe.train, self.accelerator
        fs = cache.fs_hz
        window = int(round(r.data.window_s * fs))
        # Fresh, or the saved weights of [model] init (contract checked against this cache, strict load).
        encoder = initial_encoder(r.model, fs_hz=fs, leads=cache.leads, source=str(cache.path))
        from ecgforge.objectives import OBJECTIVES

        train_idx = select(cache, r.data.splits[r.data.pretrain_split], r.data.exclude_ptbxl_overlap)
        targets = None
        context: dict[str, Any] = dict(encoder=encoder, fs_hz=fs, window=window, n_leads=cache.n_leads)
        if OBJECTIVES[r.ssl.kind].needs_labels:  # targets first: the objective's head needs their width
            targets = task_targets(cache, r.ssl.task, train_idx)
            context["n_classes"] = 1 if targets.task_type == "regression" else len(targets.names)
        objective = build(r.ssl, **context)
        ds = RandomWindows(cache, train_idx, window, n_segments=objective.n_segments, seed=r.seed, targets=targets)
        if len(ds) < t.batch_size * acc.num_processes:
            raise UserError(
                f"pretraining split {r.data.pretrain_split!r} has {len(ds)} records, fewer than one batch "
                f"({t.batch_size} x {acc.num_processes} processes); lower train.batch_size"
            )
        if acc.num_processes > 1 and t.sync_batchnorm:
            if acc.device.type == "cpu":
                # torch's SyncBatchNorm has no CPU kernel: with gloo each process normalises over its own batch.
                if self.is_main:
                    self.console.print("[yellow]note[/] train.sync_batchnorm: not available on CPU; "
                                       "BatchNorm uses each process's own batch")
            else:
                objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
        # Augmentations draw from torch's global generator: one stream per process (process 0 keeps `seed`, so
        # a one-process run is unchanged); DDP broadcasts process 0's initial weights, so models start equal.
        set_seed(r.seed, device_specific=True)
        sampler = EpochSampler(len(ds), r.seed)
        loader = DataLoader(
            ds, batch_size=t.batch_size, sampler=sampler, drop_last=True, num_workers=r.data.num_workers,
            collate_fn=collate, persistent_workers=False, pin_memory=torch.cuda.is_available(),
            # Its own generator: the worker base seed drawn by every iter() must not advance the global one,
            # or a resumed epoch (a fresh iter() after load_state) would see other augmentations.
            generator=torch.Generator().manual_seed(r.seed),
            worker_init_fn=_ignore_sigint if r.data.num_workers else None,
        )
        loader = acc.prepare(loader)  # first: its per-process length fixes the schedule's length
        groups = objective.param_groups()
        missing = [p for p in objective.phases if p not in groups]
        if missing:
            raise ValueError(f"objective {r.ssl.kind!r} has no parameter group {missing}")
        # Accelerate also syncs at the end of each epoch's data, so a short last accumulation still steps.
        steps_per_epoch = max(1, math.ceil(len(loader) / t.grad_accum_steps))
        total = min(t.max_steps or 10**12, steps_per_epoch * t.epochs)
        optims = {g: make_optimizer(t.optim[g], groups[g]) for g in dict.fromkeys(objective.phases)}
        scheds = {g: make_schedule(t.schedule, o, total) for g, o in optims.items()}
        if t.compile:
            objective.encoder = torch.compile(objective.encoder)
        names = list(optims)
        prepared = acc.prepare(objective, *optims.values(), *scheds.values())
        objective = prepared[0]
        optims = dict(zip(names, prepared[1 : 1 + len(names)], strict=True))
        scheds = dict(zip(names, prepared[1 + len(names) : 1 + 2 * len(names)], strict=True))
        inner = acc.unwrap_model(objective)
        group_ids = {g: {id(p) for p in groups[g]} for g in names}
        all_params = [p for p in inner.parameters()]
        trainable = {id(p) for g in names for p in groups[g]}

        ckpt_root = self.run_dir / "checkpoints"
        if self.is_main and ckpt_root.is_dir():
            for scratch in ckpt_root.glob(".step_*"):  # left by a process killed while saving
                shutil.rmtree(scratch, ignore_errors=True)
        acc.wait_for_everyone()
        state = LoopState(world_size=acc.num_processes)
        ckpts = _checkpoints(self.run_dir)
        resume_step = None
        if self.resume and ckpts:
            saved = LoopState(**json.loads((ckpts[-1] / "progress.json").read_text()))
            if saved.world_size != acc.num_processes:
                raise UserError(
                    f"{ckpts[-1]}: written by {saved.world_size} process(es); resume with the same number "
                    f"(this launch has {acc.num_processes}), or start over with --overwrite"
                )
            acc.load_state(str(ckpts[-1]))  # model, optimisers, schedulers, scaler, every process's RNGs
            state = saved
            resume_step = state.step
            if self.is_main:
                self.console.print(f"[bold]resume[/] from {ckpts[-1].name} (epoch {state.epoch}, step {state.step})")
        log = MetricsLog(self.run_dir / "metrics" / "train.jsonl", resume_step) if self.is_main else None
        if t.tensorboard:
            acc.init_trackers("tb")

        # Per-step logs of the current log window: `pending` (local tensors, not yet averaged over processes, so
        # that a step costs no host-device sync) and `reduced` (floats; carried in checkpoints so the first row
        # after a resume averages the same steps as it would have without the interruption).
        pending: list[dict[str, torch.Tensor]] = []
        reduced: list[dict[str, float]] = list(state.pending_logs)

        def reduce_pending(interrupt: bool, out_of_time: bool) -> tuple[bool, bool]:
            """Average ``pending`` over processes into ``reduced``; returns (any interrupted, any out of time)."""
            keys = list(pending[0]) if pending else []
            vec = torch.cat([*(torch.stack([p[k] for p in pending]).float() for k in keys),
                             torch.tensor([float(interrupt), float(out_of_time)], device=acc.device)])
            if acc.num_processes > 1:
                vec = acc.reduce(vec, "mean")
            values = vec[:-2].view(len(keys), len(pending)).cpu().tolist() if keys else []
            reduced.extend({k: values[j][i] for j, k in enumerate(keys)} for i in range(len(pending)))
            pending.clear()
            flags = vec[-2:].cpu().tolist()
            return flags[0] > 0, flags[1] > 0

        def save_checkpoint() -> None:
            """Every process writes its part into one scratch folder (its RNG states; process 0 also the model,
            optimisers, schedulers and progress), renamed to ``step_<N>`` when complete: a kill at any moment
            leaves the previous checkpoints intact. Needs a filesystem shared by all nodes."""
            if (ckpt_root / f"step_{state.step}" / "progress.json").is_file() and state.step != resume_step:
                return  # saved at this very step already (a checkpoint step that was also the last)
            tmp = ckpt_root / f".step_{state.step}.tmp"
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            state.pending_logs = list(reduced)
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
                atomic_write_json(tmp / "progress.json", asdict(state))
                final = ckpt_root / f"step_{state.step}"
                if final.exists():  # saved again at the same step (a resumed run that was already complete)
                    old = ckpt_root / f".step_{state.step}.old"
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(final, old)
                    os.replace(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, final)
                for old in _checkpoints(self.run_dir)[: -t.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            acc.wait_for_everyone()

        bar = Progress(
            TextColumn("[bold]pretrain[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not self.is_main, transient=False,
        )
        t_start = time.perf_counter() - state.elapsed_s
        window_t, window_samples, window_wait = time.perf_counter(), 0, 0.0
        batch_size_global = t.batch_size * acc.num_processes
        budget_spent = t.time_budget_s is not None and state.elapsed_s >= t.time_budget_s
        stop = state.step >= total or budget_spent
        interrupted = False
        with bar, StopOnSignal() as signalled:
            task = bar.add_task(r.ssl.kind, total=total, completed=state.step, rate="")
            while not stop and state.epoch < max(t.epochs, 1):
                if state.batch_in_epoch >= len(loader):  # the checkpoint closed this epoch
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    continue
                sampler.set_epoch(state.epoch)
                ds.set_epoch(state.epoch)
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
                    with acc.accumulate(objective):
                        for phase in inner.phases:
                            if len(names) > 1:  # only this phase's group accumulates gradients
                                for p in all_params:
                                    p.requires_grad_(id(p) in group_ids[phase] or id(p) not in trainable)
                            loss, phase_logs = objective(batch, phase)
                            acc.backward(loss)
                            if acc.sync_gradients and t.grad_clip_norm:
                                acc.clip_grad_norm_(groups[phase], t.grad_clip_norm)
                            optims[phase].step()
                            if acc.sync_gradients and not optims[phase].step_was_skipped:  # fp16 overflow: no step
                                scheds[phase].step()
                            optims[phase].zero_grad(set_to_none=True)
                            for k, v in phase_logs.items():
                                micro.setdefault(f"{phase}/{k}" if len(names) > 1 else k, []).append(v.detach())
                    state.batch_in_epoch += 1
                    state.samples += batch_size_global
                    window_samples += batch_size_global
                    if not acc.sync_gradients:
                        continue
                    state.step += 1
                    inner.on_step_end(state.step, total)
                    pending.append({k: torch.stack(v).float().mean() for k, v in micro.items()})
                    micro = {}
                    state.elapsed_s = time.perf_counter() - t_start
                    out_of_time = t.time_budget_s is not None and state.elapsed_s >= t.time_budget_s
                    # Stopping early is decided together: every process must leave the loop at the same step.
                    # One process decides alone; several agree at log and checkpoint steps (no per-step sync).
                    if acc.num_processes == 1:
                        interrupted, budget_spent = signalled.is_set(), out_of_time
                    if state.step % t.log_every_steps == 0 or state.step == total:
                        flags = reduce_pending(signalled.is_set(), out_of_time)
                        if acc.num_processes > 1:
                            interrupted, budget_spent = flags
                        now = time.perf_counter()
                        span = max(now - window_t, 1e-9)
                        rate = window_samples / span
                        row: dict[str, Any] = {k: float(np.mean([w[k] for w in reduced])) for k in reduced[0]}
                        row.update(step=state.step, epoch=state.epoch, samples=state.samples,
                                   lr={g: s.get_last_lr()[0] for g, s in scheds.items()},
                                   samples_per_s=rate, data_wait_frac=min(1.0, window_wait / span),
                                   elapsed_s=now - t_start)
                        if log is not None:
                            log.write(row)
                        if t.tensorboard:
                            scalars = {k: v for k, v in row.items() if isinstance(v, float)}
                            scalars.update({f"lr/{g}": v for g, v in row["lr"].items()})
                            acc.log(scalars, step=state.step)
                        main_loss = next(iter(v for k, v in row.items() if k.endswith("loss")), float("nan"))
                        bar.update(task, rate=f"loss {main_loss:.4f}  {rate:,.0f} samples/s")
                        reduced.clear()
                        window_t, window_samples, window_wait = now, 0, 0.0
                    bar.update(task, completed=state.step)
                    if state.step >= total or interrupted or budget_spent:
                        stop = True
                        break
                    if state.step % t.checkpoint_every_steps == 0:
                        if acc.num_processes > 1:  # the processes meet here anyway: agree on stopping too
                            interrupted, budget_spent = reduce_pending(signalled.is_set(), out_of_time)
                        save_checkpoint()
                        if interrupted or budget_spent:
                            stop = True
                            break
                if not stop:
                    state.epoch += 1
                    state.batch_in_epoch = 0
            if pending:
                reduce_pending(False, False)
            for p in all_params:
                p.requires_grad_(True)
            save_checkpoint()
        if t.tensorboard:
            acc.end_training()
        if interrupted:
            raise KeyboardInterrupt
        return acc.unwrap_model(objective).encoder

    # ------------------------------------------------------------------------------------ evaluation

    def evaluate(self, cache: Cache, encoder: nn.Module) -> list[dict[str, Any]]:
        r = self.recipe
        window = int(round(r.data.window_s * cache.fs_hz))
        stride = int(round((r.data.eval_stride_s or r.data.window_s) * cache.fs_hz))
        trained = copy.deepcopy(getattr(encoder, "_orig_mod", encoder)).cpu()

        def make_encoder(init: str, seed: int) -> nn.Module:
            if init == "pretrained":
                return copy.deepcopy(trained)
            torch.manual_seed(seed)
            return build(r.model.encoder)

        ctx = EvalContext(
            cache=cache, splits=r.data.splits, window=window, stride=stride, make_encoder=make_encoder,
            device=self.accelerator.device, batch_size=max(r.train.batch_size, 64),
            num_workers=r.data.num_workers, exclude_ptbxl_overlap=r.data.exclude_ptbxl_overlap,
            run_dir=self.run_dir,
        )
        rows: list[dict[str, Any]] = []
        for i, ev in enumerate(r.eval):
            self.console.print(f"[bold]eval[/] [{i}] {ev.kind} on {getattr(ev, 'task', '')}")
            protocol = build(ev)
            rows += protocol.run(ctx)
        return rows

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        r = self.recipe
        set_seed(r.seed)
        cache = self._ensure_cache()
        self.write_run_files(cache)
        t0 = time.perf_counter()
        if r.ssl is not None:
            encoder = self.pretrain(cache)
        else:
            torch.manual_seed(r.seed)
            encoder = initial_encoder(r.model, fs_hz=cache.fs_hz, leads=cache.leads, source=str(cache.path))
        self.save_encoder(encoder, cache)
        pretrain_seconds = time.perf_counter() - t0  # before the evaluations, which can take longer than pretraining
        results: dict[str, Any] = {}
        if self.is_main:
            t1 = time.perf_counter()
            rows = self.evaluate(cache, encoder)
            results = {
                "recipe": r.name,
                "ecgforge_version": ecgforge.__version__,
                "seed": r.seed,
                "cache": str(cache.path),
                "cache_spec_hash": cache.spec_hash,
                "pretrain_seconds": pretrain_seconds,
                "eval_seconds": time.perf_counter() - t1,
                "eval": rows,
            }
            atomic_write_json(self.run_dir / "results.json", results)
            from ecgforge.report import plot_run

            plot_run(self.run_dir)
        self.accelerator.wait_for_everyone()
        return results

    def save_encoder(self, encoder: nn.Module, cache: Cache) -> None:
        if not self.is_main:
            return
        import hashlib

        from ecgforge.pretrained import save_encoder

        enc = getattr(encoder, "_orig_mod", encoder)
        save_encoder(
            enc, self.recipe.model.encoder, self.run_dir,
            {
                "fs_hz": cache.fs_hz, "window_s": self.recipe.data.window_s, "leads": cache.leads, "units": "mV",
                "normalisation": "none (physical units, mV)", "recipe": self.recipe.name,
                "recipe_hash": hashlib.sha256(self.recipe.model_dump_json().encode()).hexdigest()[:16],
                "pretrained": self.recipe.ssl.kind if self.recipe.ssl else None,
            },
        )
