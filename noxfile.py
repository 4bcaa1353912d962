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
    """The quickstart end to end, then every paper recipe for a few steps on CPU."""
    install(session)
    session.run("ecgforge", "run", "recipes/quickstart.toml", "--overwrite")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed benchmarks, each beside its baseline (see BENCHMARKS.md)."""
    install(session)
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
