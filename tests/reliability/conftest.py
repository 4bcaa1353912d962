"""Reliability suite: shared fixtures and the end-of-session summary of what was tried.

The training helpers (a tiny WFDB-built cache, run recipes that train in seconds, the CLI runner) come from
``tests/train``; the uninterrupted reference run is built once per session here, for every test that compares
an interrupted-then-resumed run with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.ledger import LEDGER, summary_lines
from tests.train.conftest import recipe_dict, run_cli, tiny_cache, write_recipe  # noqa: F401  (tiny_cache: fixture)


@pytest.fixture(scope="session")
def reference(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    """(recipe, run directory) of the tiny run of ``tests/train`` (12 steps, checkpoints at 3, 6, 9, 12, a linear
    probe), run once without interruption: what every interrupted and resumed run must end as."""
    d = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(d / "r.toml", recipe_dict(tiny_cache, eval_=True))
    proc = run_cli("run", str(recipe), "--out", str(d / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, d / "run"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print inputs tried per category, outcomes, tracebacks and lost results (see RELIABILITY.md)."""
    if not LEDGER:
        return
    terminalreporter.section("reliability summary")
    for line in summary_lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def records_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """270 real PTB-XL records (records100/00000), linked, not copied, into a scratch folder."""
    d = tmp_path_factory.mktemp("kill-build") / "wfdb"
    d.mkdir()
    for p in (shared_data / "ptb-xl" / "records100" / "00000").iterdir():
        (d / p.name).symlink_to(p)
    return d
