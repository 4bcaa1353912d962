"""The collapse monitor (``embed/std``, ``embed/erank`` in metrics/train.jsonl) and the worse-than-random guard
(one line, results.json ``"warnings"``), tripped by a deliberately collapsing objective defined here (not in the
registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import ecgforge.train.loop as loop
from ecgforge.app.guard import worse_than_random
from ecgforge.app.run import Run
from ecgforge.evaluation.rows import ResultRow
from ecgforge.objectives import OBJECTIVES
from ecgforge.objectives.base import Objective
from ecgforge.recipe import Recipe
from ecgforge.registry import BuildContext
from ecgforge.train.collapse import embedding_stats
from tests.train.conftest import recipe_dict


class Collapse(Objective):
    """Total collapse by design: the loss is half the squared norm of the encoder's parameters (its embeddings
    enter with weight 0, so the monitor sees the encoder called), and one SGD step of lr 1 sets every parameter to
    zero; the encoder then maps every input to the zero vector."""

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.encoder(batch["x"])
        loss = 0.5 * sum(p.pow(2).sum() for p in self.encoder.parameters()) + 0.0 * z.sum()
        return loss, {"loss": loss.detach()}


def test_embedding_stats_of_spread_low_rank_and_collapsed_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    spread = embedding_stats(torch.randn(256, 16, generator=g))
    assert spread["embed/std"] == pytest.approx(1.0, abs=0.05) and spread["embed/erank"] > 13
    line = torch.randn(256, 1, generator=g) * torch.randn(1, 16, generator=g)  # normalised: ±v, rank 1
    assert embedding_stats(line)["embed/erank"] == pytest.approx(1.0, abs=1e-3)
    same = embedding_stats(torch.ones(256, 16) + 1e-9 * torch.randn(256, 16, generator=g))
    assert same == {"embed/std": pytest.approx(0.0, abs=1e-6), "embed/erank": 0.0}


def _row(init: str, fraction: float, seed: int, auroc: float) -> ResultRow:
    return ResultRow(kind="linear_probe", task="t", task_type="multilabel", init=init, label_fraction=fraction,
                     seed=seed, split="test", metrics={"macro_auroc": auroc}, primary="macro_auroc")


def test_guard_fires_only_when_worse_at_every_fraction() -> None:
    worse = [_row("pretrained", 0.1, s, 0.60 + s / 100) for s in (0, 1)] + [_row("pretrained", 1.0, 0, 0.70)]
    random = [_row("random", 0.1, s, 0.70) for s in (0, 1)] + [_row("random", 1.0, 0, 0.80)]
    line = worse_than_random(worse + random, "eval [0] linear_probe t")
    assert line is not None and "\n" not in line
    assert "0.1: 0.605 vs 0.700" in line and "1: 0.700 vs 0.800" in line
    better_at_one = worse[:2] + [_row("pretrained", 1.0, 0, 0.81)]
    assert worse_than_random(better_at_one + random, "x") is None
    assert worse_than_random(worse, "x") is None  # no random-init reference: nothing to compare with
    mae = [ResultRow(kind="linear_probe", task="age", task_type="regression", init=i, label_fraction=1.0, seed=0,
                     split="test", metrics={"mae": v}, primary="mae") for i, v in (("pretrained", 9.0), ("random", 8.0))]
    assert worse_than_random(mae, "x") is not None  # lower is better for MAE


@pytest.mark.slow
def test_collapsing_objective_trips_the_monitor_and_the_guard(tiny_cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = loop.build

    def build(table: Any, cfg: Any, ctx: BuildContext | None = None) -> Any:
        return Collapse(cfg, ctx) if table is OBJECTIVES else real_build(table, cfg, ctx)

    monkeypatch.setattr(loop, "build", build)
    r = recipe_dict(tiny_cache, max_steps=4, epochs=10)
    r["train"]["optim"]["encoder"] = {"kind": "sgd", "lr": 1.0, "momentum": 0.0}
    r["train"]["schedule"] = {"kind": "constant"}
    r["eval"] = [{"kind": "linear_probe", "task": "label", "epochs": 20, "bootstrap": 0,
                  "label_fractions": [0.5, 1.0], "seeds": [0]}]
    out = tmp_path / "run"
    results = Run(Recipe.model_validate(r), out).run()
    rows = [json.loads(x) for x in (out / "metrics" / "train.jsonl").read_text().splitlines()]
    assert all("embed/std" in row and "embed/erank" in row for row in rows)
    assert rows[0]["embed/std"] > 0.05 and rows[0]["embed/erank"] > 1.5  # step 1: before the first update
    assert rows[-1]["embed/std"] == 0.0 and rows[-1]["embed/erank"] == 0.0
    assert len(results["warnings"]) == 1 and "worse than a random one" in results["warnings"][0]
    assert json.loads((out / "results.json").read_text())["warnings"] == results["warnings"]


def test_guard_covers_every_table_not_only_the_first(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two [[eval]] tables, the first better than random and the second worse: the run warns for the second."""
    import ecgforge.app.run as app_run
    from ecgforge.data.cache import Cache
    from ecgforge.progress import Reporter
    from ecgforge.rundir import RunPlan

    better = [_row("pretrained", f, 0, 0.80) for f in (0.1, 1.0)] + [_row("random", f, 0, 0.70) for f in (0.1, 1.0)]
    worse = [_row("pretrained", f, 0, 0.52) for f in (0.1, 1.0)] + [_row("random", f, 0, 0.63) for f in (0.1, 1.0)]

    class Fixed:
        def __init__(self, rows: list[ResultRow]) -> None:
            self.rows = rows

        def run(self, ctx: Any) -> list[ResultRow]:
            return self.rows

    tables = iter([better, worse])
    real_build = app_run.build
    monkeypatch.setattr(app_run, "build", lambda table, cfg, ctx=None: Fixed(next(tables))
                        if table is app_run.PROTOCOLS else real_build(table, cfg, ctx))
    r = recipe_dict(tiny_cache)
    r["eval"] = [{"kind": "linear_probe", "task": "label", "bootstrap": 0},
                 {"kind": "knn", "task": "label", "bootstrap": 0}]
    recipe = Recipe.model_validate(r)
    notes: list[str] = []
    reporter = Reporter()
    monkeypatch.setattr(reporter, "note", notes.append)
    results = app_run.evaluate(RunPlan.build(recipe, Cache(tiny_cache)), torch.nn.Identity(), torch.device("cpu"),
                               reporter)
    assert results.warnings == [w for w in results.warnings if "eval [1] knn label" in w] and len(results.warnings) == 1
    assert "0.1: 0.520 vs 0.630" in results.warnings[0]
    assert any("warning:" in n and "eval [1]" in n for n in notes) and not any("eval [0] linear" in n and
                                                                              "warning" in n for n in notes)
