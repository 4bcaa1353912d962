"""Fine-tuning: the whole encoder plus a linear head, trained on the labelled records of a label fraction.

The protocol of Mehari & Strodthoff ("Self-supervised representation learning from 12-lead ECG data",
Comput. Biol. Med. 2022) and of the PTB-XL benchmark (Strodthoff et al. 2021): random crops of the training
records, model selection on the validation split (per-record mean of tiled window scores), test on the
per-record means of the test tiles. Schedule: ``head_epochs`` with the encoder frozen (head warm-up, so the
random head does not wreck the pretrained features with large early gradients), then ``epochs`` on the whole
network, the encoder at ``lr * encoder_lr_ratio`` (discriminative learning rates, Howard & Ruder 2018).

Initialisations (``init`` of each row):
    ``pretrained``: this run's encoder, fine-tuned as above.
    ``supervised``: the same architecture randomly initialised and trained with exactly the same schedule.
        This *is* the supervised baseline: Mehari & Strodthoff's maintainers define it as training from a
        random initialisation, so it is not a separate pretraining run.
    ``random``: a randomly initialised, frozen encoder with only the head trained (same number of epochs):
        the floor that says how much any training of the encoder buys.

Every row states the effective learning rates and whether the encoder's weights changed (a hash before and
after), because the official Adv-Mask code silently fine-tuned nothing (its encoder ran under ``no_grad``).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import DataLoader

from ecgforge.data.dataset import RandomWindows, TiledWindows, collate_windows
from ecgforge.data.splits import Targets, TaskType
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.features import per_record
from ecgforge.evaluation.heads import head_loss, scores_from_logits
from ecgforge.evaluation.protocol import ProtocolConfig
from ecgforge.evaluation.rows import ResultRow
from ecgforge.evaluation.scoring import PRIMARY, primary_score, score_rows
from ecgforge.evaluation.tasks import TaskData, load_task
from ecgforge.layers.weights import state_dict_hash


class FinetuneConfig(ProtocolConfig, extra="forbid", frozen=True):
    kind: Literal["finetune"] = "finetune"
    inits: list[Literal["pretrained", "supervised", "random"]] = Field(
        default_factory=lambda: ["pretrained", "supervised", "random"], min_length=1,
        description="supervised = random init + the same full training (the supervised baseline); "
        "random = random frozen encoder, head only",
    )
    head_epochs: int = Field(1, ge=0, description="epochs training the head alone (encoder frozen)")
    epochs: int = Field(10, ge=0, description="epochs training encoder and head together")
    lr: float = Field(1e-3, gt=0, description="head learning rate (AdamW)")
    encoder_lr_ratio: float = Field(1.0, gt=0, le=1, description="encoder lr = lr x this (discriminative lr)")
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(64, gt=0)
    val_split: str = "val"

    @model_validator(mode="after")
    def _trains_something(self) -> FinetuneConfig:
        if self.head_epochs + self.epochs == 0:
            raise ValueError("head_epochs + epochs must be at least 1")
        return self


class Classifier(nn.Module):
    """``encoder`` then a linear layer: ``x (B, leads, T) -> logits (B, n_out)``."""

    def __init__(self, encoder: nn.Module, n_out: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.embed_dim), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@torch.no_grad()
def record_scores(model: Classifier, tiles: TiledWindows, task_type: TaskType, device: torch.device,
                  batch_size: int, num_workers: int = 0) -> np.ndarray:
    """Per-record mean of window scores ``(n_records, C)`` (or ``(n_records,)`` for regression)."""
    was = model.training
    model.eval()
    out = []
    for batch in DataLoader(tiles, batch_size=batch_size, num_workers=num_workers):
        out.append(scores_from_logits(model(batch["x"].to(device)).float(), task_type).cpu())
    model.train(was)
    scores = torch.cat(out).numpy() if out else np.zeros((0, model.head.out_features), dtype=np.float32)
    return per_record(scores, tiles.record_of, len(tiles.indices))


def _epoch(model: Classifier, loader: DataLoader, ds: RandomWindows, epoch: int, opt: torch.optim.Optimizer,
           loss_fn: nn.Module, task_type: TaskType, device: torch.device, train_encoder: bool) -> float:
    ds.set_epoch(epoch)
    model.train()
    if not train_encoder:
        model.encoder.eval()  # frozen means frozen: BatchNorm running statistics must not move either
    total, n = 0.0, 0
    for batch in loader:
        x = batch["x"].to(device)
        y = batch["y"].to(device)
        y = y.long() if task_type == "multiclass" else y.float().reshape(len(y), -1)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(x), n + len(x)
    return total / max(n, 1)


def fit(
    encoder: nn.Module, train: Targets, data: TaskData, ctx: EvalContext, *, n_out: int, head_epochs: int,
    epochs: int, lr: float, encoder_lr_ratio: float, weight_decay: float, batch_size: int, seed: int,
    train_encoder: bool = True,
) -> tuple[Classifier, dict[str, Any]]:
    """Train ``encoder`` + a linear head on random crops of ``train``; keep the best validation epoch among
    the full-network epochs (or among the head epochs when the encoder stays frozen).

    Returns the model (best state loaded) and facts for the results row: effective learning rates, the
    selected epoch and whether the encoder's weights changed.
    """
    torch.manual_seed(seed)
    device = ctx.device
    model = Classifier(encoder, n_out).to(device)
    before = state_dict_hash(model.encoder)
    ds = RandomWindows(data.cache, train.indices, ctx.window, seed=seed, targets=train)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, num_workers=ctx.num_workers,
                        drop_last=len(ds) > batch_size, collate_fn=collate_windows)  # a batch of one breaks BatchNorm
    loss_fn = head_loss(data.task_type)
    val_tiles = TiledWindows(data.cache, data.val.indices, ctx.window, ctx.stride) if len(data.val.indices) else None
    best = (-np.inf, copy.deepcopy(model.state_dict()), -1)

    def select(epoch: int) -> None:
        nonlocal best
        if val_tiles is None:
            best = (0.0, copy.deepcopy(model.state_dict()), epoch)  # no validation split: keep the last epoch
            return
        s = primary_score(data.task_type, data.val.y,
                          record_scores(model, val_tiles, data.task_type, device, ctx.batch_size), data.train.names)
        if (np.isfinite(s) and s > best[0]) or best[2] < 0:
            best = (s if np.isfinite(s) else -np.inf, copy.deepcopy(model.state_dict()), epoch)

    encoder_lr = lr * encoder_lr_ratio if train_encoder else 0.0
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    head_opt = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    n_head = head_epochs if train_encoder else head_epochs + epochs
    for e in range(n_head):
        _epoch(model, loader, ds, e, head_opt, loss_fn, data.task_type, device, train_encoder=False)
        if not (train_encoder and epochs):
            select(e)  # warm-up epochs are not candidates: a fine-tuned model must have fine-tuned its encoder
    if train_encoder and epochs:
        for p in model.encoder.parameters():
            p.requires_grad_(True)
        opt = torch.optim.AdamW(
            [{"params": model.encoder.parameters(), "lr": encoder_lr}, {"params": model.head.parameters(), "lr": lr}],
            weight_decay=weight_decay,
        )
        for e in range(head_epochs, head_epochs + epochs):
            _epoch(model, loader, ds, e, opt, loss_fn, data.task_type, device, train_encoder=True)
            select(e)
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    facts = {
        "head_lr": lr, "encoder_lr": encoder_lr, "selected_epoch": int(best[2]),
        "encoder_changed": state_dict_hash(model.encoder) != before,
    }
    return model, facts


class Finetune:
    def __init__(self, cfg: FinetuneConfig) -> None:
        self.cfg = cfg

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        data = load_task(ctx, "finetune", c.task, c.task_type, c.cache, c.train_split, c.val_split, c.test_split)
        test_tiles = TiledWindows(data.cache, data.test.indices, ctx.window, ctx.stride)
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                for frac in c.label_fractions:
                    train = data.subset(frac, seed)
                    picked = data.with_val(data.val_positions(frac, seed, c.subsample_val))
                    encoder = ctx.make_encoder("pretrained" if init == "pretrained" else "random", seed)
                    model, facts = fit(
                        encoder, train, picked, ctx, n_out=data.n_out, head_epochs=c.head_epochs, epochs=c.epochs,
                        lr=c.lr, encoder_lr_ratio=c.encoder_lr_ratio, weight_decay=c.weight_decay,
                        batch_size=c.batch_size, seed=seed, train_encoder=init != "random",
                    )
                    scores = record_scores(model, test_tiles, data.task_type, ctx.device, ctx.batch_size, ctx.num_workers)
                    rows.append(ResultRow(
                        kind="finetune", task=c.task, task_type=data.task_type, init=init, label_fraction=frac,
                        seed=seed, split=c.test_split, primary=PRIMARY[data.task_type],
                        n_train_records=int(len(train.indices)), n_val_records=int(len(picked.val.indices)),
                        n_test_records=int(len(data.test.indices)), facts=facts,
                        **score_rows(data.task_type, data.test.y, scores, data.train.names, c.bootstrap, seed,
                                   records=data.test.indices, units=data.test_patients),
                    ))
        return rows
