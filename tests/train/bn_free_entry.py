"""``python -m tests.train.bn_free_entry run ...``: the ecgforge CLI with a projection head without BatchNorm.

For the data-parallel equivalence test only: torch's SyncBatchNorm has no CPU kernel, so batch statistics over
B samples per process cannot equal those over N*B in one process on CPU. Everything else is the real CLI.
"""

from torch import nn

import ecgforge.objectives.simclr as simclr
from ecgforge.cli import main


def projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``: Linear-ReLU-Linear, per sample."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


simclr.projector = projector

if __name__ == "__main__":
    main()
