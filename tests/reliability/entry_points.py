"""``python -m tests.reliability.entry_points FAULT STEP ecgforge-args...``: the real CLI with one fault injected.

Faults land inside the runner's checkpoint write of step STEP, after Accelerate has saved the model, optimisers
and RNG states into the scratch folder and before ``progress.json`` completes it (the last file, then the rename):
- ``kill-at-checkpoint``: the process SIGKILLs itself there (a scheduler's kill at the worst moment);
- ``enospc-at-checkpoint``: writing ``progress.json`` fails with ``OSError(ENOSPC)`` (the disk filled up).
Everything else is the real program.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any

import ecgforge.train.loop as runner
from ecgforge.cli import main

FAULT, STEP = sys.argv[1], int(sys.argv[2])
_real = runner.atomic_write_json


def faulty_write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    if path.name == "progress.json" and path.parent.name == f".step_{STEP}.tmp":
        if FAULT == "kill-at-checkpoint":
            os.kill(os.getpid(), signal.SIGKILL)
        if FAULT == "enospc-at-checkpoint":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    _real(path, obj)


runner.atomic_write_json = faulty_write_json
sys.argv = ["ecgforge", *sys.argv[3:]]

if __name__ == "__main__":
    main()
