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
