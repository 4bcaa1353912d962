"""Shared fixtures: seeded RNGs and the real-data folder beside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real PTB-XL and CinC records); skips the test where it is absent."""
    if not (SHARED_DATA / "ptb-xl").is_dir():
        pytest.skip(f"real ECG data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA
