"""Heads trained on encoder features: the loss and score of each task type, and the probes' heads (a linear
layer, or an MLP with one hidden layer: the "frozen" mode of the benchmarking work)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ecgforge.data.splits import TaskType
from ecgforge.evaluation.features import per_record


def head_loss(task_type: TaskType) -> nn.Module:
    return {"multilabel": nn.BCEWithLogitsLoss(), "multiclass": nn.CrossEntropyLoss(), "regression": nn.MSELoss()}[task_type]


def scores_from_logits(logits: torch.Tensor, task_type: TaskType) -> torch.Tensor:
    """Probabilities for classification (sigmoid / softmax), the value itself for regression."""
    if task_type == "multilabel":
        return torch.sigmoid(logits)
    if task_type == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits.squeeze(-1)


@dataclass
class LinearHead:
    """A linear layer (or the MLP of `reference_mlp_head`) on standardised features (mean/std from the
    training windows)."""

    layer: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    task_type: TaskType
    # 1-based epoch whose weights were kept (the best on validation, else the last); 0 if no epoch ran.
    selected_epoch: int = 0

    def scores(self, feats: np.ndarray) -> np.ndarray:
        self.layer.eval()  # BatchNorm running statistics, no dropout
        with torch.no_grad():
            x = (torch.from_numpy(feats) - self.mean) / self.std
            return scores_from_logits(self.layer(x), self.task_type).numpy()


def fit_linear_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    task_type: TaskType,
    n_out: int,
    *,
    val: tuple[np.ndarray, np.ndarray, np.ndarray, int, Callable[[np.ndarray, np.ndarray], float]] | None = None,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    mlp: tuple[int, float] | None = None,
) -> LinearHead:
    """Train a linear head on frozen features with Adam; keep the epoch with the best validation score.

    ``mlp = (hidden, dropout)`` trains `reference_mlp_head` instead of a linear layer (one hidden layer,
    batch norm, dropout).

    Args:
        train_x: ``(N, D)`` window features; train_y: ``(N, C)`` / ``(N,)`` targets per window.
        val: (window features, record_of, record targets, n_records, score_fn) where ``score_fn(y, scores)``
            is higher-is-better; without it the last epoch is kept.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train_x).float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.from_numpy(train_y)
    y = y.float() if task_type != "multiclass" else y.long()
    if task_type == "regression":
        y = y.reshape(-1, 1)
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_out) if mlp is None else reference_mlp_head(x.shape[1], n_out, *mlp)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = head_loss(task_type)
    head = LinearHead(layer, mean, std, task_type)
    best_score, best_state, best_epoch = -np.inf, copy.deepcopy(layer.state_dict()), 0
    for epoch in range(1, epochs + 1):
        layer.train()
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            if mlp is not None and len(idx) < 2 < len(x):
                continue  # a batch of one breaks BatchNorm in training mode
            opt.zero_grad()
            loss_fn(layer(x[idx]), y[idx]).backward()
            opt.step()
        if val is not None:
            vx, vrec, vy, vn, score_fn = val
            score = score_fn(vy, per_record(head.scores(vx), vrec, vn))
            if np.isfinite(score) and score > best_score:
                best_score, best_state, best_epoch = score, copy.deepcopy(layer.state_dict()), epoch
    if val is not None and np.isfinite(best_score):
        layer.load_state_dict(best_state)
        head.selected_epoch = best_epoch
    else:
        head.selected_epoch = epochs
    return head


def reference_mlp_head(dim: int, n_out: int, hidden: int = 512, dropout: float = 0.5) -> nn.Sequential:
    """The fine-tuning head of Mehari & Strodthoff: ``(B, dim) -> (B, n_out)``.

    hhi-aml/ecg-selfsupervised ``clinical_ts/basic_conv1d.py`` ``create_head1d`` with ``lin_ftrs=[hidden]``,
    ``ps=dropout``, ``bn=True`` (the CPC classifier's defaults ``lin_ftrs_head=[512]``, ``ps_head=0.5``): each
    layer is ``bn_drop_lin`` = BatchNorm1d, Dropout, Linear; the hidden layer's dropout is ``dropout / 2``,
    the last's ``dropout``; ReLU after the hidden layer only. Pooling is the encoder's, not part of the head.
    """
    return nn.Sequential(
        nn.BatchNorm1d(dim), nn.Dropout(dropout / 2), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, n_out),
    )
