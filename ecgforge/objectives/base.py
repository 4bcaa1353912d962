"""The interface every self-supervised (or supervised) objective implements for the training loop.

The runner knows nothing about individual methods: it asks the objective which optimiser groups it has,
which of them to step in which order each batch (``phases``), and calls ``forward(batch, phase)`` for the
loss of each phase. Adversarial masking, for instance, has phases ``("masker", "encoder")``: the masker
ascends the contrastive loss, then the encoder descends it. BYOL updates its EMA target in ``on_step_end``.

What the runner must know before it builds an objective (its phases, whether batches carry labels, how many
windows of a record an item holds) is metadata of the objective's *config*, `ObjectiveConfig`: class
variables, or properties where a field decides it (adversarial masking's ``authors_update`` swaps its phases,
BYOL's ``views = "own_window"`` asks for two crops). The trainer and the recipe read them from the validated
config (``recipe.ssl.phases``); the objective reads them from ``self.cfg``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AUGMENTS, AugmentConfig
from ecgforge.registry import BuildContext, build_all


class ObjectiveConfig(BaseModel, extra="forbid", frozen=True):
    """Base of every objective's config (subclasses add ``kind`` and their fields).

    A subclass overrides a class variable with its own value (``n_segments: ClassVar[int] = 2``) or with a
    property where a field decides it.
    """

    #: optimiser groups stepped each batch, in this order; each is a key of ``Objective.param_groups()``
    phases: ClassVar[tuple[str, ...]] = ("encoder",)
    #: batches carry ``y``, the targets of the config's ``task`` (the trainer then sets ``BuildContext.n_classes``)
    needs_labels: ClassVar[bool] = False
    #: windows of one record per batch item: ``x (B, n_segments, leads, T)`` when > 1
    n_segments: ClassVar[int] = 1
    #: how the dataset cuts the ``n_segments`` windows of a record: ``adjacent`` (back to back, CMSC) or
    #: ``independent`` (each start drawn on its own)
    segment_pairing: ClassVar[Literal["adjacent", "independent"]] = "adjacent"


class AugmentedConfig(BaseModel, extra="forbid", frozen=True):
    """Mixin of a config whose objective augments its input: ``Objective`` builds the list as ``augment``
    (an ``nn.Sequential``) and the objective applies it to each view it draws (each segment, each window)."""

    augment: list[AugmentConfig] = Field(
        default_factory=list, description="augmentations applied, in order, independently to each view")


class WindowViews:
    """Mixin of a config whose field ``views`` says where two views come from: ``same_window``, one crop of the
    record (one segment per item); ``own_window``, a crop each, drawn independently (they may overlap)."""

    # No annotation of ``views`` here: pydantic would take it for a field and put it first in the config.

    @property
    def n_segments(self) -> int:
        return 2 if self.views == "own_window" else 1

    @property
    def segment_pairing(self) -> Literal["adjacent", "independent"]:
        return "independent" if self.views == "own_window" else "adjacent"


class Objective(nn.Module):
    """Base class: a module that owns the encoder being pretrained and everything the loss needs.

    Built as ``cls(cfg, ctx)`` (``registry.build``); the encoder comes from ``ctx.encoder``.

    Batches are dicts of tensors:
        ``x``: ``(B, leads, T)`` windows in mV, canonical lead order; ``(B, S, leads, T)`` when
            ``cfg.n_segments = S > 1`` (S windows of the same record, for CMSC-style positives).
        ``lead_mask``: ``(B, leads)`` bool, False where the lead is missing in the record (zeroed in x).
        ``patient``: ``(B,)`` int64 patient index; ``record``: ``(B,)`` int64 record index in the cache.
        ``y``: labels, only for objectives whose config has ``needs_labels = True`` (supervised).

    ``augment``: the config's augmentations, built here when the config is an ``AugmentedConfig``.
    """

    augment: nn.Sequential

    def __init__(self, cfg: ObjectiveConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder: nn.Module = ctx.need("encoder")
        if isinstance(cfg, AugmentedConfig):
            self.augment = build_all(AUGMENTS, cfg.augment, ctx)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser group name -> parameters. Default: one group ``encoder`` with every parameter."""
        return {"encoder": [p for p in self.parameters() if p.requires_grad]}

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss to *minimise* for ``phase`` and a dict of scalar tensors to log."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step of the last phase (e.g. BYOL's EMA update)."""

    def figures(self, batch: dict[str, Tensor], *, fs_hz: float, leads: list[str],
                title: str = "") -> dict[str, object]:
        """Figures of what the objective learned, for reports: name -> ``matplotlib.figure.Figure``, drawn over
        ``batch`` (``x``: ``(B, leads, T)`` mV test windows at ``fs_hz``, lead names ``leads``) and saved as
        ``<name>_<run>.png``; ``title`` (the run and checkpoint) starts each figure's title. Default: none;
        the report rebuilds no objective that keeps this default."""
        return {}
