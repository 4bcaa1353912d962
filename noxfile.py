"""nox sessions: `nox` runs the tests; `nox -s lint`, `nox -s smoke`, `nox -s bench` on request.

Each session installs torch first with `pip install torch==2.13.0` (see README: a plain `torch` requirement
would pull the newest CUDA build), then the project with its dev extras.
"""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
TORCH = "torch==2.13.0"


def install(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """The unit, integration and reliability tests (what CI runs)."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "ecgforge", "tests", "benchmarks", "noxfile.py")


@nox.session
def smoke(session: nox.Session) -> None:
    """Every shell block of README.md and CONTRIBUTING.md as written, in a fresh copy: a fresh install, the
    quickstart, the PTB-XL and CinC suites on ../shared/data (shrunk by --set), report, export, embed, push
    (tests/test_readme.py); then the slow tests; then the soak tests."""
    install(session)
    session.run("pytest", "-m", "readme", "tests/test_readme.py", *session.posargs)
    session.run("pytest", "-m", "slow", *session.posargs)
    # 20 SIGKILLs of a training run and of a cache build, each resumed/rerun to a bit-identical end (RELIABILITY.md);
    # the quickstart beside a CPU-bound process and SIGKILLed mid-pretraining, each with the same results.
    session.run("pytest", "-m", "soak", "tests/reliability/test_soak.py", "tests/app/test_quickstart_results.py",
                *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed benchmarks, each beside its baseline (see BENCHMARKS.md)."""
    install(session)
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
