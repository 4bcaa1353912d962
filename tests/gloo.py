"""Run a function in N CPU processes joined by a gloo process group, for data-parallel equivalence tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def spawn_gloo(fn: Callable[..., None], world: int, store_dir: Path, *args: object) -> None:
    """Call ``fn(rank, *args)`` in ``world`` spawned processes; raises if any of them fails.

    ``fn`` must be a module-level function and write what the test checks to disk (its return value is lost).
    """
    mp.start_processes(_entry, args=(fn, world, str(store_dir), args), nprocs=world, start_method="spawn")


def _entry(rank: int, fn: Callable[..., None], world: int, store_dir: str, args: tuple) -> None:
    # A file store: no TCP store server on rank 0 to outlive or race (a free port picked by the test could be
    # taken by another process before rank 0 binds it).
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/gloo_store", rank=rank, world_size=world)
    fn(rank, *args)
    dist.barrier()
    # Gloo's teardown (destroy_process_group, or the destructors at interpreter exit) can abort a rank with
    # "terminate called without an active exception" on a loaded machine, after its results are written; CI saw
    # it even with the barrier above. Nothing is left to run, so the process leaves without destructors.
    os._exit(0)
