"""Empty or wrong inputs: a cache build that finds no record to store exits 2 with one line saying where the
source looked, and writes nothing (no empty cache with exit 0)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecgforge.cli import app
from tests.reliability.ledger import record


@pytest.mark.parametrize("case", ["empty folder", "headers without signal files"])
@pytest.mark.parametrize("workers", [1, 2])
def test_build_with_no_record_exits_2_naming_where_it_looked(tmp_path: Path, case: str, workers: int) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    if case != "empty folder":  # listed, every one unreadable: the .dat files are absent
        for i in range(3):
            (folder / f"r{i}.hea").write_text(f"r{i} 1 500 5000\nr{i}.dat 16 200 16 0 0 0 0 I\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(f'name = "e"\nout = "{tmp_path / "e.h5"}"\n[source]\nkind = "wfdb_folder"\npath = "{folder}"\n'
                    "[signal]\nfs_hz = 100\n")
    res = CliRunner().invoke(app, ["cache", "build", str(spec), "--workers", str(workers)])
    lines = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    clean = res.exit_code == 2 and len(lines) == 1 and str(folder) in lines[0] and not (tmp_path / "e.h5").exists()
    record("inputs", f"cache build, {case}: " + ("exit 2, one line naming the folder" if clean
           else f"exit {res.exit_code}"), traceback=res.exception is not None and not isinstance(res.exception,
                                                                                                 SystemExit))
    assert clean, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "spec.toml"]  # no scratch file either


RELATIVE_CASES = ["cache build: source.path", "cache build: source.labels_csv", "run: data.cache", "run: data.build",
                  "run: model.init", "run: the recipe file", "cache verify: the cache file"]


@pytest.mark.parametrize("case", RELATIVE_CASES)
def test_a_missing_relative_path_says_what_it_was_resolved_against(tiny_cache: Path, tmp_path: Path, case: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipes' relative paths resolve against the working directory (not the recipe's folder): a user who
    meant the other gets one line naming the directory and the full path looked for."""
    import tomli_w

    from tests.train.conftest import recipe_dict

    work = tmp_path / "work"
    (work / "recipes").mkdir(parents=True)
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    data.mkdir()
    missing = {"cache build: source.path": "../datasets/ptb-xl", "cache build: source.labels_csv": "labels/x.csv",
               "run: data.cache": "caches/x.h5", "run: data.build": "recipes/caches/x.toml",
               "run: model.init": "runs/pretrained", "run: the recipe file": "recipes/nope.toml",
               "cache verify: the cache file": "caches/x.h5"}[case]
    cache_recipe = {"name": "c", "out": str(tmp_path / "c.h5"), "source": {"kind": "wfdb_folder", "path": str(data)},
                    "signal": {"fs_hz": 100}}
    run_recipe = recipe_dict(tiny_cache)
    if case == "cache build: source.path":
        cache_recipe["source"]["path"] = missing
    elif case == "cache build: source.labels_csv":
        cache_recipe["source"]["labels_csv"] = missing
    elif case == "run: data.cache":
        run_recipe["data"]["cache"] = missing
    elif case == "run: data.build":
        run_recipe["data"]["cache"] = str(tmp_path / "absent.h5")
        run_recipe["data"]["build"] = missing
    elif case == "run: model.init":
        run_recipe["model"]["init"] = missing
    (work / "recipes" / "c.toml").write_text(tomli_w.dumps(cache_recipe))
    (work / "recipes" / "r.toml").write_text(tomli_w.dumps(run_recipe))
    args = {"cache build": ["cache", "build", "recipes/c.toml"], "run": ["run", "recipes/r.toml", "--out", "run"],
            "cache verify": ["cache", "verify", missing]}[case.split(":")[0]]
    if case == "run: the recipe file":
        args = ["run", missing]
    res = CliRunner().invoke(app, args)
    lines = [x for x in res.stderr.splitlines() if x.strip() and "━" not in x]  # progress-bar frames aside
    want = f"resolved against the working directory {work}: {work / missing}"
    clean = res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and want in lines[0]
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    record("inputs", "missing relative path: one line naming what it was resolved against" if clean else
           f"missing relative path ({case}): exit {res.exit_code}", traceback=escaped)
    assert clean, res.output
