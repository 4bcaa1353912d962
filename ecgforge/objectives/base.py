"""The interface every self-supervised (or supervised) objective implements for the training loop.

The runner knows nothing about individual methods: it asks the objective which optimiser groups it has,
which of them to step in which order each batch (``phases``), and calls ``forward(batch, phase)`` for the
loss of each phase. Adversarial masking, for instance, has phases ``("masker", "encoder")``: the masker
ascends the contrastive loss, then the encoder descends it. BYOL updates its EMA target in ``on_step_end``.
"""

from __future__ import annotations

from torch import Tensor, nn


class Objective(nn.Module):
    """Base class: a module that owns the encoder being pretrained and everything the loss needs.

    Batches are dicts of tensors:
        ``x``: ``(B, leads, T)`` windows in mV, canonical lead order; ``(B, S, leads, T)`` when
            ``n_segments = S > 1`` (S windows of the same record, for CMSC-style positives).
        ``lead_mask``: ``(B, leads)`` bool, False where the lead is missing in the record (zeroed in x).
        ``patient``: ``(B,)`` int64 patient index; ``record``: ``(B,)`` int64 record index in the cache.
        ``y``: labels, only for objectives with ``needs_labels = True`` (supervised).
    """

    phases: tuple[str, ...] = ("encoder",)
    n_segments: int = 1
    #: how the dataset cuts the ``n_segments`` windows of a record: ``adjacent`` (back to back, CMSC) or
    #: ``independent`` (each start drawn on its own)
    segment_pairing: str = "adjacent"
    needs_labels: bool = False

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

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
