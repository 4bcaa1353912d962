"""``model.init = "KIND:PATH"``: a foundation model's released checkpoint file through the recipe, the CLI,
``load_encoder`` and ``create_encoder`` (#27). The checkpoints are the fidelity fixtures' reference weights
saved in each model's released file format; the run is a small one on a synthetic cache at the model's rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ecgforge
from ecgforge.cli import app
from ecgforge.encoder_files import check_contract, foundation_init, load_encoder, read_contract
from ecgforge.errors import UserError
from tests.test_encoder_files import SPLITS, make_cache, one_line_error

from .test_foundation import ATOL, WRAP, fixture, reference_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")
cli = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foundation_init")
    released = root / "12_lead_ECGFounder.pth"  # the small reference Net1D, head and BatchNorms included
    torch.save(WRAP["ecgfounder"](reference_state("ecgfounder")), released)
    renamed = root / "renamed.pth"
    state = reference_state("ecgfounder")
    state["stage_list.1.block_list.0.conv2.conv.wieght"] = state.pop("stage_list.1.block_list.0.conv2.conv.weight")
    torch.save({"state_dict": state}, renamed)
    return {"root": root, "released": released, "renamed": renamed, "cache": make_cache(root, "syn500", fs_hz=500.0)}


def recipe(work: dict[str, Path], init: str, *, window_s: float = 10.0, cache: Path | None = None) -> Path:
    path = work["root"] / "init.toml"
    path.write_text(f"""
schema_version = 1
name = "foundation-init"
[data]
cache = "{cache or work['cache']}"
window_s = {window_s}
splits = {SPLITS}
[model]
init = "{init}"
[[eval]]
kind = "linear_probe"
task = "rhythm"
epochs = 3
seeds = [0, 1]
""")
    return path


def test_kind_path_is_recognised_only_for_foundation_kinds(work: dict[str, Path]) -> None:
    assert foundation_init(f"ecgfounder:{work['released']}") == ("ecgfounder", str(work["released"]))
    for other in ("resnet1d:/x.pth", "hf://org/name", str(work["released"]), "C:/weights.pth", "ecgfounder:"):
        assert foundation_init(other) is None, other


def test_load_encoder_reads_the_released_file_with_its_contract(work: dict[str, Path]) -> None:
    enc = load_encoder(f"ecgfounder:{work['released']}")
    meta = enc.contract
    assert meta["config"]["kind"] == "ecgfounder" and meta["config"]["filter_list"] == [8, 16, 16, 32]
    assert meta["fs_hz"] == 500.0 and meta["window_s"] == 10.0 and meta["licence"] == "MIT"
    assert meta["input_contract"]["normalisation"]["kind"] == "zscore" and meta["filter_scope"] == "record"
    assert read_contract(f"ecgfounder:{work['released']}")["input_contract"] == meta["input_contract"]
    fx = fixture("ecgfounder")
    with torch.no_grad():
        assert (enc.pool(enc.network_features(fx["input"])) - fx["features"]).abs().max() < ATOL
    same = ecgforge.create_encoder("ecgfounder", pretrained=work["released"])  # the bare released file
    assert torch.equal(same.stage_list[0].block_list[0].conv1.conv.weight, enc.stage_list[0].block_list[0].conv1.conv.weight)
    with pytest.raises(UserError, match="missing key 'conv1.weight'"):
        ecgforge.create_encoder("merl_resnet", pretrained=work["released"])


def test_contract_refuses_other_windows(work: dict[str, Path]) -> None:
    meta = read_contract(f"ecgfounder:{work['released']}")
    check_contract(meta, fs_hz=500.0, leads=meta["leads"], window_s=10.0)
    with pytest.raises(UserError, match=r"takes 10 s windows but data.window_s is 5; set data.window_s = 10"):
        check_contract(meta, fs_hz=500.0, leads=meta["leads"], window_s=5.0)


def test_cli_refuses_a_renamed_key_and_a_wrong_rate_without_a_cache_recipe_in_one_line(work: dict[str, Path]) -> None:
    out = work["root"] / "runs" / "refused"
    line = one_line_error(cli.invoke(app, ["run", str(recipe(work, f"ecgfounder:{work['renamed']}")), "--out", str(out)]))
    assert "stage_list.1.block_list.0.conv2.conv.wieght" in line and "'stage_list.1.block_list.0.conv2.conv.weight'" in line
    cache100 = make_cache(work["root"], "syn100", fs_hz=100.0)
    line = one_line_error(cli.invoke(app, ["run", str(recipe(work, f"ecgfounder:{work['released']}", cache=cache100)),
                                           "--out", str(out.with_name("rate"))]))
    assert "encoder expects 500 Hz" in line and "data.build" in line  # no spec to derive a 500 Hz cache from


def test_run_from_a_released_checkpoint_writes_rows_against_random(work: dict[str, Path]) -> None:
    out = work["root"] / "runs" / "ecgfounder"
    path = recipe(work, "ecgfounder:placeholder", window_s=5.0)  # the contract's 10 s windows replace it
    res = cli.invoke(app, ["run", str(path), "--out", str(out), "--set", f"model.init=ecgfounder:{work['released']}"])
    assert res.exit_code == 0, res.output
    printed = " ".join(res.output.split())
    assert "data.window_s 5 -> 10" in printed
    assert "input of ECGFounder (12-lead):" in printed and "10 s windows" in printed and "per record: notch" in printed
    assert "window_s = 10.0" in (out / "resolved.toml").read_text()
    results = json.loads((out / "results.json").read_text())
    rows = results["eval"]
    inits = {r["init"] for r in rows}
    assert {"pretrained", "random"} <= inits
    assert any("random" in r.get("versus", {}) for r in rows if r["init"] == "pretrained")
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["config"]["kind"] == "ecgfounder" and meta["input_contract"]["model"] == "ECGFounder (12-lead)"
    assert load_encoder(out).contract["input_contract"] == meta["input_contract"]  # the run's encoder reloads
