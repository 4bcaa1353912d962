"""The command line: exit codes, one-line errors, `list --json`, and a short run's directory."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecgforge.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_list_json_is_one_object_of_kinds() -> None:
    res = runner.invoke(app, ["list", "--json"])
    assert res.exit_code == 0
    table = json.loads(res.stdout)
    assert {"encoders", "maskers", "augment", "ssl", "eval", "sources"} <= set(table)
    assert "resnet1d" in table["encoders"] and "simclr" in table["ssl"] and "linear_probe" in table["eval"]
    assert {"swav", "moco"} <= set(table["ssl"])  # issue 13: the Strodthoff paper's SwAV and MoCo v3


def test_validate_accepts_every_shipped_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Recipes name their cache recipes (data.build) relative to the working directory; a fresh one with the
    # project's recipes and no caches, so the result does not depend on which caches a checkout has built
    # (on the 3-fold PTB-XL sample the full-dataset recipes' fold-10 test splits are empty, which the
    # pre-flight refuses once the cache exists: tests/data/test_real_caches.py checks that case).
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    monkeypatch.chdir(tmp_path)
    recipes = [str(p) for p in sorted((ROOT / "recipes").rglob("*.toml"))]
    res = runner.invoke(app, ["validate", *recipes])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("ok ") == len(recipes)


def test_validate_checks_the_cache_recipe_a_run_would_build(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "recipes" / "quickstart.toml").read_text().replace(
        'build = "recipes/caches/synthetic.toml"', f'build = "{tmp_path / "nowhere.toml"}"', 1))
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data.build" in lines[0] and "nowhere.toml" in lines[0], res.stderr


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("temperature = 0.1", "temprature = 0.1", "ssl.simclr.temprature"),
        ('kind = "resnet1d"', 'kind = "resnet99"', "model.encoder"),
        ("batch_size = 64", 'batch_size = "64x"', "train.batch_size"),
        ("lr = 1e-3", "lr = -0.1", "train.optim.encoder.lr"),
    ],
)
def test_validate_rejects_with_one_line_naming_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "recipes" / "quickstart.toml").read_text().replace(old, new, 1))
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0] and str(bad) in lines[0], res.stderr
    assert "Traceback" not in res.output


def test_run_with_bad_override_is_a_user_error() -> None:
    res = runner.invoke(app, ["run", str(ROOT / "recipes" / "quickstart.toml"), "--set", "train.epochs=-1"])
    assert res.exit_code == 2 and "train.epochs" in res.stderr and "Traceback" not in res.output


def tiny_recipe(tmp_path: Path) -> Path:
    cache_recipe = tmp_path / "cache.toml"
    cache_recipe.write_text(f"""
name = "tiny"
out = "{tmp_path / 'tiny.h5'}"
[source]
kind = "synthetic"
path = "{tmp_path / 'wfdb'}"
n_patients = 20
records_per_patient = 2
duration_s = 6
[signal]
fs_hz = 100
""")
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    text = text.replace('cache = "cache/synthetic-100hz.h5"', f'cache = "{tmp_path / "tiny.h5"}"')
    text = text.replace('build = "recipes/caches/synthetic.toml"', f'build = "{cache_recipe}"')
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(text)
    return recipe


def test_short_run_writes_a_valid_run_directory(tmp_path: Path) -> None:
    recipe, out = tiny_recipe(tmp_path), tmp_path / "run"
    args = ["run", str(recipe), "--out", str(out), "--set", "model.encoder.width=8", "--set", "train.max_steps=4",
            "--set", "train.batch_size=8", "--set", "data.window_s=2.5", "--set", "eval.0.epochs=5",
            "--set", "eval.0.bootstrap=20", "--set", "train.checkpoint_every_steps=2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("recipe.toml", "resolved.toml", "env.json", "encoder.safetensors", "encoder.json", "results.json",
                 "metrics/train.jsonl", "plots/loss.png"):
        assert (out / name).is_file(), name
    assert (out / "recipe.toml").read_text() == recipe.read_text()
    # resolved.toml says the same as the recipe with its overrides, and reruns as it is
    from ecgforge.app.recipes import load_run_recipe as load_recipe

    overrides = [a for a in args[4:] if a != "--set"]
    assert load_recipe(out / "resolved.toml") == load_recipe(recipe, overrides)
    results = json.loads((out / "results.json").read_text())
    rows = results["eval"]
    table = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())["eval"][0]
    fractions, seeds = table["label_fractions"], table["seeds"]
    assert {(r["init"], r["label_fraction"], r["seed"]) for r in rows} == {
        (i, f, s) for i in ("pretrained", "random") for f in fractions for s in seeds}
    for r in rows:
        assert r["kind"] == "linear_probe" and r["task"] == "rhythm" and r["split"] == "test"
        assert set(r["metrics"]) == {"accuracy", "macro_f1", "macro_auroc"}
    env = json.loads((out / "env.json").read_text())
    assert env["world_size"] == 1 and env["precision"] == "no" and env["cache_spec_hash"]
    steps = [json.loads(line)["step"] for line in (out / "metrics" / "train.jsonl").read_text().splitlines()]
    assert steps and steps[-1] == 4
    assert list((out / "checkpoints").iterdir())
    # An existing run is never overwritten silently.
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert not (out / ".lock").exists()


def test_locked_run_directory_is_refused(tmp_path: Path) -> None:
    import os

    from ecgforge.rundir import RunLock

    out = tmp_path / "run"
    with RunLock(out):  # held through a descriptor of its own: the command's lock conflicts with it
        res = runner.invoke(app, ["run", str(tiny_recipe(tmp_path)), "--out", str(out)])
    assert res.exit_code == 2 and f"another ecgforge process (pid {os.getpid()})" in res.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["list"], ["eval"], ["report"], ["embed"], ["export"],
                                     ["push"], ["cache"], ["cache", "build"], ["cache", "info"], ["cache", "verify"]])
def test_help_shows_no_type_after_a_flag(command: list[str]) -> None:
    """A flag takes no value: `--help`, `--resume`, `--json` are shown bare, not as `--help <bool>` (issue 28)."""
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "--help" in res.stdout and "<bool>" not in res.stdout
    if command == ["run"]:
        assert "--resume" in res.stdout and "KEY=VALUE" in res.stdout
