"""MoCo as in hhi-aml/ecg-selfsupervised ``custom_moco_bolts.py`` (``CustomMoCo`` with the arguments of its
``cli_main``): momentum contrast with a queue of negatives (He et al. 2020; the v2 MLP head of Chen et al.).

A query network (encoder → MLP projector, ESS ``ResNetSimCLR(hidden=True)``: Linear(512, 512)-ReLU-
Linear(512, 16), no BatchNorm) encodes view 1; a key network, the same architecture whose parameters are an
exponential moving average of the query network's (ξ ← m·ξ + (1 − m)·θ, m 0.999; buffers are its own, as in
ESS), encodes view 2 without gradient. Both outputs are L2-normalised. Loss: InfoNCE of each query against its
key and the ``queue_length`` queued keys of past batches (``losses.moco_infonce``), one direction only (view 1
queries, view 2 keys, as ESS). The keys of every process are then enqueued (gathered), at a pointer that wraps
around. The queue starts as random unit vectors.

This is the code's MoCo (v2 form: queue, no predictor, asymmetric), not MoCo v3 (predictor, symmetric loss,
in-batch keys), which ecg-selfsupervised does not contain. ESS updates the key network inside every forward
before computing keys; here it is updated after every optimiser step, which gives the same keys (at the first
step the key network equals the query network, so ESS's first update is a no-op). ESS's shuffle-BN runs only
with DDP; it is not reproduced.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ecgforge.errors import UserError
from ecgforge.layers.distributed import gather_with_grad
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.losses import moco_infonce
from ecgforge.registry import BuildContext


class MoCoConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["moco"] = "moco"
    temperature: float = Field(0.07, gt=0, description="CustomMoCo default 0.07 (ESS cli_main passes lr)")
    momentum: float = Field(0.999, ge=0, le=1, description="EMA momentum of the key network")
    queue_length: int = Field(65536, gt=0, description="queued keys (ESS: the training set size)")
    projector_hidden: int = Field(512, gt=0, description="ESS ResNetSimCLR l1: 512 -> 512")
    projector_dim: int = Field(16, gt=0, description="ESS out_dim (bolts_config.yaml): 16")


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """ESS ``ResNetSimCLR`` head ``l2(relu(l1(h)))``: Linear-ReLU-Linear with biases, no BatchNorm."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class MoCo(Objective):
    Config = MoCoConfig
    cfg: MoCoConfig

    def __init__(self, cfg: MoCoConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.projector = mlp_head(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim)
        self.key_encoder = copy.deepcopy(self.encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in self._key_params():
            p.requires_grad_(False)
        # Buffers: saved with the model; DDP broadcasts them from process 0, and every process enqueues the
        # same gathered keys, so they agree anyway.
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_length, cfg.projector_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _key_params(self) -> list[nn.Parameter]:
        return [*self.key_encoder.parameters(), *self.key_projector.parameters()]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group, the query network; the key network follows by EMA."""
        keys = {id(p) for p in self._key_params()}
        return {"encoder": [p for p in self.parameters() if id(p) not in keys]}

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """ESS ``_dequeue_and_enqueue``: write ``keys (N, D)`` at the pointer, wrapping around the end."""
        n, size = keys.shape[0], self.queue.shape[0]
        if n > size:
            raise UserError(f"ssl.queue_length = {size} is shorter than the global batch ({n})")
        ptr = int(self.queue_ptr)
        room = size - ptr
        if room < n:
            self.queue[ptr:] = keys[:room]
            self.queue[: n - room] = keys[room:]
            ptr = n - room
        else:
            self.queue[ptr:ptr + n] = keys
            ptr = (ptr + n) % size
        self.queue_ptr.fill_(ptr)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> InfoNCE of view-1 queries against view-2 keys and the queue."""
        x = batch["x"]
        v1, v2 = self.augment(x), self.augment(x)
        q = F.normalize(self.projector(self.encoder(v1)), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_encoder(v2)), dim=1)
        loss = moco_infonce(q, k, self.queue.clone(), self.cfg.temperature)
        if self.training:
            self.enqueue(gather_with_grad(k.float()))
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """ξ ← m·ξ + (1 − m)·θ over parameters (ESS ``_momentum_update_key_encoder``)."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        m = self.cfg.momentum
        for po, pk in zip(online, self._key_params(), strict=True):
            pk.mul_(m).add_(po.detach(), alpha=1 - m)
