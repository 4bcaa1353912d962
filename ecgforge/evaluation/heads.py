"""Heads trained on encoder features: the loss and score of each task type, and the probes' heads (a linear
layer; an MLP with one hidden layer, the "frozen" mode of the benchmarking work; or a learnable-query
attention pooling over the encoder's token sequence, the frozen head of the ECG foundation-model benchmark)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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


class AttentionPoolHead(nn.Module):
    """Learnable-query attention pooling: ``tokens (B, T', C) -> logits (B, n_out)``.

    V-JEPA's attentive probe, the frozen-encoder head of the ECG foundation-model benchmark (Al-Masud, Lopez
    Alcaraz & Strodthoff, ICLR 2026; AI4HealthUOL/ecg-fm-benchmarking ``clinical_ts/utils/heads.py``
    ``LearnableQueryAttentionPool1d`` with its defaults ``heads=16``, ``bias=False``): one learned query
    (initialised N(0, 1/C)) attends over the tokens with ``heads`` heads of width C / heads through q/k/v
    projections C -> C, and the output projection C -> n_out is the classifier. No bias anywhere.
    """

    def __init__(self, dim: int, n_out: int, heads: int = 16) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the attention head's {heads} heads do not divide the feature width {dim}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, 1, dim) / dim**0.5)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, n_out, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, c = tokens.shape
        h, d = self.heads, c // self.heads
        q = self.q_proj(self.query).reshape(1, h, 1, d).expand(b, h, 1, d)
        k = self.k_proj(tokens).reshape(b, t, h, d).transpose(1, 2)  # (B, h, T', d)
        v = self.v_proj(tokens).reshape(b, t, h, d).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, d), softmax(q k^T / sqrt(d)) v
        return self.c_proj(pooled.reshape(b, c))


@dataclass
class LinearHead:
    """A probe head on standardised features (mean/std per feature from the training windows): a linear layer,
    the MLP of `reference_mlp_head`, or `AttentionPoolHead` over token sequences (``sequence`` True: inputs
    ``(W, T', C)``, standardised per channel over windows and tokens)."""

    layer: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    task_type: TaskType
    # 1-based epoch whose weights were kept (the best on validation, else the last); 0 if no epoch ran.
    selected_epoch: int = 0
    sequence: bool = False

    def scores(self, feats: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """``(W, D)`` features (``(W, T', C)`` token sequences for a sequence head) -> ``(W, ...)`` scores."""
        self.layer.eval()  # BatchNorm running statistics, no dropout
        out = []
        with torch.no_grad():
            for start in range(0, max(len(feats), 1), batch_size):
                x = (torch.from_numpy(feats[start:start + batch_size]) - self.mean) / self.std
                out.append(scores_from_logits(self.layer(x), self.task_type))
        return torch.cat(out).numpy()


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
    attention_heads: int | None = None,
) -> LinearHead:
    """Train a linear head on frozen features with Adam; keep the epoch with the best validation score.

    ``mlp = (hidden, dropout)`` trains `reference_mlp_head` instead of a linear layer (one hidden layer,
    batch norm, dropout); ``attention_heads`` trains `AttentionPoolHead` with that many heads on token
    sequences.

    Args:
        train_x: ``(N, D)`` window features, or ``(N, T', C)`` token sequences with ``attention_heads``;
            train_y: ``(N, C)`` / ``(N,)`` targets per window.
        val: (window features, record_of, record targets, n_records, score_fn) where ``score_fn(y, scores)``
            is higher-is-better; without it the last epoch is kept.
    """
    sequence = attention_heads is not None
    if train_x.ndim != (3 if sequence else 2):
        raise ValueError(f"expected {'(N, T, C) token sequences' if sequence else '(N, D) features'}, "
                         f"got shape {train_x.shape}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train_x).float()
    flat = x.reshape(-1, x.shape[-1])  # a sequence head: statistics per channel over windows and tokens
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.from_numpy(train_y)
    y = y.float() if task_type != "multiclass" else y.long()
    if task_type == "regression":
        y = y.reshape(-1, 1)
    torch.manual_seed(seed)
    dim = x.shape[-1]
    layer: nn.Module
    if attention_heads is not None:
        layer = AttentionPoolHead(dim, n_out, attention_heads)
    elif mlp is not None:
        layer = reference_mlp_head(dim, n_out, *mlp)
    else:
        layer = nn.Linear(dim, n_out)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = head_loss(task_type)
    head = LinearHead(layer, mean, std, task_type, sequence=sequence)
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
