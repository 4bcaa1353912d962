"""Stopping long work cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM: a flag, checked where stopping is safe.

A KeyboardInterrupt raised wherever the main thread happens to be can land inside a library's own code (a
multiprocessing pool's at-fork hook or lock, a half-written checkpoint) where it is swallowed ("Exception
ignored") or leaves things unable to shut down. Long loops therefore check ``StopOnSignal.is_set()`` at their
own safe points: the training loop at a step boundary, the cache build between the reader pool's results.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """A stop asked for by ``signum`` (SIGINT: Ctrl-C, SIGTERM: a scheduler); the CLI exits with 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopOnSignal:
    """Within the block, ``signals`` (default SIGINT and SIGTERM) set a flag instead of raising; a second
    signal raises KeyboardInterrupt at once. Only in the main thread (signal handlers can be set nowhere else).

    Processes forked inside the block inherit the handlers (a DataLoader worker then outlives a scheduler's
    SIGTERM to the process group until the loop shuts it down); a pool worker that must not, resets its own."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self._signals = signals
        self._flag = False
        self.signum: int | None = None  # the first signal that came
        self._previous: dict[int, Any] = {}

    def is_set(self) -> bool:
        return self._flag

    def _handle(self, signum: int, frame: Any) -> None:
        if self._flag:
            raise Interrupted(signum)
        self._flag, self.signum = True, signum

    def interrupted(self) -> Interrupted:
        """The exception to raise at a safe point once ``is_set()``: it names the signal that came."""
        return Interrupted(self.signum or signal.SIGINT)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def results(self, it: Any, n: int, poll_s: float = 0.2) -> Iterator[Any]:
        """The ``n`` results of a pool's ``imap``/``imap_unordered`` iterator ``it``, raising KeyboardInterrupt
        between them once a signal came (waiting in short slices, so the flag is seen within ``poll_s``)."""
        import multiprocessing as mp

        for _ in range(n):
            while True:
                if self._flag:
                    raise self.interrupted()
                try:
                    result = it.next(timeout=poll_s)
                except mp.TimeoutError:
                    continue
                yield result
                break

