"""Adversarial masking (Bo et al. 2022, arXiv 2211.07889; after ADIOS, Shi et al. 2022) for ECG.

A U-Net masker proposes M soft masks over time; one of them, drawn per sample, occludes the second view
of a SimCLR pair: view2 = augment(x)·(1 − m), the same mask on all 12 leads. The encoder *minimises* the
NT-Xent between view1 and the masked view2; the masker *maximises* it, minus a sparsity penalty that keeps
every mask partial (ADIOS's α·Σ_m mean_b 1/sin(ratio·π·mean_t m); without it the masks collapse to all-on,
which makes the views unrecognisable). Each batch runs the masker phase, then the encoder phase.

As in the authors' code (``advmask_model.py``), the chosen mask can be binarised with a steep sigmoid
σ(b·(m − 0.5)) (``binarization`` = b = 50; 0 = soft masks) so that occluded samples are fully zeroed while
the masker still gets a gradient; the sparsity penalty is computed on the soft masks of all M outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AugmentConfig
from ecgforge.layers.projector import projector
from ecgforge.maskers import MaskerConfig
from ecgforge.maskers.unet1d import UNet1dConfig
from ecgforge.objectives.base import Objective
from ecgforge.objectives.losses import nt_xent, sparsity_penalty


class AdvMaskConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["adv_mask"] = "adv_mask"
    temperature: float = Field(0.1, gt=0, description="NT-Xent τ (Bo et al.: 0.1)")
    sparsity_alpha: float = Field(1.0, ge=0, description="weight α of the sparsity penalty (sweep: 0.1, 0.5; code 1.0)")
    sparsity_ratio: float = Field(1.0, gt=0, le=1, description="penalty is smallest at 1/(2·ratio) masked")
    binarization: float = Field(50.0, ge=0, description="slope of σ(b·(m − 0.5)) on the chosen mask; 0 = off")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    masker: MaskerConfig = Field(default_factory=UNet1dConfig)
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied independently to each view")


@contextmanager
def frozen(modules: tuple[nn.Module, ...]) -> Iterator[None]:
    """Parameters of ``modules`` record no autograd history inside the block (restored afterwards)."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


class AdvMask(Objective):
    phases = ("masker", "encoder")

    def __init__(
        self,
        encoder: nn.Module,
        masker: nn.Module,
        augment: nn.Module,
        temperature: float = 0.1,
        sparsity_alpha: float = 1.0,
        sparsity_ratio: float = 1.0,
        binarization: float = 50.0,
        projector_hidden: int = 2048,
        projector_dim: int = 128,
    ) -> None:
        super().__init__(encoder)
        self.masker = masker
        self.augment = augment
        self.temperature = temperature
        self.sparsity_alpha = sparsity_alpha
        self.sparsity_ratio = sparsity_ratio
        self.binarization = binarization
        self.projector = projector(encoder.embed_dim, projector_hidden, projector_dim)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``masker``: the U-Net; ``encoder``: encoder + projector."""
        return {
            "masker": list(self.masker.parameters()),
            "encoder": [*self.encoder.parameters(), *self.projector.parameters()],
        }

    def masks(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> soft masks (B, M, T) in [0, 1] (for plots; no binarisation, no augmentation)."""
        return self.masker(x)

    def apply_mask(self, x: Tensor, masks: Tensor) -> Tensor:
        """x (B, leads, T), masks (B, M, T) -> x·(1 − m) with one mask per sample drawn uniformly from the M,
        binarised with σ(b·(m − 0.5)) when ``binarization`` b > 0, broadcast to all leads."""
        b, n_masks, _ = masks.shape
        choice = torch.randint(n_masks, (b,), device=masks.device)
        m = masks[torch.arange(b, device=masks.device), choice]  # (B, T)
        if self.binarization > 0:
            m = torch.sigmoid(self.binarization * (m - 0.5))
        return x * (1 - m[:, None, :])

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> loss of ``phase``: masker −NT-Xent + α·penalty, encoder NT-Xent."""
        x = batch["x"]
        v1, v2 = self.augment(x), self.augment(x)
        if phase == "masker":
            # The masker's loss must not train the encoder: its parameters record no history here, so the
            # gradient reaches only the masker whatever requires_grad flags the caller left on them.
            with frozen((self.encoder, self.projector)):
                masks = self.masker(v2)
                z1 = self.projector(self.encoder(v1))
                z2 = self.projector(self.encoder(self.apply_mask(v2, masks)))
                nce = nt_xent(z1, z2, self.temperature)
                penalty = sparsity_penalty(masks, self.sparsity_ratio)
                loss = -nce + self.sparsity_alpha * penalty
            return loss, {"loss": loss.detach(), "nce": nce.detach(), "penalty": penalty.detach(),
                          "mask_mean": masks.detach().mean()}
        if phase == "encoder":
            with torch.no_grad():
                masks = self.masker(v2)
            z1 = self.projector(self.encoder(v1))
            z2 = self.projector(self.encoder(self.apply_mask(v2, masks.detach())))
            loss = nt_xent(z1, z2, self.temperature)
            return loss, {"loss": loss.detach(), "mask_mean": masks.mean()}
        raise ValueError(f"adv_mask: unknown phase {phase!r}; phases are {self.phases}")
