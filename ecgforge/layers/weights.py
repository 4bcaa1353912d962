"""Fingerprints of module weights."""

from __future__ import annotations

import hashlib

from torch import nn


def state_dict_hash(module: nn.Module) -> str:
    """A short hash of every tensor (name, bytes): equal hashes mean equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
