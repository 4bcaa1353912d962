"""README.md and CONTRIBUTING.md are executable truth (issue 28): every shell block runs, in order, as written, in
a fresh copy of the project (``tests/readme_blocks.fresh_copy``), each in ``bash`` with ``set -euo pipefail``,
inside the virtual environment the first block creates; a block that fails fails the test with its output.

Marker ``readme`` (deselected by default; ``nox -s smoke`` runs it: tens of minutes, a fresh install and four
quickstart runs). What the test supplies, and the only things it does differently:

- placeholders a block names are made before it runs: ``recipe.toml`` (the quickstart shrunk to a few steps),
  ``ENCODER`` (the quickstart's run directory) and ``ENCODER_500HZ`` (a two-step run on a 500 Hz synthetic
  cache), in the fresh directory;
- ``python -m pytest`` collects the suite instead of running it (``PYTEST_ADDOPTS=--collect-only``): the suite
  itself is what CI runs, and this test is part of it;
- ``ecgforge push`` talks to the loopback stand-in of the Hub (``HF_ENDPOINT``, ``HF_TOKEN``, as a user sets them);
- a benchmark suite (``ecgforge run recipes/suites/...``) gets ``suite_smoke_overrides`` appended (one seed, a
  few epochs), and runs only where ``../shared/data`` holds the real records, as do blocks using their caches;
- a block that launches on several GPUs runs only on a machine that has them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomli_w

from tests.readme_blocks import (
    DOCS,
    ROOT,
    SHELL,
    Block,
    blocks,
    clean_env,
    fresh_copy,
    shell_blocks,
    suite_smoke_overrides,
)

SHARED = ROOT.parent / "shared"
LOG_TAIL = 4000


def test_every_fenced_block_says_its_language() -> None:
    """An untagged block could be a shell block this test never runs: every fence names its language."""
    untagged = [b.where for p in DOCS for b in blocks(p) if not b.lang]
    assert not untagged, f"fenced blocks without a language (```bash, ```text, ...): {untagged}"
    assert any(b.lang in SHELL for b in shell_blocks()), "no shell block found: has the fence syntax changed?"


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def shrunk_recipe() -> dict:
    """``recipe.toml``: the quickstart at width 8 for 4 steps, a short probe at 100 % of the labels."""
    import tomllib

    r = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())
    r["name"] = "recipe"  # runs/recipe: not the quickstart's run directory, which later blocks use
    r["model"]["encoder"]["width"] = 8
    r["train"].update(max_steps=4, epochs=1, checkpoint_every_steps=2)
    r["eval"][0].update(epochs=3, bootstrap=20, label_fractions=[1.0])
    return r


def make_placeholders(block: Block, fresh: Path, env: dict[str, str]) -> None:
    if "recipe.toml" in block.text and not (fresh / "recipe.toml").exists():
        (fresh / "recipe.toml").write_text(tomli_w.dumps(shrunk_recipe()))
    if re.search(r"\bENCODER\b", block.text) and not (fresh / "ENCODER").exists():
        (fresh / "ENCODER").symlink_to("runs/quickstart", target_is_directory=True)
    if "ENCODER_500HZ" in block.text and not (fresh / "ENCODER_500HZ").exists():
        r = shrunk_recipe()
        r["name"], r["eval"] = "encoder-500hz", []
        r["data"].update(cache="cache/synthetic-500hz.h5", build="synthetic-500hz.toml", window_s=2.5)
        r["train"].update(max_steps=2, batch_size=8)
        (fresh / "encoder-500hz.toml").write_text(tomli_w.dumps(r))
        (fresh / "synthetic-500hz.toml").write_text(tomli_w.dumps({
            "name": "synthetic-500hz", "out": "cache/synthetic-500hz.h5",
            "source": {"kind": "synthetic", "path": "cache/synthetic-wfdb-small", "n_patients": 20,
                       "records_per_patient": 1, "duration_s": 5.0, "seed": 0},
            "signal": {"fs_hz": 500}}))
        run_bash(". .venv/bin/activate && ecgforge run encoder-500hz.toml --out ENCODER_500HZ", fresh, env,
                 "making ENCODER_500HZ")


def adapt(block: Block) -> str | None:
    """The script the test runs for ``block`` (None: not on this machine, with the reason printed)."""
    text = block.text
    gpus = re.search(r"--multi_gpu.*--num_processes (\d+)", text)
    if gpus and gpu_count() < int(gpus.group(1)):
        print(f"{block.where}: not run: launches on {gpus.group(1)} GPUs, this machine has {gpu_count()}")
        return None
    if ("recipes/suites/" in text or "cache/ptbxl" in text or "cache/cinc" in text) and not (SHARED / "data").is_dir():
        print(f"{block.where}: not run: needs the real records in {SHARED / 'data'}")
        return None
    lines = []
    for line in text.splitlines():
        m = re.match(r"\s*ecgforge run (recipes/suites/\S+\.toml)(.*?)(\s+#.*)?$", line)
        if m:
            extra = suite_smoke_overrides(ROOT / m.group(1), stand_in="model.init" not in line)
            line = f"ecgforge run {m.group(1)}{m.group(2)} {shlex.join(extra)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_bash(script: str, cwd: Path, env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=3 * 3600)
    (cwd / "readme-test.log").open("a").write(f"\n===== {what} (exit {proc.returncode})\n{script}\n"
                                              f"----- stdout\n{proc.stdout}\n----- stderr\n{proc.stderr}\n")
    assert proc.returncode == 0, (f"{what} failed (exit {proc.returncode}):\n{script}\n--- stderr (tail)\n"
                                  f"{proc.stderr[-LOG_TAIL:]}\n--- stdout (tail)\n{proc.stdout[-LOG_TAIL:]}")
    return proc


@pytest.mark.readme
def test_every_shell_block_runs_as_written(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.hub_standin import HubStandIn

    root = tmp_path_factory.mktemp("readme")
    fresh = fresh_copy(root / "ecgforge")
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED, target_is_directory=True)  # ../shared/data, as beside the project
    print(f"fresh copy: {fresh}")
    with HubStandIn() as hub:
        for block in shell_blocks():
            script = adapt(block)
            if script is None:
                continue
            env = clean_env()
            if "python -m pytest" in script:
                env["PYTEST_ADDOPTS"] = "--collect-only -q"
            if "ecgforge push" in script:
                env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_standin_write_token", HF_HUB_CACHE=str(root / "hf"),
                           HF_HUB_DISABLE_PROGRESS_BARS="1")
            make_placeholders(block, fresh, env)
            activate = ". .venv/bin/activate\n" if (fresh / ".venv" / "bin" / "activate").is_file() else ""
            run_bash(activate + script, fresh, env, block.where)
