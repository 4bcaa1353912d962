"""The frozen-feature protocol base, the configs' pre-flight facts, and CONTRIBUTING.md's protocol example
(nearest centroid), run as the file it shows and from a recipe."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import tomli_w
import torch
from pydantic import ValidationError

from ecgforge.data.cache import Cache
from ecgforge.errors import UserError
from ecgforge.evaluation import PROTOCOLS
from ecgforge.evaluation.centroid import centroid_cosines
from ecgforge.evaluation.frozen import FeatureView, FrozenFeatureProtocol, Scored
from ecgforge.evaluation.paired import add_versus
from ecgforge.evaluation.protocol import ALL_TASK_TYPES, EvalProtocol, FrozenFeatureConfig, TaskSpec
from ecgforge.evaluation.tasks import load_task
from ecgforge.registry import BuildContext, build
from tests.evaluation.test_protocols import SPLITS, Reader, _protocol, cache, context, tiny_encoder  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def example_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- example: <marker> -->`` in CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found, f"CONTRIBUTING.md has no code block marked <!-- example: {marker} -->"
    return found.group(1)


def reader_context(cache: Cache):  # noqa: ANN201, F811
    return context(cache, lambda init, seed: Reader(250) if init == "pretrained" else tiny_encoder(seed))


def test_the_contributing_example_is_the_centroid_file_and_runs_on_its_own(cache: Cache) -> None:  # noqa: F811
    code = example_block("protocol")
    assert code == (ROOT / "ecgforge/evaluation/centroid.py").read_text(encoding="utf-8")
    module = types.ModuleType("newcomer_centroid")  # the block alone, not the installed module
    sys.modules[module.__name__] = module  # pydantic resolves the config's annotations through it
    try:
        exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)
        cfg = module.NearestCentroidConfig(task="label", label_fractions=[0.5, 1.0], seeds=[0, 1], bootstrap=20)
        protocol = module.NearestCentroid(cfg, BuildContext())
        rows = add_versus(protocol.run(reader_context(cache)), cfg.bootstrap)
    finally:
        del sys.modules[module.__name__]
    assert [(r.init, r.seed, r.label_fraction) for r in rows] == [
        (i, s, f) for i in ("pretrained", "random") for s in (0, 1) for f in (0.5, 1.0)]
    assert all(r.kind == "centroid" and r.task_type == "multiclass" and r.n_test_records == 12 for r in rows)
    reader = [r for r in rows if r.init == "pretrained"]
    assert all(r.metrics["macro_auroc"] > 0.9 and r.metrics["accuracy"] > 0.8 for r in reader)  # reads the rhythm
    assert all(r.ci95["macro_auroc"][0] <= r.metrics["macro_auroc"] <= r.ci95["macro_auroc"][1] for r in reader)
    assert all("random" in r.versus for r in reader)
    assert [r.n_train_records for r in rows[:2]] == [12, 24]  # half of the 8 training patients, then all


def test_centroid_from_a_recipe(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    from ecgforge.app.run import evaluate
    from ecgforge.progress import Reporter
    from ecgforge.recipe import load_recipe
    from ecgforge.rundir import RunPlan

    raw = {"schema_version": 1, "name": "centroid", "data": {"cache": str(cache.path), "window_s": 2.5,
                                                               "splits": SPLITS},
           "model": {"encoder": {"kind": "resnet1d", "depth": 18, "width": 4}},
           "eval": [{"kind": "centroid", "task": "label", "task_type": "multilabel", "inits": ["pretrained"],
                     "bootstrap": 0}]}
    path = tmp_path / "centroid.toml"
    path.write_text(tomli_w.dumps(raw))
    recipe = load_recipe(path)
    rows = evaluate(RunPlan.build(recipe, cache), Reader(250), torch.device("cpu"), Reporter()).rows
    assert [(r.kind, r.task_type, r.init) for r in rows] == [("centroid", "multilabel", "pretrained")]
    assert rows[0].metrics["macro_auroc"] > 0.9 and rows[0].metrics["macro_f1"] > 0.8  # 0.5: nearer the positives

    raw["eval"][0]["task_type"] = "regression"  # a classification-only protocol refuses it in the recipe
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(UserError, match=r"centroid.toml: eval\[0\]\.centroid\.task_type: this protocol scores "
                                        r"multiclass / multilabel tasks only \(got 'regression'\)$"):
        load_recipe(path)


def test_centroid_cosines_by_hand() -> None:
    z = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    members = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])  # class 0: row 0; class 1: rows 1, 2; class 2: none
    got = centroid_cosines(z, members, np.array([[1.0, 1.0], [5.0, 0.0]]))
    np.testing.assert_allclose(got, [[2 ** -0.5, 2 ** -0.5, 0.0], [1.0, 0.0, 0.0]])


def test_a_task_of_an_unsupported_type_is_refused_in_one_line(cache: Cache) -> None:  # noqa: F811
    spec = TaskSpec("agemeter", "label", None, None, "train", None, "test", frozenset({"regression"}))
    with pytest.raises(UserError, match=r"^agemeter task 'label' is multiclass; agemeter scores regression tasks$"):
        load_task(reader_context(cache), spec)
    with pytest.raises(ValidationError, match="this protocol scores multiclass / multilabel tasks only"):
        PROTOCOLS.config("centroid")(task="age", task_type="regression")


def test_each_encoder_embeds_each_record_set_once(cache: Cache) -> None:  # noqa: F811
    """Every fraction, seed and protocol reuses the embeddings (the pretrained encoder is one for all seeds)."""
    ctx = reader_context(cache)
    common = {"task": "label", "inits": ["pretrained"], "seeds": [0, 1], "label_fractions": [0.5, 1.0],
              "bootstrap": 0}
    _protocol(PROTOCOLS["knn"], **common, k=3).run(ctx)
    assert ctx.features.computed == 2  # train and test records
    _protocol(PROTOCOLS["centroid"], **common).run(ctx)
    assert ctx.features.computed == 2
    _protocol(PROTOCOLS["linear_probe"], **common, epochs=2).run(ctx)
    assert ctx.features.computed == 3  # and the validation records


class _TwoConditions(FrozenFeatureProtocol):
    """A protocol yielding two conditions per fraction: the base makes one row of each."""

    class Config(FrozenFeatureConfig, extra="forbid", frozen=True):
        kind: Literal["two"] = "two"

    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        data = view.data
        onehot = np.eye(len(data.train.names))[data.test.y]
        for flipped in (False, True):
            yield Scored(onehot[:, ::-1] if flipped else onehot, n_train=7, n_val=3, reference=not flipped,
                         conditions={"flipped": flipped}, facts={"note": "x"}, metrics={"extra": 1.5})


def test_the_base_turns_each_scored_into_a_row(cache: Cache) -> None:  # noqa: F811
    cfg = _TwoConditions.Config(task="label", inits=["pretrained"], label_fractions=[1.0], bootstrap=10)
    rows = _TwoConditions(cfg, BuildContext()).run(reader_context(cache))
    assert [(r.kind, r.reference, r.conditions, r.facts) for r in rows] == [
        ("two", True, {"flipped": False}, {"note": "x"}), ("two", False, {"flipped": True}, {"note": "x"})]
    assert rows[0].metrics["accuracy"] == 1.0 and rows[1].metrics["accuracy"] == 0.0
    assert all(r.metrics["extra"] == 1.5 and r.ci95 and r.evidence is not None for r in rows)
    assert (rows[0].n_train_records, rows[0].n_val_records, rows[0].n_test_records, rows[0].split) == (7, 3, 12, "test")


def _minimal(kind: str) -> dict[str, object]:
    cfg = PROTOCOLS.config(kind)
    out: dict[str, object] = {"task": "label"} if "task" in cfg.model_fields else {}
    return {**out, "mode": "arcface"} if kind == "identification" else out


@pytest.mark.parametrize("kind", sorted(PROTOCOLS))
def test_split_fields_name_every_split_field_of_every_protocol(kind: str) -> None:
    cfg_cls = PROTOCOLS.config(kind)
    named = {f for f in cfg_cls.model_fields if f == "split" or f.endswith("_split")}
    renamed = {f: f"s_{f}" for f in named}
    cfg = cfg_cls(**_minimal(kind), **renamed)
    assert cfg.split_fields() == renamed
    if hasattr(cfg, "task_spec"):
        spec = cfg.task_spec
        assert (spec.protocol, spec.train_split, spec.test_split, spec.task_types) == (
            kind, "s_train_split", "s_test_split", cfg_cls.task_types)
        assert spec.val_split == renamed.get("val_split")


@pytest.mark.parametrize("kind", sorted(PROTOCOLS))
def test_every_protocol_declares_its_task_types_and_inits(kind: str) -> None:
    cfg_cls = PROTOCOLS.config(kind)
    assert cfg_cls.task_types <= ALL_TASK_TYPES or cfg_cls.task_types == {"identification"}
    assert "pretrained" in cfg_cls(**_minimal(kind)).inits
    assert issubclass(PROTOCOLS[kind], EvalProtocol) and PROTOCOLS[kind].Config is cfg_cls


def test_identification_needs_its_train_split_only_in_arcface_mode() -> None:
    cfg_cls = PROTOCOLS.config("identification")
    assert cfg_cls(split="all").split_fields() == {"split": "all"}
    assert cfg_cls(split="b", mode="arcface", train_split="a").split_fields() == {"split": "b", "train_split": "a"}


def test_a_protocol_is_built_by_the_convention() -> None:
    cfg = PROTOCOLS.config("knn")(task="label")
    protocol = build(PROTOCOLS, cfg, BuildContext(fs_hz=100.0))
    assert type(protocol) is PROTOCOLS["knn"] and protocol.cfg is cfg
