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

Budget in optimiser steps. ``epochs`` passes over 1 % of PTB-XL folds 1-8 (about 170 records, batch 64) are
about 30 steps, which leaves every row undertrained; so the whole-network phase runs
``max(epochs x batches per epoch, min_steps)`` steps (``steps``, when given, exactly that many), the floor
``min_steps`` being the same at every label fraction. The validation split (the fraction's draw of it) is scored
every ``val_every_steps`` steps and at the last; the best state by the task's primary metric is kept in
memory and tested. Rows carry ``steps`` (run), ``selected_step``, ``selected_epoch`` (passes over the
training subset at that step) and ``val_score`` (the primary metric on the validation records there).

Reference options (hhi-aml/ecg-selfsupervised ``eval.py``, fairseq-signals): ``head = "mlp"`` is their
fine-tuning head (`heads.reference_mlp_head`), ``lr_group_factor`` their layer-wise discriminative rates
(`param_groups`), and ``feature_grad_mult = 0`` freezes a wav2vec2 encoder's conv front end as fairseq-signals'
fine-tuning configs do. ``layerwise_lr_factor = 0.1`` is the ECG foundation-model benchmark's fine-tuning
(Al-Masud, Lopez Alcaraz & Strodthoff, ICLR 2026; AI4HealthUOL/ecg-fm-benchmarking ``fm_ecg.py``
``get_params``): the head at ``lr``, the encoder's late layers at ``lr x 0.1``, its early layers at
``lr x 0.01`` (`layer_halves` says which are which).

A frozen encoder (the ``random`` init, and every encoder during the head warm-up) is kept in eval mode at every
step, so its BatchNorm running statistics do not move either (the benchmark's reproduction found them
updating in "frozen" encoders).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Sequence
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
from ecgforge.evaluation.heads import head_loss, reference_mlp_head, scores_from_logits
from ecgforge.evaluation.paired import record_identity
from ecgforge.evaluation.protocol import EvalProtocol, ProtocolConfig
from ecgforge.evaluation.rows import ResultRow
from ecgforge.evaluation.scoring import PRIMARY, primary_score, score_rows
from ecgforge.evaluation.tasks import TaskData, load_task
from ecgforge.evaluation.training_classes import excluded_names
from ecgforge.layers.weights import state_dict_hash


class FinetuneConfig(ProtocolConfig, extra="forbid", frozen=True):
    kind: Literal["finetune"] = "finetune"
    inits: list[Literal["pretrained", "supervised", "random"]] = Field(
        default_factory=lambda: ["pretrained", "supervised", "random"], min_length=1,
        description="supervised = random init + the same full training (the supervised baseline); "
        "random = random frozen encoder, head only",
    )
    head_epochs: int = Field(1, ge=0, description="epochs training the head alone (encoder frozen)")
    epochs: int = Field(10, ge=0, description="passes over the training subset with encoder and head together; "
                        "the phase runs max(epochs x batches per epoch, min_steps) optimiser steps")
    min_steps: int = Field(500, ge=0, description="floor on the whole-network optimiser steps, the same at every "
                           "label fraction (1 % of PTB-XL is ~3 batches an epoch)")
    steps: int | None = Field(None, ge=0, description="exactly this many whole-network optimiser steps "
                              "(epochs and min_steps are then ignored)")
    val_every_steps: int | None = Field(None, gt=0, description="score the validation split every N steps "
                                        "(and at the last); default: 10 checks over the budget")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning rate over the whole-network "
                                                    "steps: constant, or cosine decay to 0")
    lr: float = Field(1e-3, gt=0, description="head learning rate (AdamW)")
    encoder_lr_ratio: float = Field(1.0, gt=0, le=1, description="encoder lr = lr x this (discriminative lr)")
    lr_group_factor: float | None = Field(
        None, gt=0, le=1, description="layer-wise discriminative lr (ecg-selfsupervised eval.py): the encoder's "
        "top-level blocks in pairs from the top, each pair at the previous group's lr x this (they use 0.25)")
    layerwise_lr_factor: float | None = Field(
        None, gt=0, le=1, description="layer-wise lr of the ECG foundation-model benchmark (they use 0.1): head "
        "at lr, the encoder's late layers at lr x this, its early layers at lr x this^2 (x encoder_lr_ratio)")
    head: Literal["linear", "mlp"] = Field("linear", description="mlp = the reference fine-tuning head: "
                                           "BN, dropout p/2, linear to head_hidden, ReLU, BN, dropout p, linear")
    head_hidden: int = Field(512, gt=0, description="hidden width of the mlp head")
    head_dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the mlp head's last layer (p/2 "
                                "before its first)")
    feature_grad_mult: float | None = Field(
        0.0, ge=0, description="gradient scale on a wav2vec2 encoder's conv front end while fine-tuning: 0 "
        "freezes it (fairseq-signals' fine-tuning configs); unset keeps the encoder's; other encoders ignore it")
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(64, gt=0)
    val_split: str = "val"

    def split_fields(self) -> dict[str, str]:
        return {**super().split_fields(), "val_split": self.val_split}

    @model_validator(mode="after")
    def _trains_something(self) -> FinetuneConfig:
        if self.head_epochs + self.epochs + self.min_steps + (self.steps or 0) == 0:
            raise ValueError("head_epochs + epochs + min_steps (or steps) must be at least 1")
        if self.lr_group_factor is not None and self.layerwise_lr_factor is not None:
            raise ValueError("give lr_group_factor (ecg-selfsupervised) or layerwise_lr_factor (the foundation-model "
                             "benchmark), not both")
        return self


def budget_steps(epochs: int, batches_per_epoch: int, min_steps: int, steps: int | None) -> int:
    """Whole-network optimiser steps: ``steps`` if given, else ``max(epochs x batches_per_epoch, min_steps)``."""
    return int(steps) if steps is not None else max(epochs * batches_per_epoch, min_steps)


def layer_halves(encoder: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], str]:
    """The encoder's parameters split into early (input side) and late (output side) layers, and a line saying
    where the split fell.

    An encoder that defines ``layerwise_groups() -> (early, late)`` (lists of its parameters) decides itself.
    Otherwise the split is at the middle of its main stack of blocks: the largest set of sibling modules that
    hold parameters and are named alike up to a trailing index (the items of a ``ModuleList`` / ``Sequential``,
    ``0`` ... ``11``; or ``layer1`` ... ``layer4``, ``block0`` ... ``block11``), the first such on a tie. The
    first half of those blocks (rounded down) and every parameter registered before them are early; the rest
    late. That is the benchmark's own split for ECGFounder (stem + stages 0-2 of 7), MERL's ResNet-18 (stem +
    layer1-2) and HuBERT-ECG (front end + transformer layers 0-5 of 12); for ST-MEM and ECG-JEPA the benchmark
    puts the embeddings and blocks 0-2 of 12 early, which their encoders' ``layerwise_groups`` say.
    """
    hook = getattr(encoder, "layerwise_groups", None)
    if callable(hook):
        early, late = hook()
        return list(early), list(late), f"{type(encoder).__name__}.layerwise_groups()"
    best: tuple[str, list[str]] = ("", [])
    for parent, module in encoder.named_modules():
        groups: dict[str, list[str]] = {}
        for child, m in module.named_children():
            if re.search(r"\d$", child) and any(True for _ in m.parameters()):
                groups.setdefault(re.sub(r"\d+$", "", child), []).append(child)
        for items in groups.values():
            if len(items) > len(best[1]):
                best = (parent, items)
    parent, items = best
    n_early = len(items) // 2
    early_names = {f"{parent}.{i}." if parent else f"{i}." for i in items[:n_early]}
    stack_names = {f"{parent}.{i}." if parent else f"{i}." for i in items}
    early: list[nn.Parameter] = []
    late: list[nn.Parameter] = []
    seen_stack = False
    for name, p in encoder.named_parameters():
        in_stack = any(name.startswith(n) for n in stack_names)
        seen_stack = seen_stack or in_stack
        is_early = any(name.startswith(n) for n in early_names) if in_stack else not seen_stack
        (early if is_early else late).append(p)
    if not items:
        return early, late, "no stack of blocks found: the whole encoder is early"
    where = f"{parent}." if parent else ""
    first = f"{where}{items[0]}..{where}{items[n_early - 1]}" if n_early else "none of them"
    return early, late, (f"early: what precedes {where}{items[0]} and {first} ({n_early} of {len(items)} blocks); "
                         "late: the rest")


def param_groups(model: nn.Module, lr: float, encoder_lr_ratio: float, group_factor: float | None,
                 layerwise_factor: float | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``model.encoder`` and ``model.head``.

    Without ``group_factor``: the head at ``lr``, the whole encoder at ``lr x encoder_lr_ratio``. With it, as
    ``configure_optimizer`` of hhi-aml/ecg-selfsupervised ``eval.py`` does for xresnet1d: the head at ``lr``,
    then the encoder's top-level children that hold parameters, in pairs from the output end, each pair at the
    previous group's rate x ``group_factor`` (there ``lr / 4`` per group), the first pair at ``lr x
    group_factor x encoder_lr_ratio``. With ``layerwise_factor`` f (the foundation-model benchmark's
    ``discriminative_lr_factor``): the head at ``lr``, the late layers of `layer_halves` at ``lr x f``, the
    early ones at ``lr x f^2`` (both x ``encoder_lr_ratio``); groups in that order, each named.
    """
    head = [{"params": list(model.head.parameters()), "lr": lr}]
    if layerwise_factor is not None:
        early, late, _ = layer_halves(model.encoder)
        rate = lr * encoder_lr_ratio
        return [{**head[0], "name": "head"},
                {"params": late, "lr": rate * layerwise_factor, "name": "late"},
                {"params": early, "lr": rate * layerwise_factor**2, "name": "early"}]
    if group_factor is None:
        return [{"params": list(model.encoder.parameters()), "lr": lr * encoder_lr_ratio}, *head]
    blocks = [list(m.parameters()) for _, m in model.encoder.named_children() if any(True for _ in m.parameters())]
    seen = {id(p) for b in blocks for p in b}
    loose = [p for p in model.encoder.parameters() if id(p) not in seen]  # parameters held by the encoder itself
    groups, rate = [], lr * encoder_lr_ratio
    for top in range(len(blocks), 0, -2):
        rate *= group_factor
        groups.append({"params": [p for b in blocks[max(top - 2, 0):top] for p in b], "lr": rate})
    if loose:
        groups.append({"params": loose, "lr": rate})
    return [*head, *groups]


class Classifier(nn.Module):
    """``encoder`` then a head: ``x (B, leads, T) -> logits (B, n_out)``; a linear layer or the reference MLP."""

    def __init__(self, encoder: nn.Module, n_out: int, head: Literal["linear", "mlp"] = "linear",
                 hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        dim = int(encoder.embed_dim)
        self.head = nn.Linear(dim, n_out) if head == "linear" else reference_mlp_head(dim, n_out, hidden, dropout)
        self.n_out = n_out

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
    scores = torch.cat(out).numpy() if out else np.zeros((0, model.n_out), dtype=np.float32)
    return per_record(scores, tiles.record_of, len(tiles.indices))


def _batches(loader: DataLoader, ds: RandomWindows, first_epoch: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Endless ``(epoch, batch)``: pass after pass over ``loader``, new crops each pass (``ds.set_epoch``)."""
    epoch = first_epoch
    while True:
        ds.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def _step(model: Classifier, batch: dict[str, Any], opt: torch.optim.Optimizer, loss_fn: nn.Module,
          task_type: TaskType, device: torch.device, train_encoder: bool) -> float:
    model.train()
    if not train_encoder:
        model.encoder.eval()  # frozen means frozen: BatchNorm running statistics must not move either
    x = batch["x"].to(device)
    y = batch["y"].to(device)
    y = y.long() if task_type == "multiclass" else y.float().reshape(len(y), -1)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def fit(
    encoder: nn.Module, train: Targets, data: TaskData, ctx: EvalContext, *, n_out: int, head_epochs: int,
    epochs: int, lr: float, encoder_lr_ratio: float, weight_decay: float, batch_size: int, seed: int,
    train_encoder: bool = True, min_steps: int = 0, steps: int | None = None, val_every_steps: int | None = None,
    schedule: Literal["constant", "cosine"] = "constant", lr_group_factor: float | None = None,
    head: Literal["linear", "mlp"] = "linear", head_hidden: int = 512, head_dropout: float = 0.5,
    feature_grad_mult: float | None = None, layerwise_lr_factor: float | None = None, exclude: Sequence[str] = (),
) -> tuple[Classifier, dict[str, Any]]:
    """Train ``encoder`` + a head on random crops of ``train`` for a budget of optimiser steps
    (`budget_steps`); keep the best validation check among the whole-network steps (among the head steps
    when the encoder stays frozen). The checks' macro AUROC leaves out the classes named in ``exclude``
    (those ``train`` never or always shows), as the row's does.

    Returns the model (best state loaded) and facts for the results row: effective learning rates, the steps
    run, the selected step (and its epoch) and whether the encoder's weights changed.
    """
    torch.manual_seed(seed)
    device = ctx.device
    if feature_grad_mult is not None and hasattr(encoder, "feature_grad_mult"):
        encoder.feature_grad_mult = float(feature_grad_mult)  # wav2vec2: fairseq-signals fine-tunes with 0
    model = Classifier(encoder, n_out, head, head_hidden, head_dropout).to(device)
    before = state_dict_hash(model.encoder)
    ds = RandomWindows(data.cache, train.indices, ctx.window, seed=seed, targets=train)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, num_workers=ctx.num_workers,
                        drop_last=len(ds) > batch_size, collate_fn=collate_windows)  # a batch of one breaks BatchNorm
    per_epoch = max(len(loader), 1)
    loss_fn = head_loss(data.task_type)
    val_tiles = TiledWindows(data.cache, data.val.indices, ctx.window, ctx.stride) if len(data.val.indices) else None
    best = (-np.inf, copy.deepcopy(model.state_dict()), -1)

    def select(step: int) -> None:
        nonlocal best
        if val_tiles is None:
            best = (0.0, copy.deepcopy(model.state_dict()), step)  # no validation split: keep the last step
            return
        s = primary_score(data.task_type, data.val.y,
                          record_scores(model, val_tiles, data.task_type, device, ctx.batch_size), data.train.names,
                          exclude)
        if (np.isfinite(s) and s > best[0]) or best[2] < 0:
            best = (s if np.isfinite(s) else -np.inf, copy.deepcopy(model.state_dict()), step)

    n_head = head_epochs * per_epoch
    n_full = budget_steps(epochs, per_epoch, min_steps, steps) if train_encoder else 0
    if not train_encoder:  # head only: the head gets the whole budget
        n_head += budget_steps(epochs, per_epoch, min_steps, steps)
    n_head_candidates = n_full == 0
    every = val_every_steps or max(1, (n_full or n_head) // 10)
    batches = _batches(loader, ds, 0)
    epoch = 0
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    head_opt = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    for i in range(1, n_head + 1):
        epoch, batch = next(batches)
        _step(model, batch, head_opt, loss_fn, data.task_type, device, train_encoder=False)
        if n_head_candidates and (i % every == 0 or i == n_head):
            select(i)  # warm-up steps are not candidates: a fine-tuned model must have fine-tuned its encoder
    encoder_lr = 0.0
    layer_facts: dict[str, Any] = {}
    if n_full:
        for p in model.encoder.parameters():
            p.requires_grad_(True)
        groups = param_groups(model, lr, encoder_lr_ratio, lr_group_factor, layerwise_lr_factor)
        # The encoder's top rate: its one group, or the first group below the head's.
        layered = lr_group_factor is not None or layerwise_lr_factor is not None
        encoder_lr = groups[0]["lr"] if not layered else (groups[1]["lr"] if len(groups) > 1 else 0.0)
        if layerwise_lr_factor is not None:  # the benchmark's layer-wise rates: each group's rate and size, the split
            layer_facts = {"lr_groups": {g["name"]: g["lr"] for g in groups},
                           "lr_group_parameters": {g["name"]: sum(p.numel() for p in g["params"]) for g in groups},
                           "layer_split": layer_halves(model.encoder)[2]}
        opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * min(k / n_full, 1.0))))
        for i in range(1, n_full + 1):
            epoch, batch = next(batches)
            _step(model, batch, opt, loss_fn, data.task_type, device, train_encoder=True)
            sched.step()
            if i % every == 0 or i == n_full:
                select(n_head + i)
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    facts = {
        "head_lr": lr, "encoder_lr": encoder_lr, "steps": n_head + n_full, "head_steps": n_head,
        "selected_step": int(best[2]), "selected_epoch": int(max(best[2] - 1, 0) // per_epoch),
        "val_score": float(best[0]) if val_tiles is not None and np.isfinite(best[0]) else None,
        "encoder_changed": state_dict_hash(model.encoder) != before,
        **layer_facts,
    }
    return model, facts


class Finetune(EvalProtocol):
    """Trains the encoder, so not a frozen-feature protocol; it loads its task as they do."""

    Config = FinetuneConfig
    cfg: FinetuneConfig

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        data = load_task(ctx, c.task_spec)
        data.refuse_unlearnable("finetune", c.task, c.train_split, c.label_fractions, c.seeds)
        test_tiles = TiledWindows(data.cache, data.test.indices, ctx.window, ctx.stride)
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                for frac in c.label_fractions:
                    train = data.subset(frac, seed)
                    excluded = data.excluded_classes(frac, seed)
                    picked = data.with_val(data.val_positions(frac, seed, c.subsample_val))
                    encoder = ctx.make_encoder("pretrained" if init == "pretrained" else "random", seed)
                    model, facts = fit(
                        encoder, train, picked, ctx, n_out=data.n_out, head_epochs=c.head_epochs, epochs=c.epochs,
                        lr=c.lr, encoder_lr_ratio=c.encoder_lr_ratio, weight_decay=c.weight_decay,
                        batch_size=c.batch_size, seed=seed, train_encoder=init != "random", min_steps=c.min_steps,
                        steps=c.steps, val_every_steps=c.val_every_steps, schedule=c.schedule,
                        lr_group_factor=c.lr_group_factor, head=c.head, head_hidden=c.head_hidden,
                        head_dropout=c.head_dropout, feature_grad_mult=c.feature_grad_mult,
                        layerwise_lr_factor=c.layerwise_lr_factor,
                        exclude=excluded_names(excluded),
                    )
                    scores = record_scores(model, test_tiles, data.task_type, ctx.device, ctx.batch_size, ctx.num_workers)
                    rows.append(ResultRow(
                        kind="finetune", task=c.task, task_type=data.task_type, init=init, label_fraction=frac,
                        seed=seed, split=c.test_split, primary=PRIMARY[data.task_type],
                        n_train_records=int(len(train.indices)), n_val_records=int(len(picked.val.indices)),
                        n_test_records=int(len(data.test.indices)), facts=facts,
                        **score_rows(data.task_type, data.test.y, scores, data.train.names, c.bootstrap, seed,
                                   *record_identity(data.cache, data.test.indices), excluded=excluded),
                    ))
        return rows
