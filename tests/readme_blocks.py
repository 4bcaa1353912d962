"""The fenced blocks of the project's Markdown files, a fresh copy of the project to run them in, and the options
that shrink a benchmark suite to minutes on a CPU. Used by tests/test_readme.py and benchmarks/readme_timings.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
SHELL = frozenset({"bash", "sh", "shell", "console"})
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """A fenced block: its file, the line of its opening fence (1-based), its language tag and its text."""

    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    return [Block(path, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]


def shell_blocks(paths: list[Path] = DOCS) -> list[Block]:
    return [b for p in paths for b in blocks(p) if b.lang in SHELL]


def fresh_copy(dest: Path) -> Path:
    """``dest`` holding the project as a fresh clone would (git's tracked files, and untracked files git does not
    ignore: work not yet committed), without caches, runs or virtual environments."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the work tree is not there
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: without this test's virtual environment or PYTHONPATH, so that the
    commands find what the blocks themselves install."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv))
    return {**env, "COLUMNS": "200", **extra}


def suite_smoke_overrides(path: str | Path, stand_in: bool = True) -> list[str]:
    """``--set`` options that shrink a benchmark suite to minutes on a CPU, every table kept: one seed, 3 probe
    epochs, fine-tuning at 10 % of the labels for 4 steps, 20 bootstrap resamples, and (``stand_in``: no
    ``model.init`` given) a width-8 stand-in encoder."""
    with open(path, "rb") as f:
        tables = tomllib.load(f)["eval"]
    out = ["--set", "model.encoder.width=8"] if stand_in else []
    for i, t in enumerate(tables):
        out += ["--set", f"eval.{i}.seeds=[0]", "--set", f"eval.{i}.bootstrap=20"]
        if t["kind"] == "finetune":
            out += ["--set", f"eval.{i}.steps=4", "--set", f"eval.{i}.head_epochs=0",
                    "--set", f"eval.{i}.val_every_steps=4", "--set", f"eval.{i}.label_fractions=[0.1]"]
        else:
            out += ["--set", f"eval.{i}.epochs=3"]
    return out
