"""A recipe with ``[ssl] kind = "vicreg"``: validated through ``ecgforge.recipe``, built and trained by the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgforge.app.run import Run
from ecgforge.objectives import OBJECTIVES
from ecgforge.objectives.vicreg import VICRegConfig
from ecgforge.recipe import Recipe
from tests.train.conftest import recipe_dict


def test_a_vicreg_recipe_validates_and_trains_two_steps(tiny_cache: Path, tmp_path: Path) -> None:
    r = recipe_dict(tiny_cache, max_steps=2)
    r["ssl"] = {"kind": "vicreg", "projector_hidden": 32, "projector_dim": 16, "cov_coeff": 2.0,
                "augment": [{"kind": "gaussian_noise", "std_mv": 0.05}]}
    recipe = Recipe.model_validate(r)
    assert isinstance(recipe.ssl, VICRegConfig) and recipe.ssl.cov_coeff == 2.0 and recipe.ssl.phases == ("encoder",)
    assert OBJECTIVES.origin("vicreg") == "ecgforge"
    Run(recipe, tmp_path / "run").run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        expected = 25 * row["invariance"] + 25 * row["variance"] + 2.0 * row["covariance"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5)
