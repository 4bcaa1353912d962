"""The figure of learned masks over ECGs, which masking objectives return from ``Objective.figures``.

Object-oriented matplotlib (``matplotlib.figure.Figure``, no pyplot): drawing needs no display and leaves
no figure open in a global registry; the caller saves or closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def mask_figure(x: np.ndarray, masks: np.ndarray, fs_hz: float, leads: Sequence[str], title: str = "",
                show_leads: tuple[str, ...] = ("II", "V1"), applied: np.ndarray | None = None,
                per_lead: bool = False, r_peaks: Sequence[np.ndarray] | None = None) -> Figure:
    """Learned masks over ECGs: one panel per ECG and lead, the signal in black. On the right axis, each
    mask's applied (binarised) value as a solid line with the samples it hides (applied > 0.5) shaded, and
    its soft value dotted; R peaks (if given) marked with ticks under the trace.

    Args:
        x: ``(B, leads, T)`` mV; masks: ``(B, M, T)`` soft masks in [0, 1] (Bo et al.: one mask for all leads).
        leads: the names of x's leads, in order; ``show_leads`` those drawn (the first lead if none is there).
        applied: ``(B, M, T)`` the masks as they reach the encoder (binarised); None = the soft masks.
        per_lead: mask k applies to lead k only (the per-lead mode): each panel shows its lead's mask.
        r_peaks: per ECG, the sample indices of its R peaks.
    """
    import matplotlib
    from matplotlib.figure import Figure

    leads = list(leads)
    applied = masks if applied is None else applied
    shown = [lead for lead in show_leads if lead in leads] or [leads[0]]
    b, m = masks.shape[0], masks.shape[1]
    t = np.arange(x.shape[-1]) / fs_hz
    fig = Figure(figsize=(5.2 * len(shown), 1.9 * b))
    axes = fig.subplots(b, len(shown), squeeze=False, sharex=True)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(b):
        for j, lead in enumerate(shown):
            ax = axes[i, j]
            sig = x[i, leads.index(lead)]
            ax.plot(t, sig, color="black", lw=0.8)
            lo, hi = float(sig.min()), float(sig.max())
            pad = 0.1 * (hi - lo + 1e-6)
            ks = [leads.index(lead)] if per_lead else list(range(m))
            for k in ks:
                ax.fill_between(t, lo - pad, hi + pad, where=applied[i, k] > 0.5, color=colours[k % len(colours)],
                                alpha=0.25, step="mid", lw=0)
            if r_peaks is not None and len(r_peaks[i]):
                ax.plot(t[r_peaks[i]], np.full(len(r_peaks[i]), lo - pad), "^", color="crimson", ms=4,
                        label="R peak")
            ax2 = ax.twinx()
            for k in ks:
                ax2.step(t, applied[i, k], where="mid", color=colours[k % len(colours)], lw=1.0,
                         label=f"mask {k} applied")
                ax2.plot(t, masks[i, k], color=colours[k % len(colours)], lw=0.8, ls=":", label=f"mask {k} soft")
            ax2.set_ylim(-0.05, 1.05)
            ax2.set_ylabel("mask", fontsize=7)
            ax.set_ylabel(f"ECG {i} {lead} (mV)", fontsize=7)
            if i == 0 and j == len(shown) - 1:
                ax2.legend(frameon=False, fontsize=6, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.subplots_adjust(wspace=0.4, hspace=0.3)  # room for each panel's right-hand mask axis
    fig.suptitle(title or "learned masks: applied (binarised, solid; shaded = hidden) and soft (dotted)", fontsize=10)
    return fig
