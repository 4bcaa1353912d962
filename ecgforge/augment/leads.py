"""Random lead masking (RLM) of Oh et al. 2022 (W2V+CMSC+RLM): each lead is zeroed independently with
probability ``p_lead`` (0.5 in the paper, applied to every sample), so one encoder learns from any lead subset.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.registry import BuildContext


class RandomLeadMaskConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["random_lead_mask"] = "random_lead_mask"
    p_lead: float = Field(0.5, ge=0, le=1, description="probability that a lead is zeroed")
    keep_at_least_one: bool = Field(
        False, description="re-enable one random lead where all were drawn masked"
    )
    p: float = Field(1.0, ge=0, le=1, description="probability of masking a sample at all")


class RandomLeadMask(nn.Module):
    """Zero whole leads at random; the other leads pass through bit-identical.

    With ``keep_at_least_one`` a sample whose every lead was drawn masked gets one uniformly chosen lead back
    (Oh et al. do not do this: with p_lead = 0.5 and 12 leads it happens to 1 sample in 4096). The module does
    not know which leads are missing in the record, so the lead it keeps may be one that is already zero.
    """

    Config = RandomLeadMaskConfig

    def __init__(self, cfg: RandomLeadMaskConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def sample_mask(self, b: int, device: torch.device | str, n_leads: int = 12) -> Tensor:
        """(B, n_leads) bool, True where the lead is zeroed. Draws from torch's global generator on ``device``."""
        mask = torch.rand(b, n_leads, device=device) < self.cfg.p_lead
        if self.cfg.keep_at_least_one:
            keep = torch.randint(n_leads, (b,), device=device)
            all_masked = mask.all(dim=1)
            mask[all_masked, keep[all_masked]] = False
        if self.cfg.p < 1.0:
            mask &= (torch.rand(b, device=device) < self.cfg.p)[:, None]
        return mask

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T) with the leads of ``sample_mask`` zeroed."""
        mask = self.sample_mask(x.shape[0], x.device, x.shape[1])
        return x.masked_fill(mask[:, :, None], 0)
