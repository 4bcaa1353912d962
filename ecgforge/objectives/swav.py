"""SwAV (Caron et al. 2020) as in Mehari & Strodthoff 2021 (hhi-aml/ecg-selfsupervised
``custom_swav_bolts.py``, ``CustomSwAV`` with the arguments its ``cli_main`` passes).

``n_views`` augmented views of each window (ESS: 7 crops of the same transform, the last one kept for online
evaluation only, so 6 enter the loss; no multi-resolution crops) go through encoder → projector (Linear-BN-
ReLU-Linear, 512 → 2048 → 128) → L2 normalisation → prototypes (a bias-free linear layer of ``n_prototypes``
unit vectors, re-normalised before every step). For each view in ``crops_for_assign`` (0 and 1), Sinkhorn-Knopp
(ε 0.05, 3 iterations) turns its prototype scores into soft codes q, which every *other* view must predict:
the loss is Σ_{v ≠ c} −Σ_k q_k log softmax(scores_v / τ)_k, divided by ``n_views`` (ESS divides by
``nmb_crops − 1`` = 6 with nmb_crops = 7 counting the dropped view, while it sums 5 terms; the official SwAV
divides by the number of terms), then averaged over the assigning views.

Queue (ESS: 8 × batch size, from epoch 15): the normalised projections of the assigning views of past
batches; once it is full, their scores against the current prototypes join the batch's in the Sinkhorn
problem, and only the batch rows of the codes are used. The prototypes get no gradient during the first
``freeze_prototypes_steps`` steps (ESS: the first epoch). ESS counts both in epochs; here they are steps, since
an objective does not know the epoch length.

Across processes the batch scores and queue entries are gathered, so N processes with batch B compute the
codes of one process with batch N·B (as ESS's distributed Sinkhorn does with per-process queues).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from ecgforge.errors import UserError
from ecgforge.layers.distributed import gather_with_grad, world
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.losses import sinkhorn, swapped_prediction
from ecgforge.registry import BuildContext


class SwAVConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["swav"] = "swav"
    n_views: int = Field(6, ge=2, description="views per window in the loss (ESS: 7 crops, the last unused)")
    crops_for_assign: list[int] = Field(default_factory=lambda: [0, 1], min_length=1,
                                        description="views whose codes the others predict (ESS: [0, 1])")
    n_prototypes: int = Field(3000, gt=0, description="ESS CustomSwAV default: 3000")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    temperature: float = Field(0.1, gt=0)
    epsilon: float = Field(0.05, gt=0, description="Sinkhorn entropic regularisation")
    sinkhorn_iterations: int = Field(3, gt=0)
    queue_length: int = Field(0, ge=0, description="queued projections (all processes); 0: no queue")
    queue_start_step: int = Field(0, ge=0, description="step from which the queue is filled (ESS: epoch 15)")
    freeze_prototypes_steps: int = Field(0, ge=0, description="steps without prototype gradients (ESS: 1 epoch)")

    @model_validator(mode="after")
    def _check_assign(self) -> SwAVConfig:
        bad = [c for c in self.crops_for_assign if not 0 <= c < self.n_views]
        if bad or len(set(self.crops_for_assign)) != len(self.crops_for_assign):
            raise ValueError(f"crops_for_assign must be distinct views in [0, {self.n_views}), got {self.crops_for_assign}")
        return self


class SwAV(Objective):
    Config = SwAVConfig
    cfg: SwAVConfig

    def __init__(self, cfg: SwAVConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        # ESS CustomResNet.projection_head: Linear-BN-ReLU-Linear (its first bias is cancelled by the BN anyway).
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim)
        self.prototypes = nn.Linear(cfg.projector_dim, cfg.n_prototypes, bias=False)
        # Buffers: saved with the model, so a resumed run continues with its queue and step count. DDP
        # broadcasts buffers from process 0; the queue holds gathered entries, the same on every process.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.queue: Tensor | None
        if cfg.queue_length > 0:
            self.register_buffer("queue", torch.zeros(len(cfg.crops_for_assign), cfg.queue_length, cfg.projector_dim))
        else:
            self.queue = None

    def prototype_weight(self) -> Tensor:
        """The prototypes, without gradient during the first ``freeze_prototypes_steps`` steps (ESS sets
        their grad to None in the first epoch). Multi-process runs keep them in the graph with a zero
        gradient instead, so that DDP sees the same set of used parameters on every step."""
        w = self.prototypes.weight
        if int(self.steps_done) >= self.cfg.freeze_prototypes_steps:
            return w
        return w.detach() + 0.0 * w if world()[1] > 1 else w.detach()

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> SwAV loss over ``n_views`` views."""
        x, cfg = batch["x"], self.cfg
        b = x.shape[0]
        with torch.no_grad():  # ESS step 1: unit-norm prototypes
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        views = torch.cat([self.augment(x) for _ in range(cfg.n_views)])  # (V·B, leads, T)
        z = F.normalize(self.projector(self.encoder(views)), dim=1)  # (V·B, D)
        w = self.prototype_weight()
        scores = z @ w.t()  # (V·B, K)
        rank, _ = world()
        use_queue = self.queue is not None and int(self.steps_done) >= cfg.queue_start_step
        loss = z.new_zeros(())
        for i, c in enumerate(cfg.crops_for_assign):
            with torch.no_grad():
                out = gather_with_grad(scores[c * b:(c + 1) * b].detach())  # (N·B, K), every process's batch
                nb = out.shape[0]
                if use_queue:
                    assert self.queue is not None
                    if nb > self.queue.shape[1]:
                        raise UserError(f"ssl.queue_length = {self.queue.shape[1]} is shorter than the global "
                                        f"batch ({nb}); make it at least one batch")
                    if not torch.all(self.queue[i, -1] == 0):  # ESS: used once full
                        out = torch.cat([self.queue[i] @ w.detach().t(), out])
                    self.queue[i, nb:] = self.queue[i, :-nb].clone()
                    self.queue[i, :nb] = gather_with_grad(z[c * b:(c + 1) * b].detach())
                codes = sinkhorn(out, cfg.epsilon, cfg.sinkhorn_iterations)[-nb:][rank * b:(rank + 1) * b]  # (B, K)
            subloss = z.new_zeros(())
            for v in range(cfg.n_views):
                if v != c:
                    subloss = subloss + swapped_prediction(codes, scores[v * b:(v + 1) * b], cfg.temperature)
            loss = loss + subloss / cfg.n_views
        loss = loss / len(cfg.crops_for_assign)
        return loss, {"loss": loss.detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Count optimiser steps (queue start, prototype freeze)."""
        self.steps_done.fill_(step)
