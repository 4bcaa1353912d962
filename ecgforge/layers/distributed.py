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
        # Every rank's loss depends on this rank's embeddings: SUM what each sends back, keep this rank's slice.
        # Not the mean: DDP then averages parameter gradients over the N ranks, and (1/N) * sum_s dL_s/dz_r is
        # d/dz_r of the N*B-batch loss L = (1/N) sum_s L_s (see gather_with_grad).
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank, world_size = world()
        return grad.chunk(world_size, dim=0)[rank]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x (B, ...)`` from every process along dim 0, with gradients flowing back to each.

    Used for contrastive negatives so that N processes with batch B optimise the same loss as one process
    with batch N*B. Identity in a single-process run.

    Gradient scaling: rank r's loss L_r averages over its own anchors, so the one-process loss on the
    combined batch is L = (1/N) sum_r L_r. Rank r's parameter gradient is J_r^T g_r (J_r: the Jacobian of its
    embeddings z_r, g_r: the gradient its backward gives z_r) and DDP averages these over ranks; since
    dL/dtheta = sum_r J_r^T dL/dz_r, equality needs g_r = N dL/dz_r = sum_s dL_s/dz_r, i.e. the backward sums
    over ranks (all-reduce SUM). Checked against a one-process run in ``tests/train/test_distributed.py``.

    Args:
        x: ``(B, ...)`` this rank's tensor; every rank must pass the same shape.

    Returns:
        ``(N*B, ...)``, rank 0's rows first.
    """
    _, world_size = world()
    return _GatherWithGrad.apply(x) if world_size > 1 else x
