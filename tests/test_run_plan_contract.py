"""A run plan with an input contract (#27): the window and stride are the contract's, and every read of the
plan's cache (tiles, batches of training crops) is exactly the contract's record- and window-scope steps applied
to the cache's record; the recipe follows the contract (window, stride, a derived cache at its rate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgforge.app.recipes import derived_cache_path, follow_contract
from ecgforge.data.cache import Cache
from ecgforge.data.cache_spec import load_cache_recipe
from ecgforge.data.dataset import RandomWindows, TiledWindows
from ecgforge.encoders.ecgfounder import ECGFounder, ECGFounderConfig
from ecgforge.encoders.hubert_ecg import HuBERTECG, HuBERTECGConfig
from ecgforge.encoders.st_mem import STMEM, STMEMConfig
from ecgforge.errors import UserError
from ecgforge.recipe import Recipe
from ecgforge.rundir import RunPlan
from tests.test_encoder_files import make_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache250(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("plan"), "syn250", fs_hz=250.0, n_patients=6)


def recipe(cache: Path, build: str | None = None) -> Recipe:
    return Recipe.model_validate({
        "name": "plan", "data": {"cache": str(cache), "window_s": 2.5, "build": build, "splits": {
            "train": {"fold": list(range(1, 11))}}},
        "model": {"encoder": {"kind": "resnet1d"}}})


def test_record_scope_steps_are_applied_to_every_read(cache250: Path) -> None:
    """ECGFounder's record-scope filters (its contract moved to 250 Hz, 4 s windows every 3 s): exact at any read."""
    contract = ECGFounder(ECGFounderConfig(base_filters=8, filter_list=(8, 16, 16, 32), m_blocks_list=(1, 1, 1, 1),
                                           groups_width=4)).contract.model_copy(update={"fs_hz": 250.0, "window_s": 4.0,
                                                                                        "stride_s": 3.0})
    raw = Cache(cache250)
    plan = RunPlan.build(recipe(cache250), raw, contract)
    assert (plan.window, plan.stride, plan.ctx.window) == (1000, 750, 1000)
    i = int(plan.split_indices["train"][0])
    want = contract.prepare_record(raw.read(i))
    tiles = TiledWindows(plan.cache, plan.split_indices["train"][:1], plan.window, plan.stride)
    for k in range(len(tiles)):
        s = int(tiles.starts[k])
        assert np.array_equal(tiles[k]["x"].numpy(), want[:, s : s + 1000])
    crops = RandomWindows(plan.cache, plan.split_indices["train"][:3], plan.window, seed=1)
    batch, starts = crops.__getitems__([0]), crops.starts()
    assert np.array_equal(batch["x"][0].numpy(), want[:, starts[0, 0] : starts[0, 0] + 1000])
    assert not np.array_equal(want[:, :1000], raw.read(i, 0, 1000))  # the filters did something
    line = plan.input_line()
    assert line is not None and "4 s windows every 3 s" in line and "per record: notch 50 Hz" in line
    assert "per window: z-score" in line and "\n" not in line


def test_window_scope_filters_are_applied_to_each_window(cache250: Path) -> None:
    contract = STMEM(STMEMConfig(seq_len=300, patch_size=30, width=32, depth=1, mlp_dim=32, heads=1,
                                 dim_head=32)).contract
    raw = Cache(cache250)
    plan = RunPlan.build(recipe(cache250), raw, contract)
    assert (plan.window, plan.stride) == (300, 125)
    i = int(plan.split_indices["train"][0])
    got = plan.cache.read_windows(np.array([i, i]), np.array([0, 125]), 300)
    want = contract.prepare_window(raw.read_windows(np.array([i, i]), np.array([0, 125]), 300))
    assert np.array_equal(got, want)


def test_a_cache_at_another_rate_is_refused_in_one_line(cache250: Path) -> None:
    contract = HuBERTECG(HuBERTECGConfig(conv_dim=(16,) * 5, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=32, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4)).contract
    with pytest.raises(UserError, match=r"encoder expects 500 Hz \(HuBERT-ECG.*\) but .*syn250.h5 is 250 Hz; .*data.build"):
        RunPlan.build(recipe(cache250), Cache(cache250), contract)


def test_the_recipe_follows_the_contract(cache250: Path, tmp_path: Path) -> None:
    assert derived_cache_path("cache/ptbxl-100hz.h5", 100, 500) == "cache/ptbxl-500hz.h5"
    assert derived_cache_path("cache/ptbxl-500hz.h5", 100, 500) == "cache/ptbxl-500hz.h5"  # a resolved.toml rerun
    assert derived_cache_path("c/mine.h5", 100, 250) == "c/mine-250hz.h5"
    spec = tmp_path / "spec.toml"
    spec.write_text(f'schema_version = 1\nname = "syn-100hz"\nout = "{tmp_path}/syn-100hz.h5"\n'
                    f'[source]\nkind = "synthetic"\npath = "{tmp_path}/wfdb"\nn_patients = 2\n[signal]\nfs_hz = 100\n')
    contract = STMEM(STMEMConfig(seq_len=300, patch_size=30, width=32, depth=1, mlp_dim=32, heads=1,
                                 dim_head=32)).contract
    notes: list[str] = []
    r, derived = follow_contract(recipe(tmp_path / "syn-100hz.h5", str(spec)), contract, notes.append)
    assert derived is not None and derived.signal.fs_hz == 250 and derived.out == f"{tmp_path}/syn-250hz.h5"
    assert derived.source == load_cache_recipe(spec).source and derived.spec_hash() != load_cache_recipe(spec).spec_hash()
    assert (r.data.cache, r.data.window_s, r.data.eval_stride_s) == (f"{tmp_path}/syn-250hz.h5", 1.2, 0.5)
    assert len(notes) == 2 and "data.window_s 2.5 -> 1.2" in notes[1]
    r2, again = follow_contract(recipe(cache250), contract)  # no data.build: the cache stands (RunPlan checks its rate)
    assert again is None and r2.data.cache == str(cache250)
