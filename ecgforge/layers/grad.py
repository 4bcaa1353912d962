"""Gradient tools shared by encoders and objectives."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class GradMultiply(torch.autograd.Function):
    """Identity forward; gradient scaled by ``scale`` backward (fairseq's ``GradMultiply``): wav2vec 2.0 trains
    its convolutional feature extractor at a fraction (``feature_grad_mult``) of the transformer's gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None
