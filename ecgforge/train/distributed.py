"""Collectives that objectives need without knowing about Accelerate."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Each rank's loss depends on every rank's embeddings: sum the gradients, keep this rank's slice.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank, world_size = world()
        return grad.chunk(world_size, dim=0)[rank]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x (B, ...)`` from every process along dim 0, with gradients flowing back to each.

    Used for contrastive negatives so that N processes with batch B optimise the same loss as one process
    with batch N*B. Identity in a single-process run.
    """
    _, world_size = world()
    return _GatherWithGrad.apply(x) if world_size > 1 else x
