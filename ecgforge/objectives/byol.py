"""BYOL (Grill et al. 2020) for ECG, as one of the methods of Mehari & Strodthoff 2021.

An online network (encoder → projector → predictor) regresses the projection of another view made by a
target network (encoder → projector) whose weights are an exponential moving average of the online ones:
ξ ← τ·ξ + (1 − τ)·θ after every optimiser step, with τ rising from ``base_tau`` to 1 on a cosine schedule,
τ_k = 1 − (1 − τ_base)·(cos(π·k/K) + 1)/2 (Grill et al. eq. and appendix). The loss is symmetrised over the
two views. The target network never receives gradients (its parameters have ``requires_grad = False`` and
its outputs are computed under ``no_grad``) and is not in any optimiser group.

As in ecg-selfsupervised (``custom_byol_bolts.py``): the loss is the *sum* of the two directions
(``CustomBYOL.shared_step``: −2·cos(h1, z2) − 2·cos(h2, z1); ours adds the constant 4, so the gradient is the
same), τ_base 0.996 (``BYOLMAWeightUpdate``), projector and predictor Linear(no bias)-BN-ReLU-Linear with hidden
512 (``SiameseArm``/``MLP``), output ``out_dim`` of bolts_config.yaml (16). Its EMA updates only the parameters
whose name contains ``weight`` (``BYOLMAWeightUpdate.update_weights``): the target's biases stay at their
initial values. ``ema = "weights"`` reproduces that; ``"all"`` (default) is Grill et al.'s EMA of every
parameter.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ecgforge.layers.projector import projector
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig, WindowViews
from ecgforge.objectives.losses import byol_loss
from ecgforge.registry import BuildContext


class BYOLConfig(WindowViews, ObjectiveConfig, AugmentedConfig):
    kind: Literal["byol"] = "byol"
    base_tau: float = Field(0.996, ge=0, le=1, description="EMA momentum at step 0; rises to 1 (cosine); ESS 0.996")
    projector_hidden: int = Field(4096, gt=0, description="Grill et al.: 4096; ESS: 512")
    projector_dim: int = Field(256, gt=0, description="Grill et al.: 256; ESS: 16")
    predictor_hidden: int = Field(4096, gt=0, description="Grill et al.: 4096; ESS: 512")
    ema: Literal["all", "weights"] = Field(
        "all", description="all: EMA of every parameter (Grill et al.); weights: only '*weight*' ones (ESS)"
    )
    views: Literal["same_window", "own_window"] = Field(
        "same_window", description="same_window: both views of one crop (ESS); own_window: a crop of the record each"
    )


def cosine_tau(base_tau: float, step: int, total_steps: int) -> float:
    """EMA momentum after ``step`` of ``total_steps``: 1 − (1 − base)·(cos(π·step/total) + 1)/2."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base_tau) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(Objective):
    Config = BYOLConfig
    cfg: BYOLConfig

    def __init__(self, cfg: BYOLConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        # A buffer, so that a resumed run continues with the τ it had (it is saved with the model state).
        self.register_buffer("tau", torch.tensor(float(cfg.base_tau), dtype=torch.float64))
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim)
        self.predictor = projector(cfg.projector_dim, cfg.predictor_hidden, cfg.projector_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)

    def _online_modules(self) -> tuple[nn.Module, nn.Module]:
        return self.encoder, self.projector

    def _target_modules(self) -> tuple[nn.Module, nn.Module]:
        return self.target_encoder, self.target_projector

    def _target_params(self) -> list[nn.Parameter]:
        return [p for m in self._target_modules() for p in m.parameters()]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group, the online network (encoder, projector, predictor); the target is updated by EMA only."""
        target = {id(p) for p in self._target_params()}
        return {"encoder": [p for p in self.parameters() if id(p) not in target]}

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T), or (B, 2, leads, T) with ``own_window`` -> symmetric BYOL loss
        ℓ(v1→v2) + ℓ(v2→v1), each 2 − 2·cos in [0, 4] (sum in [0, 8], as ecg-selfsupervised's sum)."""
        x = batch["x"]
        x1, x2 = (x[:, 0], x[:, 1]) if self.cfg.views == "own_window" else (x, x)
        v1, v2 = self.augment(x1), self.augment(x2)
        p1 = self.predictor(self.projector(self.encoder(v1)))
        p2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder(v1))
            z2 = self.target_projector(self.target_encoder(v2))
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"loss": loss.detach(), "tau": self.tau.detach().float()}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """ξ ← τ·ξ + (1 − τ)·θ for parameters (with ``ema = "weights"`` only those named ``*weight*``, as
        ecg-selfsupervised); buffers (BatchNorm statistics) are copied from the online net."""
        for online, target in zip(self._online_modules(), self._target_modules(), strict=True):
            for (name, po), pt in zip(online.named_parameters(), target.parameters(), strict=True):
                if self.cfg.ema == "weights" and "weight" not in name:
                    continue
                pt.mul_(tau).add_(po.detach(), alpha=1 - tau)
            for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
                bt.copy_(bo)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """EMA update with the current τ, then advance τ on the cosine schedule (Grill et al. 2020)."""
        self.update_target(float(self.tau))
        self.tau.fill_(cosine_tau(self.cfg.base_tau, step, total_steps))
