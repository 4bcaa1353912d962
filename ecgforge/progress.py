"""How long work reports progress without knowing how it is shown: the training loop, the cache build and the
evaluations call a `Reporter`; the command line passes one that draws rich progress bars (``ui.console``),
a library user or a test gets the silent base class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

#: ``update(completed, total=None, status="")``: how far a task is (``total`` may become known late).
Update = Callable[..., None]


class Reporter:
    """Silent by default; subclasses render. ``note`` is one line for the user (a warning, what happens next)."""

    def note(self, text: str) -> None:
        """One line the user should read (plain text)."""

    @contextlib.contextmanager
    def task(self, label: str, total: int | None = None, completed: int = 0) -> Iterator[Update]:
        """A task with a count: yields ``update(completed, total=None, status="")``."""
        yield _ignore


def _ignore(*args: object, **kwargs: object) -> None:
    return None
