"""Lead subsets: the reduced-lead settings of the PhysioNet/CinC Challenge 2021 (Reyna et al., "Will Two Do?
Varying Dimensions in Electrocardiography", CinC 2021) as Oh et al. (CHIL 2022) evaluate them.

``12`` all leads; ``6`` limb leads I, II, III, aVR, aVL, aVF; ``4`` I, II, III, V2; ``3`` I, II, V2; ``2`` I, II;
``1`` I. A lead outside the subset is zeroed: fairseq-signals loads a subset with ``leads_to_load`` and
``enable_padding_leads = true`` (``data/ecg/raw_ecg_dataset.py::RawECGDataset.load_specific_leads``), which puts
the kept leads at their own rows of a 12-row zero array, and every ecgforge encoder receives a missing lead
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ecgforge.errors import UserError

LEAD_SUBSETS: dict[str, tuple[str, ...]] = {
    "12": ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
    "6": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "4": ("I", "II", "III", "V2"),
    "3": ("I", "II", "V2"),
    "2": ("I", "II"),
    "1": ("I",),
}

LeadSubset = Literal["12", "6", "4", "3", "2", "1"]


def lead_subset_transform(cache_leads: list[str], subset: str,
                          protocol: str = "robustness") -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (B, L, T) -> x`` with every lead outside ``LEAD_SUBSETS[subset]`` set to zero."""
    missing = [lead for lead in LEAD_SUBSETS[subset] if lead not in cache_leads]
    if missing:
        raise UserError(f"{protocol}: lead subset {subset!r} needs leads {missing} that the cache lacks")
    keep = torch.tensor([lead in LEAD_SUBSETS[subset] for lead in cache_leads])

    def transform(x: torch.Tensor) -> torch.Tensor:
        return x * keep.to(x.device, x.dtype)[None, :, None]

    return transform


def lead_transform(cache_leads: list[str], subset: str,
                   protocol: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The named transform of a subset for ``FeatureCache.windows`` (the name keys the cache); None for 12."""
    if subset == "12":
        return None
    return f"leads/{subset}", lead_subset_transform(cache_leads, subset, protocol)
