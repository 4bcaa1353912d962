"""3KG (Gopal et al. 2021, arXiv 2106.04452): spatial augmentation in vectorcardiogram (VCG) space plus a
temporal mask, as implemented in fairseq-signals' ``_3KGECGDataset.perturb``
(Jwoo5/fairseq-signals, ``fairseq_signals/data/ecg/perturb_ecg_dataset.py``).

One call produces one view; an objective calls the module once per view (fairseq-signals draws the two views
of a record inside one call, with independent angles, scales and masks, which is equivalent).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment.noise import apply_with_probability
from ecgforge.registry import BuildContext

# Leads I, II, V1..V6 in canonical order (I, II, III, aVR, aVL, aVF, V1..V6): the 8 independent leads.
INDEPENDENT_LEADS = (0, 1, 6, 7, 8, 9, 10, 11)

# 12-lead (I, II, V1..V6) -> VCG (X, Y, Z), exactly the 3×8 ``D_i`` of fairseq-signals' 3KG. It matches the
# inverse Dower matrix (Edenbrandt & Pahlm 1988, J Electrocardiol 21:361) to within the third decimal; that
# identification is from memory of the published coefficients, not checked against the paper.
LEADS_TO_VCG = (
    (0.156, -0.009, -0.172, -0.073, 0.122, 0.231, 0.239, 0.193),
    (-0.227, 0.886, 0.057, -0.019, -0.106, -0.022, 0.040, 0.048),
    (0.021, 0.102, -0.228, -0.310, -0.245, -0.063, 0.054, 0.108),
)


def rotation_zyx(angles_rad: Tensor) -> Tensor:
    """Rotation matrices for extrinsic 'zyx' Euler angles, as scipy's ``Rotation.from_euler('zyx', ...)``.

    Args:
        angles_rad: ``(B, 3)``, rotations about the fixed z, then y, then x axes (radians).

    Returns:
        ``(B, 3, 3)`` matrices R = Rx(γ) · Ry(β) · Rz(α) for angles (α, β, γ).
    """
    cos, sin = angles_rad.cos(), angles_rad.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])
    ca, cb, cg = cos.unbind(1)
    sa, sb, sg = sin.unbind(1)
    rz = torch.stack([ca, -sa, zero, sa, ca, zero, zero, zero, one], 1).view(-1, 3, 3)
    ry = torch.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], 1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cg, -sg, zero, sg, cg], 1).view(-1, 3, 3)
    return rx @ ry @ rz


def limb_leads(lead_i: Tensor, lead_ii: Tensor) -> Tensor:
    """Einthoven/Goldberger relations: (III, aVR, aVL, aVF) ``(B, 4, T)`` from leads I and II ``(B, T)``."""
    return torch.stack(
        [lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2], dim=1
    )


class ThreeKGConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["threekg"] = "threekg"
    angle_deg: float = Field(45.0, ge=0, le=180, description="each Euler angle ~ U(-angle, angle), degrees")
    max_scale: float = Field(1.5, ge=1, description="each VCG axis scaled by U(1, max_scale)")
    mask_ratio: float = Field(
        0.5, ge=0, lt=1, description="fraction of each lead zeroed (contiguous, wrapping)"
    )
    p: float = Field(1.0, ge=0, le=1)


class ThreeKG(nn.Module):
    """3KG view: leads I, II, V1–V6 -> VCG (``LEADS_TO_VCG``), random rotation (Euler 'zyx', angles
    U(−angle_deg, angle_deg)) then per-axis scale U(1, max_scale), back to the 8 leads with the pseudo-inverse,
    III/aVR/aVL/aVF re-derived from I and II, then in each of the 12 leads a contiguous span of
    floor(mask_ratio·T) samples starting anywhere (wrapping past the end) is zeroed.

    With no rotation and unit scale the spatial part is pinv(D)·D, the projection of the 8 leads onto the
    3-dimensional dipole subspace: signals in that subspace pass unchanged, others lose their non-dipolar part
    (as in fairseq-signals). Needs the 12 canonical leads; missing leads should be zero, as usual.
    """

    Config = ThreeKGConfig

    def __init__(self, cfg: ThreeKGConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        d = torch.tensor(LEADS_TO_VCG, dtype=torch.float64)
        # Buffers move with the module; not persistent, so checkpoints do not carry constants.
        self.register_buffer("to_vcg", d, persistent=False)
        self.register_buffer("from_vcg", torch.linalg.pinv(d), persistent=False)

    def sample_transform(self, b: int, device: torch.device | str) -> Tensor:
        """(B, 8, 8) float64 maps pinv(D) · S · R · D on the independent leads, one per sample."""
        angles = math.radians(self.cfg.angle_deg) * (2 * torch.rand(b, 3, device=device, dtype=torch.float64) - 1)
        scales = 1 + (self.cfg.max_scale - 1) * torch.rand(b, 3, device=device, dtype=torch.float64)
        to_vcg, from_vcg = self.to_vcg.to(device), self.from_vcg.to(device)
        return from_vcg @ (scales[:, :, None] * rotation_zyx(angles)) @ to_vcg

    def sample_time_mask(self, b: int, t_len: int, device: torch.device | str, n_leads: int = 12) -> Tensor:
        """(B, n_leads, T) bool, True on each lead's zeroed span of floor(mask_ratio·T) samples (wrapping)."""
        length = math.floor(t_len * self.cfg.mask_ratio)
        start = torch.randint(t_len, (b, n_leads, 1), device=device)
        t = torch.arange(t_len, device=device)
        return (t - start) % t_len < length

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 12, T) mV -> (B, 12, T) mV."""
        b, n_leads, t_len = x.shape
        if n_leads != 12:
            raise ValueError(f"threekg needs the 12 canonical leads, got {n_leads}")
        transform = self.sample_transform(b, x.device).float()
        # float32 matmul even for bf16 inputs: the 8×8 map mixes leads of different size.
        leads8 = transform @ x[:, INDEPENDENT_LEADS].float()  # (B, 8, T)
        out = torch.cat([leads8[:, :2], limb_leads(leads8[:, 0], leads8[:, 1]), leads8[:, 2:]], dim=1)
        if self.cfg.mask_ratio > 0:
            out = out.masked_fill(self.sample_time_mask(b, t_len, x.device), 0)
        return apply_with_probability(x, out.to(x.dtype), self.cfg.p)
