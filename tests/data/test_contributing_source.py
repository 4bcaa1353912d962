"""CONTRIBUTING.md's dataset source example is a working source: its file, its registry line and its recipe,
taken from the document as written, build a cache."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import create_model

from ecgforge import registry
from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.sources import SOURCES
from ecgforge.data.sources.base import Source
from ecgforge.registry import Table

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> str:
    """The fenced code block right after ``<!-- example: NAME -->`` in CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {re.escape(name)} -->\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert m is not None, f"CONTRIBUTING.md has no block marked <!-- example: {name} -->"
    return m.group(1)


@pytest.fixture
def example_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type]]:
    """The example's module imported under the name its registry line gives, and that line added to the
    sources table (undone after the test)."""
    line = example("source registry").strip().rstrip(",")
    ((kind, target),) = ast.literal_eval("{" + line + "}").items()
    module_name, _, class_name = target.partition(":")
    module = types.ModuleType(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)
    exec(compile(example("source"), "CONTRIBUTING.md", "exec"), module.__dict__)
    table = Table(SOURCES.category, {**SOURCES.builtin, kind: target})
    monkeypatch.setitem(SOURCES.__dict__, "entries", table.entries)  # cached property: restored afterwards
    registry._resolve.cache_clear()  # "module:Class" -> class is cached: this test's module, not a previous one's
    yield kind, getattr(module, class_name)
    registry._resolve.cache_clear()


def write_npz(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Three good records (one of 8 leads, one in a sub-folder) and three bad ones; the good ones' (12, T) mV."""
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    twelve = np.array(CANONICAL_LEADS)
    a = rng.normal(0, 0.5, (12, 1500)).round(3)
    b = rng.normal(0, 0.5, (12, 1500)).round(3)
    c = rng.normal(0, 0.5, (8, 1500)).round(3)
    np.savez(root / "a.npz", signal=a, fs_hz=500.0, leads=twelve, patient="p1", labels=np.array(["AF"]))
    np.savez(root / "sub" / "b.npz", signal=b, fs_hz=500.0, leads=twelve, patient="p1",
             labels=np.array(["NORM", "AF"]))
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.savez(root / "c.npz", signal=c, fs_hz=500.0, leads=np.array(eight), patient="p2")
    np.savez(root / "d_no_rate.npz", signal=a, leads=twelve)
    (root / "e_damaged.npz").write_bytes(b"PK\x03\x04 not a whole zip file")
    np.savez(root / "f_short.npz", signal=a[:, :100], fs_hz=500.0, leads=twelve)
    c12 = np.zeros((12, 1500))
    for j, lead in enumerate(eight):
        c12[CANONICAL_LEADS.index(lead)] = c[j]
    return {"a": a, "sub/b": b, "c": c12}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_contributing_source_example_builds_a_cache(example_source: tuple[str, type], tmp_path: Path,
                                                        workers: int) -> None:
    kind, cls = example_source
    assert issubclass(cls, Source) and SOURCES[kind] is cls
    expected = write_npz(tmp_path / "npz", np.random.default_rng(0))
    raw = tomllib.loads(example("source recipe"))
    assert raw["source"]["kind"] == kind
    raw["source"]["path"], raw["out"] = str(tmp_path / "npz"), str(tmp_path / "c.h5")
    # The recipe schema's source union was made before the example existed: a schema with the table's union.
    union = Table(SOURCES.category, dict(SOURCES.entries)).union
    recipe_cls = create_model("ExampleRecipe", __base__=CacheRecipe, source=(union, ...))
    summary = build_cache(recipe_cls.model_validate(raw), workers=workers)
    cache = Cache(summary.path)
    assert list(cache.record_id) == ["a", "c", "sub/b"]  # sorted by relative path
    skipped = dict(cache.skipped)
    assert skipped["d_no_rate"] == "no fs_hz in d_no_rate.npz"
    assert skipped["e_damaged"].startswith("BadZipFile: ")  # np.load's exception, as a one-line reason
    assert skipped["f_short"].startswith("too short: 0.20 s")
    assert cache.label_names == {"label": ["AF", "NORM"]}
    assert cache.labels["label"].tolist() == [[1, 0], [0, 0], [1, 1]]
    assert list(cache.patient_id) == ["p1", "p2", "p1"] and cache.fold[0] == cache.fold[2]
    assert cache.present[1].sum() == 8  # c: the 4 leads the file lacks are stored absent (zeros)
    for i, rid in enumerate(cache.record_id):
        np.testing.assert_allclose(cache.read(i), expected[rid], atol=cache.scale_mv / 2 + 1e-6, rtol=0)
