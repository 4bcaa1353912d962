"""Weights drawn from a seed for a given layout (key -> shape), for fidelity fixtures whose reference class has no
size knob (MERL's ResNet-18: 11 M parameters, too large to store). The fixture script and the test both call
`seeded_state`; the fixture records the sha256 of the result, so a torch whose generator draws differently
fails the test by name instead of comparing other weights."""

from __future__ import annotations

import hashlib
import math

import torch


def seeded_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Key -> tensor, drawn in ``shapes``' order from one CPU generator: weights N(0, 1/fan_in), biases and
    BatchNorm shifts / running means N(0, 0.1^2), BatchNorm scales 1 + N(0, 0.1^2), running variances
    U(0.5, 1.5), ``num_batches_tracked`` 0."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        name = key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif name == "running_var":
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            out[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif name == "weight":  # a 1-d weight is a norm's scale
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()
