"""The training loop and the run's lifecycle. The only module that imports Accelerate.

One code path serves a laptop CPU, one GPU and many (``accelerate launch -m ecgforge run ...``): Accelerate
places the model, shards the data, averages gradients and handles mixed precision. Objectives declare
their optimiser groups and phases (see ``objectives.base``); the loop steps each phase's optimiser in turn,
with only that group's parameters requiring gradients, so alternating min-max objectives need no special
case here.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Sampler

import ecgforge
from ecgforge.artifacts import MetricsLog, atomic_dir, atomic_write_json, atomic_write_text
from ecgforge.data.cache import Cache
from ecgforge.data.dataset import RandomWindows, select, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.common import EvalContext
from ecgforge.recipe import OptimConfig, Recipe, ScheduleConfig, to_toml_dict
from ecgforge.registry import build


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


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0  # optimiser steps completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    samples: int = 0
    elapsed_s: float = 0.0


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
        ddp = DistributedDataParallelKwargs(find_unused_parameters=recipe.ssl is not None and len(self._phases()) > 1)
        self.accelerator = Accelerator(
            mixed_precision=t.precision,
            gradient_accumulation_steps=t.grad_accum_steps,
            kwargs_handlers=[ddp],
            log_with="tensorboard" if t.tensorboard else None,
            project_dir=str(self.run_dir) if t.tensorboard else None,
        )
        self.is_main = self.accelerator.is_main_process

    def _phases(self) -> tuple[str, ...]:
        from ecgforge.objectives import OBJECTIVES

        return OBJECTIVES[self.recipe.ssl.kind].phases if self.recipe.ssl else ()

    # ----------------------------------------------------------------------------------------- setup

    def _ensure_cache(self) -> Cache:
        d = self.recipe.data
        if not Path(d.cache).is_file():
            if d.build is None:
                from ecgforge.data.cache import CacheError

                raise CacheError(f"{d.cache}: no such cache; build it with `ecgforge cache build` or set [data].build")
            if self.is_main:
                from ecgforge.cli import build_cache_with_progress
                from ecgforge.recipe import load_cache_recipe

                spec = load_cache_recipe(d.build)
                self.console.print(f"[bold]cache[/] {d.cache} is absent: building it from {d.build}")
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
        encoder = build(r.model.encoder)
        objective = build(r.ssl, encoder=encoder, fs_hz=fs, window=window, n_leads=cache.n_leads)
        train_idx = select(cache, r.data.splits[r.data.pretrain_split], r.data.exclude_ptbxl_overlap)
        targets = None
        if objective.needs_labels:
            targets = task_targets(cache, objective.task, train_idx)
        ds = RandomWindows(cache, train_idx, window, n_segments=objective.n_segments, seed=r.seed, targets=targets)
        if len(ds) < t.batch_size * acc.num_processes:
            raise UserError(
                f"pretraining split {r.data.pretrain_split!r} has {len(ds)} records, fewer than one batch "
                f"({t.batch_size} x {acc.num_processes} processes); lower train.batch_size"
            )
        if acc.num_processes > 1 and t.sync_batchnorm:
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
        sampler = EpochSampler(len(ds), r.seed)
        loader = DataLoader(
            ds, batch_size=t.batch_size, sampler=sampler, drop_last=True, num_workers=r.data.num_workers,
            collate_fn=collate, persistent_workers=False, pin_memory=torch.cuda.is_available(),
        )
        groups = objective.param_groups()
        missing = [p for p in objective.phases if p not in groups]
        if missing:
            raise ValueError(f"objective {r.ssl.kind!r} has no parameter group {missing}")
        steps_per_epoch = len(loader) // (t.grad_accum_steps * acc.num_processes) or 1
        total = min(t.max_steps or 10**12, steps_per_epoch * t.epochs)
        optims = {g: make_optimizer(t.optim[g], groups[g]) for g in dict.fromkeys(objective.phases)}
        scheds = {g: make_schedule(t.schedule, o, total) for g, o in optims.items()}
        if t.compile:
            objective.encoder = torch.compile(objective.encoder)
        names = list(optims)
        prepared = acc.prepare(objective, *optims.values(), *scheds.values(), loader)
        objective = prepared[0]
        optims = dict(zip(names, prepared[1 : 1 + len(names)], strict=True))
        scheds = dict(zip(names, prepared[1 + len(names) : 1 + 2 * len(names)], strict=True))
        loader = prepared[-1]
        inner = acc.unwrap_model(objective)
        group_ids = {g: {id(p) for p in groups[g]} for g in names}
        all_params = [p for p in inner.parameters()]
        trainable = {id(p) for g in names for p in groups[g]}

        state = LoopState()
        ckpts = _checkpoints(self.run_dir)
        resume_step = None
        if self.resume and ckpts:
            acc.load_state(str(ckpts[-1]))
            state = LoopState(**json.loads((ckpts[-1] / "progress.json").read_text()))
            resume_step = state.step
            if self.is_main:
                self.console.print(f"[bold]resume[/] from {ckpts[-1].name} (epoch {state.epoch}, step {state.step})")
        log = MetricsLog(self.run_dir / "metrics" / "train.jsonl", resume_step) if self.is_main else None
        if t.tensorboard:
            acc.init_trackers("tb")

        def save_checkpoint() -> None:
            acc.wait_for_everyone()
            path = self.run_dir / "checkpoints" / f"step_{state.step}"
            if self.is_main:
                with atomic_dir(path) as tmp:
                    acc.save_state(str(tmp), safe_serialization=True)
                    atomic_write_json(tmp / "progress.json", state.__dict__)
                for old in _checkpoints(self.run_dir)[: -t.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            acc.wait_for_everyone()

        bar = Progress(
            TextColumn("[bold]pretrain[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not self.is_main, transient=False,
        )
        t_start = time.perf_counter() - state.elapsed_s
        window_logs: list[dict[str, float]] = []
        window_t, window_samples = time.perf_counter(), 0
        batch_size_global = t.batch_size * acc.num_processes
        stop = state.step >= total
        with bar:
            task = bar.add_task(r.ssl.kind, total=total, completed=state.step, rate="")
            while not stop and state.epoch < max(t.epochs, 1):
                sampler.set_epoch(state.epoch)
                ds.set_epoch(state.epoch)
                epoch_loader = acc.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
                for batch in epoch_loader:
                    with acc.accumulate(objective):
                        logs: dict[str, torch.Tensor] = {}
                        for phase in inner.phases:
                            if len(names) > 1:  # only this phase's group accumulates gradients
                                for p in all_params:
                                    p.requires_grad_(id(p) in group_ids[phase] or id(p) not in trainable)
                            loss, phase_logs = objective(batch, phase)
                            acc.backward(loss)
                            if acc.sync_gradients and t.grad_clip_norm:
                                acc.clip_grad_norm_(groups[phase], t.grad_clip_norm)
                            optims[phase].step()
                            scheds[phase].step()
                            optims[phase].zero_grad(set_to_none=True)
                            logs.update({f"{phase}/{k}" if len(names) > 1 else k: v for k, v in phase_logs.items()})
                    state.batch_in_epoch += 1
                    state.samples += batch_size_global
                    window_samples += batch_size_global
                    if not acc.sync_gradients:
                        continue
                    state.step += 1
                    inner.on_step_end(state.step, total)
                    window_logs.append({k: float(acc.reduce(v.detach().float(), "mean")) for k, v in logs.items()})
                    if state.step % t.log_every_steps == 0 or state.step == total:
                        now = time.perf_counter()
                        rate = window_samples / max(now - window_t, 1e-9)
                        row = {k: float(np.mean([w[k] for w in window_logs])) for k in window_logs[0]}
                        row.update(step=state.step, epoch=state.epoch, samples=state.samples,
                                   lr={g: s.get_last_lr()[0] for g, s in scheds.items()},
                                   samples_per_s=rate, elapsed_s=now - t_start)
                        if log is not None:
                            log.write(row)
                        if t.tensorboard:
                            acc.log({k: v for k, v in row.items() if isinstance(v, float)}, step=state.step)
                        main_loss = next(iter(v for k, v in row.items() if k.endswith("loss")), float("nan"))
                        bar.update(task, rate=f"loss {main_loss:.4f}  {rate:,.0f} samples/s")
                        window_logs, window_t, window_samples = [], now, 0
                    bar.update(task, completed=state.step)
                    state.elapsed_s = time.perf_counter() - t_start
                    out_of_time = t.time_budget_s is not None and state.elapsed_s >= t.time_budget_s
                    if state.step >= total or out_of_time:
                        stop = True
                        break
                    if state.step % t.checkpoint_every_steps == 0:
                        save_checkpoint()
                if not stop:
                    state.epoch += 1
                    state.batch_in_epoch = 0
        for p in all_params:
            p.requires_grad_(True)
        save_checkpoint()
        if t.tensorboard:
            acc.end_training()
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
            encoder = build(r.model.encoder)
        self.save_encoder(encoder, cache)
        results: dict[str, Any] = {}
        if self.is_main:
            rows = self.evaluate(cache, encoder)
            results = {
                "recipe": r.name,
                "ecgforge_version": ecgforge.__version__,
                "seed": r.seed,
                "cache": str(cache.path),
                "cache_spec_hash": cache.spec_hash,
                "pretrain_seconds": time.perf_counter() - t0,
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
