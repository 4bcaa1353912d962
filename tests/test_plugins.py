"""Components from other packages: a plugin installed beside ecgforge registers an augmentation through the
``ecgforge.components`` entry-point group; ``ecgforge list`` shows it with its package, and a recipe that
uses it validates and trains.

The plugin is CONTRIBUTING.md's: the polarity-flip file as ``ecgforge_flip.py`` and its ``pyproject.toml``.
It is installed as pip would leave it (the module and a ``*.dist-info`` with ``METADATA`` and
``entry_points.txt``, which ``importlib.metadata`` reads), but into a temporary directory that only the
subprocesses of these tests have on their path: the venv is never touched, and no network or build backend
is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecgforge.augment import AUGMENTS
from ecgforge.cli import app
from ecgforge.registry import ComponentError, Table
from tests.components import contributing_example

ROOT = Path(__file__).resolve().parents[1]
SPLITS = '{ train = { fold = [1, 2, 3, 4, 5, 6] }, val = { fold = [7, 8] }, test = { fold = [9, 10] } }'


def install(site: Path, pyproject: str, modules: dict[str, str]) -> None:
    """Write into ``site`` what ``pip install`` of the project ``pyproject`` describes would: its modules and a
    dist-info whose ``METADATA`` and ``entry_points.txt`` come from the ``[project]`` table."""
    project = tomllib.loads(pyproject)["project"]
    name, version = project["name"], project["version"]
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in entries.items()), ""]
    (dist / "entry_points.txt").write_text("\n".join(lines))
    for module, code in modules.items():
        (site / f"{module}.py").write_text(code)


@pytest.fixture
def flip_site(tmp_path: Path) -> Path:
    """A directory holding the installed ecgforge-flip plugin of CONTRIBUTING.md."""
    site = tmp_path / "site"
    site.mkdir()
    install(site, contributing_example("plugin-pyproject"), {"ecgforge_flip": contributing_example("augment")})
    return site


def test_the_plugin_registers_its_kind_with_its_package(flip_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(flip_site))
    table = Table("augment", AUGMENTS.builtin)  # a fresh table reads the entry points anew
    assert table.plugins == {"polarity_flip": ("ecgforge_flip:PolarityFlip", "ecgforge-flip")}
    assert "polarity_flip" in table and set(AUGMENTS.builtin) < set(table)
    assert table.origin("polarity_flip") == "ecgforge-flip" and table.origin("time_out") == "ecgforge"
    assert Table("encoders", {}).plugins == {}  # an entry counts for its own category only


def test_a_plugin_may_not_take_a_builtin_or_another_plugins_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    clash = ('[project]\nname = "{}"\nversion = "1.0"\n'
             '[project.entry-points."ecgforge.components"]\n"augment.{}" = "m:C"\n')
    install(site, clash.format("ecgforge-noise", "gaussian_noise"), {})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ComponentError, match=r"'augment.gaussian_noise' of package 'ecgforge-noise'.*built into"):
        _ = Table("augment", AUGMENTS.builtin).plugins
    install(site, clash.format("ecgforge-a", "wobble"), {})
    install(site, clash.format("ecgforge-b", "wobble"), {})
    both = r"'augment.wobble': registered by both 'ecgforge-[ab]' and 'ecgforge-[ab]'"
    with pytest.raises(ComponentError, match=both):
        _ = Table("augment", {}).plugins


def ecgforge(*args: str, site: Path | None) -> subprocess.CompletedProcess[str]:
    """``python -m ecgforge ARGS`` in a fresh interpreter, with the plugin's directory on its path or not."""
    path = [str(site)] if site is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)]), "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ecgforge", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_list_shows_the_plugin_kind_and_its_package(flip_site: Path) -> None:
    res = ecgforge("list", site=flip_site)
    assert res.returncode == 0, res.stderr
    (row,) = [line for line in res.stdout.splitlines() if "ecgforge-flip" in line]
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["augment", "ecgforge-flip", "polarity_flip"]
    builtin = [line for line in res.stdout.splitlines() if "gaussian_noise" in line]
    assert builtin and "polarity_flip" not in builtin[0] and "ecgforge-flip" not in builtin[0]
    res = ecgforge("list", "--json", site=flip_site)
    assert "polarity_flip" in json.loads(res.stdout)["augment"]
    res = ecgforge("list", "--json", site=None)  # not installed: not there
    assert "polarity_flip" not in json.loads(res.stdout)["augment"]


def test_a_recipe_using_the_plugin_augmentation_validates_and_trains(flip_site: Path, tmp_path: Path) -> None:
    from tests.test_encoder_files import make_cache

    cache = make_cache(tmp_path, "syn")
    recipe = tmp_path / "flip.toml"
    recipe.write_text(f"""
schema_version = 1
name = "flip"
[data]
cache = {json.dumps(str(cache))}
window_s = 2.5
splits = {SPLITS}
[model.encoder]
kind = "resnet1d"
width = 8
[ssl]
kind = "simclr"
projector_hidden = 32
projector_dim = 16
augment = [{{ kind = "polarity_flip", p = 0.5 }}, {{ kind = "gaussian_noise", std_mv = 0.05 }}]
[train]
max_steps = 2
batch_size = 8
log_every_steps = 1
""")
    # Without the plugin (this process: the venv has none) the kind is unknown, in one line.
    res = CliRunner().invoke(app, ["validate", str(recipe)])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "polarity_flip" in lines[0], res.output
    assert str(recipe) in lines[0] and "augment[0]" in lines[0]

    run = tmp_path / "run"
    res = ecgforge("run", str(recipe), "--out", str(run), site=flip_site)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    steps = [json.loads(line) for line in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2]
    assert (run / "encoder.safetensors").is_file()

    # The recipe validates (as the run did) and builds the plugin's class, which flips whole samples.
    code = f"""
import torch
from ecgforge.app.recipes import load_run_recipe
from ecgforge.augment import AUGMENTS
from ecgforge.registry import BuildContext, build_all
recipe = load_run_recipe({json.dumps(str(recipe))})
augment = build_all(AUGMENTS, recipe.ssl.augment[:1], BuildContext(fs_hz=100.0, window=250, n_leads=12))
assert type(augment[0]).__module__ == "ecgforge_flip", type(augment[0])
x = torch.randn(512, 12, 250)
y = augment(x)
flipped = (y == -x).all(dim=(1, 2))
assert (flipped | (y == x).all(dim=(1, 2))).all() and 0.3 < flipped.float().mean() < 0.7
print(AUGMENTS.origin("polarity_flip"))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(flip_site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ecgforge-flip", res.stderr[-3000:]
