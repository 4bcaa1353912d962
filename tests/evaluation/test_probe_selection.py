"""The probe head keeps the epoch that scored best on the validation records, and its row says which."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecgforge.evaluation.heads as heads
from ecgforge.data.cache import Cache
from ecgforge.evaluation.heads import fit_linear_head
from ecgforge.evaluation.linear_probe import LinearProbe
from tests.evaluation.test_protocols import _protocol, cache, context, tiny_encoder  # noqa: F401


def _data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(0)
    x = gen.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_selected_epoch_is_the_best_validation_epoch_and_its_weights_are_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    plan = iter([0.2, 0.9, 0.4, 0.1])  # validation score after epochs 1..4: epoch 2 is the best
    made: list[heads.LinearHead] = []
    states: list[dict[str, torch.Tensor]] = []

    def capture(*a: object, **k: object) -> heads.LinearHead:
        made.append(real(*a, **k))
        return made[-1]

    def score(_y: np.ndarray, _s: np.ndarray) -> float:
        states.append({k: v.clone() for k, v in made[0].layer.state_dict().items()})
        return next(plan)

    real = heads.LinearHead
    monkeypatch.setattr(heads, "LinearHead", capture)
    # val = (window features, record_of, record targets, n_records, score_fn)
    head = fit_linear_head(x, y, "multiclass", 2, val=(x[:8], np.arange(8), y[:8], 8, score), epochs=4, seed=0)
    assert head.selected_epoch == 2 and len(states) == 4
    for k, v in head.layer.state_dict().items():
        torch.testing.assert_close(v, states[1][k])
    assert not torch.equal(states[1]["weight"], states[3]["weight"])  # the kept state is not simply the last
    assert fit_linear_head(x, y, "multiclass", 2, epochs=3, seed=0).selected_epoch == 3  # no validation: last


def test_linear_probe_rows_say_which_epoch_was_selected(cache: Cache) -> None:  # noqa: F811
    ctx = context(cache, lambda init, seed: tiny_encoder(seed))
    rows = _protocol(LinearProbe, task="label", inits=["random"], epochs=4, bootstrap=0,
                     label_fractions=[0.5, 1.0]).run(ctx)
    assert len(rows) == 2 and all(1 <= r["selected_epoch"] <= 4 for r in rows)
