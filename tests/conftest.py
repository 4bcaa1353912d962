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


@pytest.fixture(scope="module")
def one_torch_thread() -> object:
    """torch on one thread for a module of tiny convolutions: with several threads, synchronising them costs more
    than the work (and much more on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real PTB-XL and CinC records); skips the test where it is absent."""
    if not (SHARED_DATA / "ptb-xl").is_dir():
        pytest.skip(f"real ECG data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA
