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
    """The quickstart end to end, the PTB-XL and CinC suites on ../shared/data (shrunk by --set), then every paper
    recipe for a few steps on CPU, then the soak tests."""
    install(session)
    session.run("ecgforge", "run", "recipes/quickstart.toml", "--overwrite")
    session.run("ecgforge", "run", "recipes/suites/ptbxl.toml", "--overwrite", *suite_smoke_overrides("recipes/suites/ptbxl.toml"))
    session.run("ecgforge", "run", "recipes/suites/cinc2021.toml", "--overwrite", *suite_smoke_overrides("recipes/suites/cinc2021.toml"))
    session.run("pytest", "-m", "slow", *session.posargs)
    # 20 SIGKILLs of a training run and of a cache build, each resumed/rerun to a bit-identical end (RELIABILITY.md).
    session.run("pytest", "-m", "soak", "tests/reliability/test_soak.py", *session.posargs)


def suite_smoke_overrides(path: str) -> list[str]:
    """``--set`` options that shrink a benchmark suite to minutes on a CPU, every table kept: one seed, a
    width-8 stand-in encoder, 3 probe epochs, fine-tuning at 10 % of the labels for 4 steps, 20 bootstrap
    resamples."""
    import tomllib

    with open(path, "rb") as f:
        tables = tomllib.load(f)["eval"]
    out = ["--set", "model.encoder.width=8"]
    for i, t in enumerate(tables):
        out += ["--set", f"eval.{i}.seeds=[0]", "--set", f"eval.{i}.bootstrap=20"]
        if t["kind"] == "finetune":
            out += ["--set", f"eval.{i}.steps=4", "--set", f"eval.{i}.head_epochs=0",
                    "--set", f"eval.{i}.val_every_steps=4", "--set", f"eval.{i}.label_fractions=[0.1]"]
        else:
            out += ["--set", f"eval.{i}.epochs=3"]
    return out


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed benchmarks, each beside its baseline (see BENCHMARKS.md)."""
    install(session)
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
