"""Receptive fields of convolution stacks, which encoders report as ``receptive_field`` (input samples)."""

from __future__ import annotations


def chain_receptive_field(layers: list[tuple[int, int]]) -> int:
    """Receptive field in input samples of a chain of (kernel, stride) layers: 1 + sum (k-1) * jump."""
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return rf
