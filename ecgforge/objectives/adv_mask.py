"""Adversarial masking (Bo et al. 2022, arXiv 2211.07889; after ADIOS, Shi et al. 2022) for ECG.

A U-Net masker proposes M masks over time, ``m (B, M, T)`` in [0, 1]. Masks occlude the second view of a
SimCLR pair, ``view2 = augment(x)·(1 − a)`` where ``a`` is the *applied* mask: the soft mask binarised with a
steep sigmoid σ(b·(m − 0.5)) (``binarization`` = b = 50 in the authors' newest code, 5b49bfe; their earlier
1c6f0ea thresholded hard; 0 = apply the soft mask, as ADIOS). The encoder minimises the NT-Xent between view 1
and the masked view 2; the masker maximises it, minus α times the sparsity penalty
Σ_m mean_b 1/sin(ratio·π·mean_t m) (without it the masks grow to all-on).

How the masks are applied (``mask_mode``):
    ``draw``: one of the M masks drawn per sample, the same on every lead (the authors' ``nmasks`` 1-3).
    ``each``: every mask in turn, one NT-Xent term per mask, summed (ADIOS's ``mask_forward``; M forwards).
    ``per_lead``: M = leads sigmoid masks, mask k on lead k (the authors' ``nmasks = 12``).
Where the penalty is computed (``penalty_on``): ``soft`` on the M soft masks (the authors' and ADIOS's code),
``applied`` on the binarised ones, i.e. on the occlusion that actually reaches the encoder: with b = 50 a
soft mask flat at 0.4 earns the soft penalty's minimum while hiding nothing once binarised.
``entropy_alpha`` adds ADIOS's entropy term across masks (alpha_entropy; 0 in the authors' code).
``positive_pairing = "cmsc"`` takes the two views from two adjacent segments of one record (the authors'
CMSC option: the two halves of a record) instead of two augmentations of one window; ``"own_window"`` from two
independent random crops of one record (3KG's views in ``three_kg_owncrop_norot``; with ``augment`` = the
``threekg`` augmentation this puts adversarial masks on top of 3KG's views, the paper's "orthogonal" claim).

``authors_update``: the authors' ``training_step`` runs the encoder phase first and never detaches the masks
there, so the encoder phase's +NT-Xent also accumulates into the masker's gradient before the masker phase
adds its −NT-Xent + penalty (``opt_m.zero_grad`` only follows ``opt_m.step``). With one mask both terms are
computed on the same masked view by the same encoder (it steps once per 4 accumulated batches) and cancel:
the masker then learns only the sparsity penalty. This flag reproduces that update (the masker's loss is
−NT-Xent(draw 2) + NT-Xent(draw 1) + α·penalty, encoder phase first). It reproduces only the authors'
batches on which the encoder does not step between the two phases: 3 of every 4 (``accumulate_grad_batches``
= 4; ``opt_e.step`` runs after the encoder phase when ``(batch_idx + 1) % 4 == 0``). On the 4th their masker
phase's −NT-Xent comes from the stepped encoder, so it no longer cancels the encoder phase's +NT-Xent (from the
encoder before the step); the side-by-side reading of issue 26 puts that leftover at about twice an NT-Xent
gradient (not measured here). ecgforge steps both networks on every batch, so that batch has no counterpart.

``projector_bn``: True (default) is Linear(no bias)-BN-ReLU-Linear; the authors' projector (jessica-bo/
advmask_ecg ``model/base_model.py``, ``BaseModel.__init__``, inherited by their adversarial model) is
Linear-ReLU-Linear without batch norm, which ``projector_bn = false`` gives.

The masker phase logs, per mask k, ``coverage_m{k}`` (mean applied mask = fraction of samples hidden) and
``qrs_share_m{k}`` (share of the hidden samples that lie within QRS complexes, ``data.qrs``), and
``qrs_share_signal`` (share of all samples in QRS complexes: what a mask placed at random would hide).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ecgforge.data.qrs import qrs_mask
from ecgforge.errors import UserError
from ecgforge.layers.projector import projector
from ecgforge.maskers import MASKERS, MaskerConfig
from ecgforge.maskers.unet1d import UNet1dConfig
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.cmsc import two_segments
from ecgforge.objectives.losses import nt_xent, sparsity_penalty
from ecgforge.registry import BuildContext, build


class AdvMaskConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["adv_mask"] = "adv_mask"
    temperature: float = Field(0.1, gt=0, description="NT-Xent τ (Bo et al.: 0.1)")
    sparsity_alpha: float = Field(1.0, ge=0, description="weight α of the sparsity penalty (sweep: 0.1, 0.5; code 1.0)")
    sparsity_ratio: float = Field(1.0, gt=0, le=1, description="penalty is smallest at 1/(2·ratio) masked")
    binarization: float = Field(50.0, ge=0, description="slope of σ(b·(m − 0.5)) on applied masks; 0 = soft")
    mask_mode: Literal["draw", "each", "per_lead"] = Field(
        "draw", description="draw: one mask per sample; each: every mask, NT-Xent summed (ADIOS); per_lead: mask k on lead k")
    penalty_on: Literal["soft", "applied"] = Field(
        "soft", description="sparsity penalty on the soft masks (authors, ADIOS) or on the binarised, applied ones")
    entropy_alpha: float = Field(0.0, ge=0, description="ADIOS's entropy term across the masks' coverages")
    positive_pairing: Literal["simclr", "cmsc", "own_window"] = Field(
        "simclr", description="simclr: two views of one window; cmsc: two adjacent segments of one record; "
        "own_window: two independent random crops of one record (3KG's views in three_kg_owncrop_norot)")
    authors_update: bool = Field(False, description="encoder phase first, its NT-Xent leaking into the masker (authors' code)")
    qrs_lead: int = Field(1, ge=0, description="lead whose R peaks define QRS complexes for the logged qrs_share (II)")
    # Issue 26 (see "Issue 26 additions" below): a penalty without the 1e10 spikes, and an encoder warm-up.
    penalty_form: Literal["sin", "bounded"] = Field(
        "sin", description="sin: α/(sin(π·r·mean)+1e-10) (authors); bounded: α/(sin(π·r·mean)+penalty_eps)")
    penalty_eps: float = Field(0.1, gt=0, description="bounded form: the penalty per mask is at most 1/penalty_eps")
    masker_warmup_steps: int = Field(
        0, ge=0, description="encoder steps on unmasked views (plain SimCLR) before the masker starts")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    projector_bn: bool = Field(
        True, description="BatchNorm after the projector's hidden layer (false: the authors' Linear-ReLU-Linear)")
    masker: MaskerConfig = Field(default_factory=UNet1dConfig)

    @property
    def phases(self) -> tuple[str, ...]:
        """The masker ascends, then the encoder descends; ``authors_update``: the authors' order, encoder first.
        A masker with nothing to learn (``maskers.random_mask``, the control: its config's ``learned`` is
        False) leaves the encoder phase only."""
        if not getattr(self.masker, "learned", True):
            return ("encoder",)
        return ("encoder", "masker") if self.authors_update else ("masker", "encoder")

    @property
    def n_segments(self) -> int:
        """Two windows of a record per item for CMSC positives (adjacent) and 3KG's crops (independent)."""
        return 2 if self.positive_pairing in ("cmsc", "own_window") else 1

    @property
    def segment_pairing(self) -> Literal["adjacent", "independent"]:
        return "independent" if self.positive_pairing == "own_window" else "adjacent"


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


def binarise(masks: Tensor, slope: float) -> Tensor:
    """Soft masks -> applied masks σ(slope·(m − 0.5)) (the authors' ``encoder_forward``); slope 0 = as given."""
    return torch.sigmoid(slope * (masks - 0.5)) if slope > 0 else masks


def mask_coverage(applied: Tensor) -> Tensor:
    """applied (B, M, T) in [0, 1] -> (M,) mean occlusion per mask: the fraction of samples it hides."""
    return applied.detach().float().mean(dim=(0, 2))


def qrs_share(applied: Tensor, qrs: Tensor) -> Tensor:
    """applied (B, M, T), qrs (B, T) bool -> (M,) share of each mask's hidden samples that lie in QRS complexes,
    Σ a·qrs / Σ a (0 for a mask that hides nothing). A mask placed at random scores ``qrs.mean()``."""
    a = applied.detach().float()
    hidden = a.sum(dim=(0, 2))
    in_qrs = (a * qrs[:, None, :].float()).sum(dim=(0, 2))
    return torch.where(hidden > 0, in_qrs / hidden.clamp_min(1e-12), torch.zeros_like(hidden))


def entropy_across_masks(masks: Tensor) -> Tensor:
    """ADIOS's entropy term (``utils/metrics.py`` ``Entropy`` on the summed masks): masks (B, M, T) ->
    −Σ_b Σ_k p_bk log p_bk with p_b = softmax over k of the coverages mean_t m_bk."""
    cov = masks.mean(dim=-1)
    return -(F.softmax(cov, dim=1) * F.log_softmax(cov, dim=1)).sum()


class AdvMask(Objective):
    Config = AdvMaskConfig
    cfg: AdvMaskConfig

    def __init__(self, cfg: AdvMaskConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.masker = build(MASKERS, cfg.masker, ctx)
        n_masks = getattr(self.masker, "n_masks", None)
        if cfg.mask_mode == "per_lead":
            in_leads = getattr(self.masker, "in_leads", None)
            if n_masks != in_leads or getattr(self.masker, "activation", "sigmoid") != "sigmoid":
                raise UserError(f"ssl.mask_mode = 'per_lead' needs ssl.masker.n_masks = its in_leads ({in_leads}) "
                                f"and activation = 'sigmoid', got n_masks = {n_masks}")
        self.fs_hz: float = ctx.need("fs_hz")  # for the R-peak detector of the logged QRS shares
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim,
                                   batch_norm=cfg.projector_bn)
        # Encoder steps taken in this process, for the warm-up. Not persistent, so checkpoints of runs before it
        # still load strictly; a run resumed inside its warm-up therefore warms up again from its resume point.
        self.register_buffer("encoder_steps", torch.zeros((), dtype=torch.long), persistent=False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``masker``: the U-Net; ``encoder``: encoder + projector."""
        return {
            "masker": list(self.masker.parameters()),
            "encoder": [*self.encoder.parameters(), *self.projector.parameters()],
        }

    def masks(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> soft masks (B, M, T) in [0, 1] (for plots; no binarisation, no augmentation)."""
        return self.masker(x)

    def applied_masks(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> every mask as it would reach the encoder, binarised: (B, M, T) in [0, 1]."""
        return binarise(self.masker(x), self.cfg.binarization)

    def apply_mask(self, x: Tensor, masks: Tensor) -> Tensor:
        """x (B, leads, T), soft masks (B, M, T) -> x·(1 − a), a = binarised mask: in ``draw`` mode one mask
        per sample drawn uniformly from the M and broadcast to all leads; in ``per_lead`` mode mask k on lead k."""
        applied = binarise(masks, self.cfg.binarization)
        if self.cfg.mask_mode == "per_lead":
            return x * (1 - applied)
        b, n_masks, _ = masks.shape
        choice = torch.randint(n_masks, (b,), device=masks.device)
        m = applied[torch.arange(b, device=masks.device), choice]  # (B, T)
        return x * (1 - m[:, None, :])

    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Batch x -> (view 1, view 2 before masking), each (B, leads, T)."""
        if self.cfg.positive_pairing in ("cmsc", "own_window"):
            x = two_segments(x, f"adv_mask with positive_pairing = {self.cfg.positive_pairing!r}")
            return self.augment(x[:, 0]), self.augment(x[:, 1])
        return self.augment(x), self.augment(x)

    def contrast(self, v1: Tensor, v2: Tensor, masks: Tensor) -> Tensor:
        """NT-Xent between view 1 and view 2 masked as ``mask_mode`` says (summed over masks for ``each``)."""
        z1 = self.projector(self.encoder(v1))
        if self.cfg.mask_mode != "each":
            return nt_xent(z1, self.projector(self.encoder(self.apply_mask(v2, masks))), self.cfg.temperature)
        applied = binarise(masks, self.cfg.binarization)
        return torch.stack([
            nt_xent(z1, self.projector(self.encoder(v2 * (1 - applied[:, k, None, :]))), self.cfg.temperature)
            for k in range(masks.shape[1])
        ]).sum()

    def mask_logs(self, v2: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """Coverage and QRS share per applied mask, and the QRS share of the signal (see module docstring)."""
        applied = binarise(masks.detach(), self.cfg.binarization)
        lead = min(self.cfg.qrs_lead, v2.shape[1] - 1)
        qrs = torch.from_numpy(qrs_mask(v2.detach().float().cpu().numpy(), self.fs_hz, lead=lead)).to(v2.device)
        cov, share = mask_coverage(applied), qrs_share(applied, qrs)
        logs = {f"coverage_m{k}": cov[k] for k in range(cov.shape[0])}
        logs |= {f"qrs_share_m{k}": share[k] for k in range(share.shape[0])}
        logs["qrs_share_signal"] = qrs.float().mean()
        return logs

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) (or (B, 2, leads, T) for cmsc) -> loss of ``phase``: masker −NT-Xent + α·penalty
        (+ entropy), encoder NT-Xent."""
        if phase == "masker" and self.warming_up():
            # No masker update yet: a zero loss that reaches every masker parameter (Adam leaves them as they are).
            zero = sum(p.sum() for p in self.masker.parameters()) * 0.0
            return zero, {"loss": zero.detach()}
        v1, v2 = self.views(batch["x"])
        if phase == "masker":
            # The masker's loss must not train the encoder: its parameters record no history here, so the
            # gradient reaches only the masker whatever requires_grad flags the caller left on them.
            with frozen((self.encoder, self.projector)):
                masks = self.masker(v2)
                nce = self.contrast(v1, v2, masks)
                on = masks if self.cfg.penalty_on == "soft" else binarise(masks, self.cfg.binarization)
                penalty = self.penalty(on)
                loss = -nce + self.cfg.sparsity_alpha * penalty
                if self.cfg.entropy_alpha > 0:
                    loss = loss + self.cfg.entropy_alpha * entropy_across_masks(masks)
                if self.cfg.authors_update:
                    # The encoder phase's NT-Xent, with its own mask draw, reaches the masker in their code.
                    loss = loss + self.contrast(v1, v2, masks)
            logs = {"loss": loss.detach(), "nce": nce.detach(), "penalty": penalty.detach(),
                    "mask_mean": masks.detach().mean()}
            return loss, logs | self.mask_logs(v2, masks)
        if phase == "encoder":
            warm = self.warming_up()
            if self.training:
                self.encoder_steps += 1
            if warm:  # plain SimCLR on the unmasked views
                z1, z2 = self.projector(self.encoder(v1)), self.projector(self.encoder(v2))
                loss = nt_xent(z1, z2, self.cfg.temperature)
                return loss, {"loss": loss.detach(), "mask_mean": torch.zeros(())}
            with torch.no_grad():
                masks = self.masker(v2)
            loss = self.contrast(v1, v2, masks.detach())
            logs = {"loss": loss.detach(), "mask_mean": masks.mean()}
            if self.cfg.phases == ("encoder",):  # no masker phase logs the masks: log them here
                logs |= {k: v for k, v in self.mask_logs(v2, masks).items() if k.startswith("coverage")}
            return loss, logs
        raise ValueError(f"adv_mask: unknown phase {phase!r}; phases are {self.cfg.phases}")

    # ---- Issue 26 additions: bounded penalty, encoder warm-up --------------------------------------------------

    def penalty(self, masks: Tensor) -> Tensor:
        """Sparsity penalty of masks (B, M, T): the authors' form, or the bounded one (``penalty_form``)."""
        if self.cfg.penalty_form == "bounded":
            return bounded_sparsity_penalty(masks, self.cfg.sparsity_ratio, self.cfg.penalty_eps)
        return sparsity_penalty(masks, self.cfg.sparsity_ratio)

    def warming_up(self) -> bool:
        """True while the encoder has taken fewer than ``masker_warmup_steps`` steps (training only)."""
        return self.training and int(self.encoder_steps) < self.cfg.masker_warmup_steps

    # -------------------------------------------------------------------------------- report figures

    def figures(self, batch: dict[str, Tensor], *, fs_hz: float, leads: list[str],
                title: str = "") -> dict[str, object]:
        """``masks``: the learned masks over ``batch["x"]`` (applied solid, soft dotted, hidden samples
        shaded, R peaks of lead ``qrs_lead`` ticked); see ``Objective.figures``."""
        from ecgforge.data.qrs import r_peaks
        from ecgforge.objectives.mask_figures import mask_figure

        x = batch["x"]
        with torch.no_grad():
            soft, applied = self.masks(x).float().numpy(), self.applied_masks(x).float().numpy()
        lead = min(self.cfg.qrs_lead, x.shape[1] - 1)
        peaks = [r_peaks(x[i, lead].numpy(), fs_hz) for i in range(x.shape[0])]
        return {"masks": mask_figure(x.numpy(), soft, fs_hz, leads,
                                     f"{title}masks: applied (solid; shaded = hidden), soft (dotted)",
                                     applied=applied, per_lead=self.cfg.mask_mode == "per_lead", r_peaks=peaks)}


def bounded_sparsity_penalty(masks: Tensor, ratio: float = 1.0, eps: float = 0.1) -> Tensor:
    """Σ_m mean_b 1/(sin(ratio·π·mean_t m) + eps): the authors' penalty (`losses.sparsity_penalty`, eps 1e-10)
    with eps large enough that a mask at mean 0 or 1 costs at most 1/eps (10 for eps 0.1) instead of 1e10.

    Same minimum (at mean 1/(2·ratio), value 1/(1 + eps) per mask); the gradient at the extremes is
    π·ratio/eps² (314 for eps 0.1), finite, and still pushes the mask back inwards.
    """
    coverage = masks.double().mean(dim=-1)  # (B, M)
    penalty = 1.0 / (torch.sin(ratio * math.pi * coverage).clamp_min(0) + eps)
    return penalty.mean(dim=0).sum().to(masks.dtype)
