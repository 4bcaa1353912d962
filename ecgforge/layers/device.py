"""Where single-process work (evaluation, embedding) computes."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
