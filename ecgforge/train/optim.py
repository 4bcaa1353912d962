"""Optimisers and learning-rate schedules of ``[train.optim.<group>]`` and ``[train.schedule]``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ecgforge.recipe import OptimConfig, ScheduleConfig

#: ``kind`` -> optimiser factory from the group's config and parameters.
OPTIMIZERS: dict[str, Callable[[OptimConfig, list[nn.Parameter]], torch.optim.Optimizer]] = {
    "adam": lambda c, p: torch.optim.Adam(p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay),
    "adamw": lambda c, p: torch.optim.AdamW(p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay),
    "sgd": lambda c, p: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}


def make_optimizer(cfg: OptimConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.kind](cfg, params)


def _decay(kind: str, progress: float) -> float:
    """Share of the base rate (above ``min_lr_ratio``) left at ``progress`` in [0, 1] of the decay phase."""
    return {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress}[kind]


def make_schedule(cfg: ScheduleConfig, opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / cosine / linear decay to ``min_lr_ratio`` of the base rate."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.kind == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * _decay(cfg.kind, progress)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
