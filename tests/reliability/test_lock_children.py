"""The run lock is not held by forked children: a child that outlives its SIGKILLed parent (a DataLoader worker,
a reader) must not make the rerun refuse with "another ecgforge process is running"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ecgforge.rundir import RunLock
from tests.reliability.ledger import record

CHILD = """
import os, sys, time
from ecgforge.rundir import RunLock
lock = RunLock(sys.argv[1]); lock.acquire()
pid = os.fork()
if pid == 0:  # a worker that lives on after the parent dies
    # It says its pid itself: the fork hooks have run by then (a pid printed by the parent could reach the test
    # before a loaded machine has scheduled the child, whose descriptor would then still hold the lock).
    print(os.getpid(), flush=True)
    time.sleep(30); os._exit(0)
time.sleep(30)
"""


def test_rerun_after_sigkill_of_the_main_process_is_not_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    child = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert Path(f"/proc/{child}").exists()  # the forked child is still alive
        lock = RunLock(run_dir)
        t0 = time.monotonic()
        lock.acquire()  # raises RunDirError if the child held the lock
        lock.release()
        record("concurrency", "rerun after SIGKILL of the main process, its forked child alive: lock taken over",
               lost=0)
        assert time.monotonic() - t0 < 1
    finally:
        os.kill(child, signal.SIGKILL)
        proc.stdout.close()
