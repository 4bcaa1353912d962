"""Every paper recipe, and every CPU recipe of recipes/ptbxl_cpu/, validates and runs end to end (2 pretraining
steps + a tiny linear probe) on a small synthetic cache, with only sizes, data paths and evaluation overridden
through ``--set``-style overrides."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli_w

from ecgforge.app.recipes import load_run_recipe as load_recipe
from ecgforge.app.run import Run as Runner
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe

ROOT = Path(__file__).resolve().parents[2]
PAPERS = ROOT / "recipes" / "papers"
RECIPES = sorted(PAPERS.rglob("*.toml"))  # every recipe under recipes/papers/, at any depth
CPU = ROOT / "recipes" / "ptbxl_cpu"
CPU_RECIPES = sorted(CPU.glob("*.toml"))

SMALL_W2V = ["model.encoder.layers=1", "model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.ffn_dim=64",
             "model.encoder.conv_pos=16", "model.encoder.conv_pos_groups=4"]
SMALL: dict[str, list[str]] = {
    "advmask/adv_mask": ["model.encoder.width=8", "ssl.masker.width=4", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "advmask/simclr_random_aug": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "advmask/three_kg": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "lead_agnostic/wav2vec2": [*SMALL_W2V, "ssl.final_dim=32", "ssl.quantiser_entries=16", "ssl.n_negatives=10"],
    "lead_agnostic/w2v_cmsc_rlm": [*SMALL_W2V, "ssl.final_dim=32", "ssl.quantiser_entries=16", "ssl.n_negatives=10"],
    "lead_agnostic/cmsc": SMALL_W2V,  # no projector (projector_dim = 0, as fairseq-signals)
    "strodthoff/cpc": ["model.encoder.features=[16, 16, 16, 16]", "model.encoder.hidden=16", "ssl.n_negatives=8",
                       "ssl.n_steps=4"],
    "strodthoff/simclr": ["model.encoder.width=4", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                          "train.schedule.warmup_steps=1"],
    "strodthoff/swav": ["model.encoder.width=4", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                        "ssl.n_prototypes=10", "ssl.queue_length=4", "ssl.queue_start_step=0",
                        "ssl.freeze_prototypes_steps=1", "train.schedule.warmup_steps=1"],
    "strodthoff/moco": ["model.encoder.width=4", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                        "ssl.queue_length=16"],
    "strodthoff/byol": ["model.encoder.width=4", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                        "ssl.predictor_hidden=32", "train.schedule.warmup_steps=1"],
}
CPU_SMALL: dict[str, list[str]] = {
    "ptbxl_cpu/simclr": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "ptbxl_cpu/adv_mask": ["model.encoder.width=8", "ssl.masker.width=4", "ssl.projector_hidden=32",
                           "ssl.projector_dim=16"],
    "ptbxl_cpu/adv_mask_random": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "ptbxl_cpu/adv_mask_authors": ["model.encoder.width=8", "ssl.masker.width=4", "ssl.projector_hidden=32",
                                   "ssl.projector_dim=16"],
    "ptbxl_cpu/three_kg": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "ptbxl_cpu/cpc": ["model.encoder.features=[16, 16, 16, 16]", "model.encoder.hidden=16"],
    "ptbxl_cpu/three_kg_owncrop_norot": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "ptbxl_cpu/byol": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.predictor_hidden=32"],
    "ptbxl_cpu/cmsc": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16"],
    "ptbxl_cpu/moco": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                       "ssl.queue_length=16"],
    "ptbxl_cpu/swav": ["model.encoder.width=8", "ssl.projector_hidden=32", "ssl.projector_dim=16",
                       "ssl.n_prototypes=10", "ssl.freeze_prototypes_steps=1"],
    "ptbxl_cpu/wav2vec2": [*SMALL_W2V, "ssl.final_dim=32", "ssl.quantiser_entries=16", "ssl.n_negatives=10"],
    "ptbxl_cpu/w2v_cmsc_rlm": [*SMALL_W2V, "ssl.final_dim=32", "ssl.quantiser_entries=16", "ssl.n_negatives=10"],
}
TINY_EVAL = ('eval=[{kind = "linear_probe", task = "rhythm", label_fractions = [1.0], seeds = [0], epochs = 2, '
             'bootstrap = 0, inits = ["pretrained"]}]')


def test_every_paper_recipe_is_covered() -> None:
    assert {str(p.relative_to(PAPERS).with_suffix("")) for p in RECIPES} == set(SMALL)
    assert {f"ptbxl_cpu/{p.stem}" for p in CPU_RECIPES} == set(CPU_SMALL)


@pytest.fixture(scope="module")
def synthetic_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[Path, Path]]:
    """The synthetic dataset (16 patients x 2 records of 10 s) cached at 100 Hz and at 500 Hz:
    fs -> (cache, cache recipe). The recipe is what ``[data].build`` points at, so the runner finds the cache
    up to date instead of rebuilding the paper's dataset."""
    root = tmp_path_factory.mktemp("papers")
    caches = {}
    for fs in (100.0, 500.0):
        raw = {
            "name": f"synthetic-{fs:g}", "out": str(root / f"synthetic-{fs:g}.h5"),
            "source": {"kind": "synthetic", "path": str(root / "wfdb"), "n_patients": 16, "records_per_patient": 2,
                       "duration_s": 10.0, "seed": 0},
            "signal": {"fs_hz": fs},
        }
        spec_path = root / f"synthetic-{fs:g}.toml"
        spec_path.write_text(tomli_w.dumps(raw))
        caches[fs] = (build_cache(CacheRecipe.model_validate(raw), workers=1).path, spec_path)
    return caches


@pytest.mark.slow
@pytest.mark.parametrize("name", [*sorted(SMALL), *sorted(CPU_SMALL)])
def test_paper_recipe_runs_two_steps_on_a_tiny_cache(name: str, synthetic_caches: dict[float, tuple[Path, Path]],
                                                     tmp_path: Path) -> None:
    path = CPU / f"{name.removeprefix('ptbxl_cpu/')}.toml" if name.startswith("ptbxl_cpu/") else PAPERS / f"{name}.toml"
    paper = load_recipe(path)
    fs = 500.0 if "cinc2021" in paper.data.cache else 100.0
    overrides = [
        f'data.cache="{synthetic_caches[fs][0]}"',
        f'data.build="{synthetic_caches[fs][1]}"',
        "data.splits={train = {fold = [1, 2, 3, 4, 5, 6]}, val = {fold = [7, 8]}, test = {fold = [9, 10]}}",
        "data.pretrain_split=train", "data.window_s=2.5",
        "train.max_steps=2", "train.batch_size=4", "train.grad_accum_steps=1", "train.precision=no",
        "train.log_every_steps=1", TINY_EVAL, *{**SMALL, **CPU_SMALL}[name],
    ]
    recipe = load_recipe(path, overrides)
    assert recipe.ssl is not None and recipe.ssl.kind == paper.ssl.kind  # the paper's objective is what runs
    assert recipe.model.encoder.kind == paper.model.encoder.kind
    results = Runner(recipe, tmp_path / "run").run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.endswith("loss"))
    assert results["eval"] and (tmp_path / "run" / "encoder.safetensors").is_file()
