"""A run's ``[data].cache`` and ``[data].build`` (issue 28): an existing cache is never replaced without being asked.
Built from another spec, the run stops with one line naming both specs and the flag that rebuilds (exit 2), the
file untouched; with ``--rebuild-cache`` it is rebuilt; a valid cache is used where the raw data is absent."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from ecgforge.app import run as run_mod
from ecgforge.app.recipes import load_run_recipe
from ecgforge.app.run import Run
from ecgforge.cli import app
from ecgforge.data.cache import Cache, CacheError
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import load_cache_recipe

ROOT = Path(__file__).resolve().parents[2]


def cache_recipe(root: Path, name: str, n_patients: int) -> Path:
    """A synthetic cache recipe writing ``root/cache.h5`` (every recipe here names the same file)."""
    path = root / f"{name}.toml"
    path.write_text(tomli_w.dumps({
        "name": name, "out": str(root / "cache.h5"),
        "source": {"kind": "synthetic", "path": str(root / f"wfdb-{name}"), "n_patients": n_patients,
                   "records_per_patient": 2, "duration_s": 6.0, "seed": 0},
        "signal": {"fs_hz": 100.0}}))
    return path


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path, str]:
    """A cache built from ``a.toml`` (20 patients), its recipe and the file's SHA-256."""
    spec = cache_recipe(tmp_path, "a", 20)
    build_cache(load_cache_recipe(spec), workers=1)
    cache = tmp_path / "cache.h5"
    return cache, spec, hashlib.sha256(cache.read_bytes()).hexdigest()


def run_recipe(tmp_path: Path, cache: Path, build: Path) -> Path:
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    text = text.replace('cache = "cache/synthetic-100hz.h5"', f'cache = "{cache}"')
    text = text.replace('build = "recipes/caches/synthetic.toml"', f'build = "{build}"')
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_a_cache_built_from_another_spec_is_refused_in_one_line_and_left_as_it_was(
        built: tuple[Path, Path, str], tmp_path: Path) -> None:
    cache, spec_a, sha = built
    spec_b = cache_recipe(tmp_path, "b", 30)
    recipe = run_recipe(tmp_path, cache, spec_b)
    res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    line = lines[0]
    a, b = load_cache_recipe(spec_a).spec_hash(), load_cache_recipe(spec_b).spec_hash()
    assert f"spec 'a' ({a})" in line and f"spec 'b' ({b})" in line and str(spec_b) in line
    assert "source.n_patients = 20 in the cache, 30 in" in line and "--rebuild-cache" in line
    assert str(recipe) in line  # the recipe the line is about
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == sha
    assert not (tmp_path / "wfdb-b").exists()  # nothing was generated for the other spec either


def test_rebuild_cache_replaces_it(built: tuple[Path, Path, str], tmp_path: Path) -> None:
    cache, _, _ = built
    spec_b = cache_recipe(tmp_path, "b", 30)
    recipe = load_run_recipe(run_recipe(tmp_path, cache, spec_b))
    with pytest.raises(CacheError, match="--rebuild-cache"):
        Run(recipe, tmp_path / "run").ensure_cache()
    opened = Run(recipe, tmp_path / "run", rebuild_cache=True).ensure_cache()
    assert opened.spec_hash == load_cache_recipe(spec_b).spec_hash() and len(opened) == 60


def test_a_valid_cache_is_used_where_its_raw_data_is_absent(built: tuple[Path, Path, str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache copied to a machine without the records it was built from: the run opens it as it is."""
    cache, spec_a, sha = built
    shutil.rmtree(tmp_path / "wfdb-a")

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(run_mod, "build_cache_reported", no_build)
    opened = Run(load_run_recipe(run_recipe(tmp_path, cache, spec_a)), tmp_path / "run").ensure_cache()
    assert isinstance(opened, Cache) and len(opened) == 40
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == sha
