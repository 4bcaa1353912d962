"""A foundation model's input contract where the data does not come from ``data.cache``: ``ecgforge embed`` and a
protocol's own ``cache =`` read a cache at another rate exactly as a run reads its own (a cache of the same spec
at the model's rate, derived beside it from the source; the contract's windows, stride, filters and scaling).

Both are checked against the main run's path on the same records: the recipe following the contract
(`follow_contract`), its cache ensured (`Run.ensure_cache`), the plan (`RunPlan.build`) and the embeddings the
protocols read (`eval_context(...).features`). The checkpoints are the tiny released-layout files of the
foundation suites (`test_suites_foundation.released_file`: ST-MEM filters each window and tiles at 0.5 s,
ECGFounder filters whole records at 500 Hz); the caches are synthetic, built at 100 Hz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from ecgforge.app.embed import read_embeddings
from ecgforge.app.recipes import follow_contract, resolve_init
from ecgforge.app.run import Run, eval_context
from ecgforge.cli import app
from ecgforge.data.cache import Cache
from ecgforge.encoder_files import input_contract, load_encoder_weights
from ecgforge.encoders.foundation import InputContract
from ecgforge.progress import Reporter
from ecgforge.recipe import Recipe
from ecgforge.rundir import RunPlan
from tests.app.test_suites_foundation import released_file
from tests.encoders.test_foundation import CASES
from tests.test_encoder_files import make_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")
cli = CliRunner()
MODELS = ("st_mem", "ecgfounder")


def checkpoint(name: str, root: Path) -> tuple[str, torch.nn.Module, InputContract]:
    """``KIND:PATH`` of a tiny released-layout checkpoint, the encoder it loads and its input contract."""
    init = f"{CASES[name].kind}:{released_file(name, root)}"
    encoder, meta = load_encoder_weights(init)
    contract = input_contract(meta)
    assert contract is not None
    return init, encoder, contract


def run_plan(cache: Path, init: str, contract: InputContract, run_dir: Path) -> RunPlan:
    """The main run's path: a recipe on ``cache`` whose ``data.build`` is the spec the cache was built from,
    fed as the contract says (derived cache ensured), and its plan."""
    spec = cache.with_suffix(".toml")
    spec.write_text(tomli_w.dumps(CacheSpec(cache)))
    r = resolve_init(Recipe.model_validate({
        "name": "contract", "data": {"cache": str(cache), "build": str(spec), "window_s": 2.5,
                                     "splits": {"train": {"fold": list(range(1, 11))}}},
        "model": {"init": init}}), "test")
    r, derived = follow_contract(r, contract)
    assert derived is not None  # the recipe's 100 Hz cache is replaced by one at the model's rate
    return RunPlan.build(r, Run(r, run_dir).ensure_cache(derived), contract)


def CacheSpec(cache: Path) -> dict:  # noqa: N802 - reads as the spec it returns
    """The spec stored in ``cache``, as TOML can write it (no nulls)."""
    from ecgforge.data.cache_spec import CacheRecipe

    return CacheRecipe.model_validate(Cache(cache).spec).model_dump(mode="json", exclude_none=True)


def protocol_embeddings(plan: RunPlan, encoder: torch.nn.Module, cache: Cache) -> np.ndarray:
    """Per-record embeddings of every record of ``cache`` as the plan's protocols compute them."""
    ctx = eval_context(plan, encoder, torch.device("cpu"), Reporter())
    return ctx.features.records("pretrained", 0, cache, np.arange(len(cache)))


@pytest.mark.parametrize("name", MODELS)
def test_embed_reads_a_cache_at_another_rate_as_a_run_does(name: str, tmp_path: Path) -> None:
    cache = make_cache(tmp_path, "syn-100hz", fs_hz=100.0, n_patients=2)
    init, encoder, contract = checkpoint(name, tmp_path / "ckpt")
    out = tmp_path / "emb.h5"
    res = cli.invoke(app, ["embed", init, "--cache", str(cache), "--out", str(out)])
    assert res.exit_code == 0, res.output
    derived = tmp_path / f"syn-{contract.fs_hz:g}hz.h5"
    assert f"deriving {derived}" in " ".join(res.output.split())
    e = read_embeddings(out)
    # The run finds embed's derived cache and accepts it as its own (same spec hash), reading it the same way.
    plan = run_plan(cache, init, contract, tmp_path / "run")
    assert Path(e["attrs"]["cache"]) == plan.cache.path == derived and e["attrs"]["fs_hz"] == contract.fs_hz
    assert (e["attrs"]["window"], e["attrs"]["stride"]) == (plan.window, plan.stride)
    assert list(e["cache_index"]) == list(range(len(plan.cache)))
    want = protocol_embeddings(plan, encoder, plan.cache)
    np.testing.assert_allclose(e["embedding"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_a_protocols_own_cache_is_read_as_the_runs_cache(name: str, tmp_path: Path) -> None:
    main = make_cache(tmp_path, "syn-a-100hz", fs_hz=100.0, n_patients=2)
    other = make_cache(tmp_path, "syn-b-100hz", fs_hz=100.0, n_patients=3)
    init, encoder, contract = checkpoint(name, tmp_path / "ckpt")
    plan = run_plan(main, init, contract, tmp_path / "run-a")
    ctx = eval_context(plan, encoder, torch.device("cpu"), Reporter())
    own = ctx.open_cache(str(other))  # a protocol's `cache = "syn-b-100hz.h5"` in the run on syn-a
    got = ctx.features.records("pretrained", 0, own, np.arange(len(own)))
    # The run on syn-b itself: the same derived file, read the same way.
    plan_b = run_plan(other, init, contract, tmp_path / "run-b")
    assert own.path == plan_b.cache.path and own.fs_hz == contract.fs_hz
    np.testing.assert_allclose(got, protocol_embeddings(plan_b, encoder, plan_b.cache), rtol=1e-5, atol=1e-6)


def test_embed_refuses_in_one_line_where_the_source_is_gone(tmp_path: Path) -> None:
    """The derived cache is built from the source the cache's spec names: where it cannot be read, one line
    says what to do, and nothing is written."""
    cache = make_cache(tmp_path, "syn-100hz", fs_hz=100.0, n_patients=2)
    source = tmp_path / "wfdb-2"
    for f in source.iterdir():
        f.unlink()
    source.rmdir()
    source.write_text("not a folder")  # the synthetic source cannot write its records here
    init, _, _ = checkpoint("st_mem", tmp_path / "ckpt")
    res = cli.invoke(app, ["embed", init, "--cache", str(cache), "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]  # after the line saying what it tried
    assert "takes 250 Hz but" in line and "is 100 Hz" in line and "build a cache at 250 Hz" in line, line
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "syn-250hz.h5").exists()
