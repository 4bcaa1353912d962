"""Recipe schema: defaults, one-line errors naming the field, --set overrides validated after merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgforge.app.recipes import load_run_recipe as load_recipe
from ecgforge.config_files import RecipeError, apply_overrides, parse_override
from ecgforge.data.cache_spec import load_cache_recipe

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def mutated(tmp_path: Path, old: str, new: str) -> Path:
    text = QUICKSTART.read_text()
    assert old in text, old
    return write(tmp_path, text.replace(old, new, 1))


def error_lines(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, overrides)
    return str(exc.value).splitlines()


def test_quickstart_validates_with_defaults() -> None:
    r = load_recipe(QUICKSTART)
    assert r.model.encoder.kind == "resnet1d" and r.model.encoder.depth == 18
    assert r.train.precision == "no" and r.train.grad_accum_steps == 1  # defaults filled in
    assert r.eval[0].inits == ["pretrained", "random"]


def test_misspelled_key_names_file_and_field(tmp_path: Path) -> None:
    lines = error_lines(mutated(tmp_path, "temperature = 0.1", "temprature = 0.1"))
    assert len(lines) == 1
    assert lines[0].startswith(str(tmp_path / "r.toml")) and "ssl.simclr.temprature" in lines[0]
    assert "unknown key" in lines[0]


def test_unknown_kind_lists_expected(tmp_path: Path) -> None:
    (line,) = error_lines(mutated(tmp_path, 'kind = "resnet1d"', 'kind = "resnet99"'))
    assert "model.encoder" in line and "resnet1d" in line and "resnet99" in line


def test_wrong_type(tmp_path: Path) -> None:
    (line,) = error_lines(mutated(tmp_path, "batch_size = 64", 'batch_size = "many"'))
    assert "train.batch_size" in line and "'many'" in line


def test_negative_learning_rate(tmp_path: Path) -> None:
    (line,) = error_lines(mutated(tmp_path, "lr = 1e-3", "lr = -1e-3"))
    assert "train.optim.encoder.lr" in line and "greater than 0" in line


def test_several_errors_one_line_each(tmp_path: Path) -> None:
    p = mutated(tmp_path, "batch_size = 64", "batch_size = -1\nepochz = 3")
    lines = error_lines(p)
    assert len(lines) == 2 and all(str(p) in line for line in lines)


def test_toml_syntax_error(tmp_path: Path) -> None:
    (line,) = error_lines(write(tmp_path, 'name = "x"\n[data\ncache = 1'))
    assert "TOML syntax error" in line and "line 2" in line


def test_missing_file(tmp_path: Path) -> None:
    (line,) = error_lines(tmp_path / "nope.toml")
    assert "no such file" in line


def test_newer_schema_version_refused(tmp_path: Path) -> None:
    (line,) = error_lines(mutated(tmp_path, "schema_version = 1", "schema_version = 7"))
    assert "schema_version" in line and "7" in line


def test_overrides_parse_as_toml_values() -> None:
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("train.optim.encoder.lr=3e-4") == (["train", "optim", "encoder", "lr"], 3e-4)
    assert parse_override("eval.0.seeds=[0, 1]") == (["eval", 0, "seeds"], [0, 1])
    assert parse_override("name=my-run") == (["name"], "my-run")
    assert parse_override('name="quoted"') == (["name"], "quoted")


def test_overrides_are_validated_after_merging() -> None:
    r = load_recipe(QUICKSTART, ["train.epochs=2", "eval.0.seeds=[3, 4]", "train.precision=bf16"])
    assert r.train.epochs == 2 and r.eval[0].seeds == [3, 4] and r.train.precision == "bf16"
    with pytest.raises(RecipeError, match=r"train\.precision"):
        load_recipe(QUICKSTART, ["train.precision=fp8"])
    with pytest.raises(RecipeError, match=r"train\.epochz.*unknown key"):
        load_recipe(QUICKSTART, ["train.epochz=2"])


def test_override_of_missing_list_item() -> None:
    with pytest.raises(RecipeError, match=r"eval\[5\] does not exist"):
        apply_overrides({"eval": []}, ["eval.5.task=x"])


def test_objective_needs_its_optimiser_groups(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("[train.optim.encoder]", "[train.optim.masker]")
    (line,) = error_lines(write(tmp_path, text))
    assert "train.optim.encoder" in line


def test_every_shipped_recipe_validates() -> None:
    recipes = sorted((ROOT / "recipes").rglob("*.toml"))
    assert recipes
    for path in recipes:
        if "source" in path.read_text() and "[data]" not in path.read_text():
            load_cache_recipe(path)
        else:
            load_recipe(path)


def test_cache_recipe_hash_ignores_location(tmp_path: Path) -> None:
    base = (ROOT / "recipes" / "caches" / "synthetic.toml").read_text()
    a = load_cache_recipe(write(tmp_path, base, "a.toml"))
    b = load_cache_recipe(write(tmp_path, base.replace("cache/synthetic-wfdb", "/elsewhere"), "b.toml"))
    c = load_cache_recipe(write(tmp_path, base.replace("fs_hz = 100", "fs_hz = 250"), "c.toml"))
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_written_tables_put_kind_first() -> None:
    """resolved.toml is read by people: ``[ssl]`` opens with ``kind``, not with the ``augment`` list that the
    objective's config inherits from a mixin (pydantic puts inherited fields first)."""
    from ecgforge.app.recipes import load_run_recipe
    from ecgforge.config_files import to_toml_dict

    d = to_toml_dict(load_run_recipe(Path(__file__).resolve().parents[1] / "recipes/ptbxl_cpu/simclr.toml"))
    assert list(d["ssl"])[0] == "kind" and "augment" in d["ssl"]
    assert all(list(a)[0] == "kind" for a in d["ssl"]["augment"])
