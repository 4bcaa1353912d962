"""Reliability suite: shared fixtures and the end-of-session summary of what was tried.

The training fixtures (a tiny WFDB-built cache, an uninterrupted reference run) come from ``tests/train``; they are imported here so the two suites share one definition.
"""

from __future__ import annotations

import pytest

from tests.reliability.ledger import LEDGER, summary_lines
from tests.train.conftest import tiny_cache  # noqa: F401  (fixtures re-exported for this folder)
from tests.train.test_resume import reference  # noqa: F401


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print inputs tried per category, outcomes, tracebacks and lost results (see RELIABILITY.md)."""
    if not LEDGER:
        return
    terminalreporter.section("reliability summary")
    for line in summary_lines():
        terminalreporter.write_line(line)
