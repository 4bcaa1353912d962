"""``ecgforge run recipes/suites/ptbxl.toml --set model.init=KIND:PATH`` on each public foundation model's
released checkpoint layout (#27): the suite's 100 Hz, 2.5 s setup becomes the model's own input (a cache of the
same source spec at the model's rate derived beside the suite's, its window and stride, its filters and
scaling), said in one console line, and the rows carry paired comparisons against random initialisation.

The checkpoints hold random weights of a small configuration in the released file format (the fidelity
fixtures' reference weights; ST-MEM: a one-block ViT with the released 9 s input, since the head width of the
fixture's configuration cannot be read from its weights). The suite's cache, splits and fallback splits are
kept; its tables are shrunk by ``--set`` to superdiagnostic linear probe and fine-tuning, one seed, all the
labels, a few epochs and steps, on the 150-record PTB-XL copy of ``test_suites_init``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecgforge.data.cache import Cache
from ecgforge.encoders.st_mem import STMEM, STMEMConfig
from tests.app.test_suites_init import _invoke, ptbxl  # noqa: F401 - ptbxl is a fixture used below
from tests.encoders.test_foundation import CASES, WRAP, reference_state

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "recipes" / "suites" / "ptbxl.toml"

pytestmark = [pytest.mark.data, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

#: model -> (what the console line says of its input, the derived cache's rate).
EXPECTED = {
    "ecgfounder": ("10 s windows", "per record: notch 50 Hz (Q 30), Butterworth", 500),
    "merl": ("10 s windows", "per window: min-max", 500),
    "st_mem": ("9 s windows every 0.5 s", "per window: Butterworth high-pass 0.67 Hz", 250),
    "ecg_jepa": ("10 s windows", "leads I II V1 V2 V3 V4 V5 V6", 250),
    "hubert_ecg": ("5 s windows", "per record: FIR band-pass 0.05-47 Hz", 500),
}


def released_file(name: str, root: Path) -> Path:
    """Random weights of a small ``name`` in its released file format."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}_released.pth"
    if name == "st_mem":  # heads 64 wide, as every released ST-MEM (the head count is not in the weights)
        torch.manual_seed(0)
        model = STMEM(STMEMConfig(seq_len=2250, patch_size=75, width=64, depth=1, mlp_dim=128, heads=1, dim_head=64))
        state = model.state_dict()
    else:
        state = reference_state(name)
    # Moved off the fixture's draw, which can be the very draw of the suite's random init (seed 0).
    gen = torch.Generator().manual_seed(1)
    state = {k: v + 0.1 * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1
             and "running_" not in k else v for k, v in state.items()}
    torch.save(WRAP[name](state), path)
    return path


def suite_sets(init: str, cache: Path, cache_recipe: Path) -> list[str]:
    tables = ("[{kind='linear_probe', task='superdiagnostic', label_fractions=[1.0], seeds=[0], epochs=2, bootstrap=20},"
              " {kind='finetune', task='superdiagnostic', label_fractions=[1.0], seeds=[0], head_epochs=1, epochs=1,"
              " min_steps=2, batch_size=16, bootstrap=20}]")
    sets = [f"model.init={json.dumps(init)}", f"data.cache={json.dumps(str(cache))}",
            f"data.build={json.dumps(str(cache_recipe))}", f"eval={tables}"]
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ptbxl_suite_feeds_each_foundation_model_its_own_input(name: str, ptbxl: tuple[Path, Path],  # noqa: F811
                                                               tmp_path: Path) -> None:
    cache_recipe, cache = ptbxl
    window, steps, fs = EXPECTED[name]
    kind = CASES[name].kind
    ckpt = released_file(name, tmp_path / "ckpts")
    out = tmp_path / "suite"
    printed = " ".join(_invoke(["run", str(SUITE), "--out", str(out),
                                *suite_sets(f"{kind}:{ckpt}", cache, cache_recipe)]).split())
    derived = cache.with_name(f"{cache.stem}-{fs}hz.h5")  # the test's cache name does not say its rate
    assert derived.is_file() and Cache(derived).fs_hz == fs
    assert f"data.cache {cache} -> {derived}" in printed
    [line] = [ln for ln in printed.split(" input of ")[1:2]]
    assert window in line and steps in line and f"at {fs} Hz" in line, line
    results = json.loads((out / "results.json").read_text())
    pretrained = [r for r in results["eval"] if r["init"] == "pretrained"]
    assert {r["kind"] for r in pretrained} == {"linear_probe", "finetune"}
    assert all(r["versus"].get("random") for r in pretrained)
    probe = {r["init"]: r["metrics"] for r in results["eval"] if r["kind"] == "linear_probe"}
    assert probe["pretrained"] != probe["random"]  # the checkpoint's weights, not a fresh draw
    resolved = (out / "resolved.toml").read_text()
    assert f'cache = "{derived}"' in resolved and "window_s = 2.5" not in resolved
    assert json.loads((out / "encoder.json").read_text())["config"]["kind"] == kind
