"""Launches that do not do what the user asked: ``accelerate launch --cpu --num_processes 2`` starts one process
(Accelerate's simple launcher sets MASTER_ADDR/MASTER_PORT, not WORLD_SIZE); ecgforge says so in one line."""

from __future__ import annotations

import pytest

from ecgforge.train.loop import launch_mismatch
from tests.reliability.ledger import record


@pytest.mark.parametrize(("env", "n", "warned"), [
    ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, 1, True),  # accelerate launch --cpu --num_processes 2
    ({}, 1, False),  # a plain `ecgforge run`
    ({"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"}, 2, False),  # torchrun --nproc_per_node 2
])
def test_launch_asking_for_several_processes_but_running_one(monkeypatch: pytest.MonkeyPatch, env: dict, n: int,
                                                             warned: bool) -> None:
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    msg = launch_mismatch(n)
    record("launch", "several processes asked, one started: warned" if msg else "launch as asked: no warning")
    assert (msg is not None) == warned
    if warned:
        assert "\n" not in msg and "torchrun --nproc_per_node N -m ecgforge run" in msg
