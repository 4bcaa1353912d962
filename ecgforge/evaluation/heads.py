"""Heads trained on encoder features: the loss and score of each task type, and the linear probe's head."""

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
    """A linear layer on standardised features (mean/std from the training windows)."""

    layer: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor
    task_type: TaskType

    def scores(self, feats: np.ndarray) -> np.ndarray:
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
) -> LinearHead:
    """Train a linear head on frozen features with Adam; keep the epoch with the best validation score.

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
    layer = nn.Linear(x.shape[1], n_out)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = head_loss(task_type)
    head = LinearHead(layer, mean, std, task_type)
    best_score, best_state = -np.inf, copy.deepcopy(layer.state_dict())
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss_fn(layer(x[idx]), y[idx]).backward()
            opt.step()
        if val is not None:
            vx, vrec, vy, vn, score_fn = val
            score = score_fn(vy, per_record(head.scores(vx), vrec, vn))
            if np.isfinite(score) and score > best_score:
                best_score, best_state = score, copy.deepcopy(layer.state_dict())
    if val is not None and np.isfinite(best_score):
        layer.load_state_dict(best_state)
    return head
