"""The Hugging Face Hub path: export's model card metadata, ``ecgforge push``, ``hf://`` loading (API, recipe
``init``, ``ecgforge embed``), revision pinning, offline mode, the missing-extra message, ``create_encoder``
and ``hubconf.py``.

No test touches the network: ``huggingface_hub`` itself talks to ``tests.hub_standin.HubStandIn``, a loopback
HTTP server, through its endpoint settings (``constants`` patched in process, ``HF_ENDPOINT`` in a subprocess),
with its cache in a temporary folder. One module-scoped run (synthetic cache of 20 patients, SimCLR for 2
steps, resnet1d width 8, a linear probe) feeds the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import ecgforge
from ecgforge.app.embed import read_embeddings
from ecgforge.app.export import export
from ecgforge.app.push import is_export, push
from ecgforge.app.recipes import load_run_recipe
from ecgforge.cli import app
from ecgforge.data.cache import Cache
from ecgforge.encoder_files import EncoderLoadError, initial_encoder, load_encoder, save_encoder
from ecgforge.encoders import ENCODERS
from ecgforge.errors import UserError
from ecgforge.hub import HubError, parse
from ecgforge.layers.weights import state_dict_hash
from ecgforge.registry import build
from tests.hub_standin import HubStandIn, card_problems
from tests.test_encoder_files import LEADS, SPLITS, embed_all, one_line_error, tiny_quickstart_run

hf = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants as hf_constants  # noqa: E402 - after the importorskip
import yaml  # noqa: E402 - PyYAML comes with huggingface_hub

ROOT = Path(__file__).resolve().parents[2]
cli = CliRunner()


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n"), readme[:80]
    head, sep, _ = readme[4:].partition("\n---\n")
    assert sep, "front matter not closed"
    data = yaml.safe_load(head)
    assert isinstance(data, dict)
    return data


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """cache, run (quickstart with --set: width 8, 2 steps, one probe at 100 % labels), export."""
    root = tmp_path_factory.mktemp("hub")
    cache, run_dir, export_dir = tiny_quickstart_run(root, label_fractions="[0.5, 1.0]", probe_epochs=3)
    # A second encoder of the same architecture with other weights: what a later push replaces the first with.
    torch.manual_seed(1)
    other = root / "runs" / "other"
    cfg = ENCODERS.config("resnet1d")(width=8)
    saved = json.loads((run_dir / "encoder.json").read_text())
    contract = {k: v for k, v in saved.items() if k not in ("format", "format_version", "ecgforge_version", "config",
                                                             "embed_dim", "weights_sha256")}
    save_encoder(build(ENCODERS, cfg), cfg, other, contract | {"recipe_hash": "other"})
    return {"root": root, "cache": cache, "run": run_dir, "export": export_dir, "other": other}


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """A fresh stand-in Hub, huggingface_hub pointed at it, an empty cache, a write token."""
    with HubStandIn() as standin:
        monkeypatch.setattr(hf_constants, "ENDPOINT", standin.url)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            standin.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_standin_write_token")
        yield standin


def x_of(work: dict[str, Path]) -> torch.Tensor:
    return torch.from_numpy(Cache(work["cache"]).read(0, 0, 250))[None]


# ------------------------------------------------------------------------------------------ model card


def test_export_card_front_matter_is_hub_metadata(work: dict[str, Path]) -> None:
    readme = (work["export"] / "README.md").read_text()
    meta = front_matter(readme)
    assert meta["library_name"] == "ecgforge" and meta["pipeline_tag"] == "feature-extraction"
    assert {"ecgforge", "ecg", "self-supervised-learning", "resnet1d", "simclr"} <= set(meta["tags"])
    assert meta["datasets"] == ["synthetic"]
    (model,) = meta["model-index"]
    assert model["name"] == "quickstart"
    results = json.loads((work["run"] / "results.json").read_text())["eval"]
    pretrained = [r for r in results if r["init"] == "pretrained"]
    assert len(model["results"]) == len(pretrained) == 2  # one per label fraction; random-init rows stay out
    for row in pretrained:
        (res,) = [r for r in model["results"] if r["dataset"]["args"]["label_fraction"] == row["label_fraction"]]
        assert res["task"]["type"] == "rhythm" and res["dataset"] == {
            "type": "synthetic", "name": "syn", "split": "test",
            "args": {"protocol": "linear_probe", "label_fraction": row["label_fraction"]}}
        by_type = {m["type"]: m["value"] for m in res["metrics"]}
        assert res["metrics"][0]["type"] == "macro_auroc"
        for name, value in row["metrics"].items():
            if value is not None:
                assert by_type[name] == pytest.approx(value, abs=1e-6)
    # huggingface_hub reads the same rows back, and the stand-in's copy of the Hub's metadata check passes.
    card = hf.ModelCard(readme)
    assert card.data.library_name == "ecgforge" and len(card.data.eval_results) == sum(
        len(r["metrics"]) for r in model["results"])
    assert card_problems(readme) == []
    # The loading example names the folder; an export made for a push names the hf:// path.
    assert 'ecgforge.load_encoder("tiny")' in readme


def test_card_metadata_survives_awkward_names(tmp_path: Path, work: dict[str, Path]) -> None:
    run = tmp_path / 'run "quoted": #1'
    run.mkdir()
    for f in ("encoder.json", "encoder.safetensors", "results.json"):
        (run / f).write_bytes((work["run"] / f).read_bytes())
    meta = json.loads((run / "encoder.json").read_text())
    meta["recipe"] = 'x: "y" # z\n- w'
    (run / "encoder.json").write_text(json.dumps(meta))
    # A condition key YAML 1.1 would read as a boolean, and a value with quotes.
    results = json.loads((run / "results.json").read_text())
    for row in results["eval"]:
        row.update({"on": 'a "b": c', "condition_keys": ["on"]})
    (run / "results.json").write_text(json.dumps(results))
    out = export(run, tmp_path / "out")
    data = front_matter((out / "README.md").read_text())
    assert data["library_name"] == "ecgforge" and data["model-index"][0]["name"] == meta["recipe"]
    assert {r["dataset"]["args"]["on"] for r in data["model-index"][0]["results"]} == {'a "b": c'}
    assert card_problems((out / "README.md").read_text()) == []
    (run / "results.json").unlink()
    data = front_matter((export(run, tmp_path / "out2") / "README.md").read_text())
    assert "model-index" not in data  # no results: no model-index


# -------------------------------------------------------------------------------------- push and hf://


def test_push_a_run_then_load_it_from_the_hub(work: dict[str, Path], hub: HubStandIn, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    res = cli.invoke(app, ["push", str(work["run"]), "--repo", "ecg-lab/tiny-simclr", "--private"])
    assert res.exit_code == 0, res.output
    assert "exported on the way" in " ".join(res.output.split())
    repo = hub.repos["ecg-lab/tiny-simclr"]
    assert repo.private
    tree = hub.files("ecg-lab/tiny-simclr")
    assert set(tree) == {"README.md", "encoder.json", "encoder.safetensors", "results.json"}
    assert tree["encoder.safetensors"] == (work["run"] / "encoder.safetensors").read_bytes()
    assert json.loads(tree["encoder.json"]) == json.loads((work["run"] / "encoder.json").read_text())
    card = tree["README.md"].decode()
    assert front_matter(card)["library_name"] == "ecgforge" and "model-index" in front_matter(card)
    assert 'ecgforge.load_encoder("hf://ecg-lab/tiny-simclr")' in card
    assert all(authed for method, _, authed in hub.log if method == "POST")  # the token went with every write
    # Round trip: the same embeddings as the run's own encoder, and the contract is the run's.
    enc = ecgforge.load_encoder("hf://ecg-lab/tiny-simclr")
    assert not enc.training and enc.contract["fs_hz"] == 100.0 and enc.contract["leads"] == LEADS
    assert enc.contract["hub"] == {"repo_id": "ecg-lab/tiny-simclr", "revision": "main",
                                   "commit": repo.branches["main"]}
    x = x_of(work)
    assert torch.equal(embed_all(enc, x), embed_all(load_encoder(work["run"]), x))
    # Without a token (and an empty cache) the private repository is not there for the client, and a push is
    # refused: one line each, saying what to set.
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubError, match="no such repository .*HF_TOKEN") as err:
        load_encoder("hf://ecg-lab/tiny-simclr")
    assert "\n" not in str(err.value)
    line = one_line_error(cli.invoke(app, ["push", str(work["export"]), "--repo", "ecg-lab/tiny-simclr"]))
    assert "401" in line and "HF_TOKEN" in line


def test_push_an_export_as_is_and_refuse_a_damaged_one(work: dict[str, Path], hub: HubStandIn,
                                                        tmp_path: Path) -> None:
    assert is_export(work["export"]) and not is_export(work["run"])
    info = push(work["export"], "ecg-lab/as-is")
    assert not info["exported"] and info["files"] == ["README.md", "encoder.json", "encoder.safetensors",
                                                      "results.json"]
    assert hub.files("ecg-lab/as-is")["README.md"] == (work["export"] / "README.md").read_bytes()
    assert not hub.repos["ecg-lab/as-is"].private
    # Weights changed after the export (same keys and shapes): the recorded sha256 no longer holds.
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("README.md", "encoder.json", "results.json"):
        (bad / f).write_bytes((work["export"] / f).read_bytes())
    save_file({k: v + 1 for k, v in load_file(str(work["export"] / "encoder.safetensors")).items()},
              str(bad / "encoder.safetensors"))
    n_commits = len(hub.repos["ecg-lab/as-is"].commits)
    line = one_line_error(cli.invoke(app, ["push", str(bad), "--repo", "ecg-lab/as-is"]))
    assert "sha256" in line and len(hub.repos["ecg-lab/as-is"].commits) == n_commits
    with pytest.raises(EncoderLoadError, match="sha256"):
        load_encoder(bad)


def test_revision_pinning(work: dict[str, Path], hub: HubStandIn) -> None:
    repo = "ecg-lab/pinned"
    first = push(work["run"], repo)["commit"]
    second = push(work["other"], repo)["commit"]
    assert first != second
    assert push(work["run"], repo, revision="v1")["revision"] == "v1"  # a branch made from main, then committed
    h_run, h_other = state_dict_hash(load_encoder(work["run"])), state_dict_hash(load_encoder(work["other"]))
    assert h_run != h_other
    assert state_dict_hash(load_encoder(f"hf://{repo}")) == h_other  # main moved on
    assert state_dict_hash(load_encoder(f"hf://{repo}@{first}")) == h_run  # a commit pins it
    assert state_dict_hash(load_encoder(f"hf://{repo}@v1")) == h_run  # so does a branch
    assert load_encoder(f"hf://{repo}@{first}").contract["hub"]["commit"] == first
    with pytest.raises(HubError, match="no such revision"):
        load_encoder(f"hf://{repo}@v9")
    with pytest.raises(HubError, match="no such repository"):
        load_encoder("hf://ecg-lab/absent")


def test_offline_mode_uses_the_cache_and_sends_nothing(work: dict[str, Path], hub: HubStandIn,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = "ecg-lab/offline"
    commit = push(work["run"], repo)["commit"]
    z = embed_all(load_encoder(f"hf://{repo}"), x_of(work))  # fills the cache
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    n = len(hub.log)
    enc = load_encoder(f"hf://{repo}")
    assert torch.equal(embed_all(enc, x_of(work)), z) and enc.contract["hub"]["commit"] == commit
    assert torch.equal(embed_all(load_encoder(f"hf://{repo}@{commit}"), x_of(work)), z)
    assert len(hub.log) == n  # not one request
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and it is not in the local cache"):
        load_encoder(f"hf://{repo}@v2")
    line = one_line_error(cli.invoke(app, ["push", str(work["run"]), "--repo", repo]))
    assert "HF_HUB_OFFLINE" in line and len(hub.log) == n


def test_recipe_init_and_embed_from_the_hub(work: dict[str, Path], hub: HubStandIn, tmp_path: Path) -> None:
    push(work["run"], "ecg-lab/init")
    recipe = tmp_path / "init.toml"
    recipe.write_text(f"""
schema_version = 1
name = "from-hub"
[data]
cache = "{work['cache']}"
window_s = 2.5
splits = {SPLITS}
[model]
init = "hf://ecg-lab/init@main"
[[eval]]
kind = "linear_probe"
task = "rhythm"
""")
    r = load_run_recipe(recipe)
    assert r.model.encoder.model_dump() == json.loads((work["run"] / "encoder.json").read_text())["config"]
    cache = Cache(work["cache"])
    enc = initial_encoder(r.model, fs_hz=cache.fs_hz, leads=cache.leads, source=str(cache.path))
    assert enc.training and state_dict_hash(enc) == state_dict_hash(load_encoder(work["run"]))
    # A cache the encoder was not trained for is refused as for a local init (contract checked).
    with pytest.raises(EncoderLoadError, match="model.init = 'hf://ecg-lab/init@main'"):
        initial_encoder(r.model, fs_hz=50.0, leads=cache.leads, source="c50.h5")
    # `ecgforge embed hf://...` writes the same embeddings as from the run directory.
    out_hub, out_run = tmp_path / "hub.h5", tmp_path / "run.h5"
    res = cli.invoke(app, ["embed", "hf://ecg-lab/init", "--cache", str(work["cache"]), "--out", str(out_hub)])
    assert res.exit_code == 0, res.output
    assert cli.invoke(app, ["embed", str(work["run"]), "--cache", str(work["cache"]), "--out", str(out_run)]).exit_code == 0
    a, b = read_embeddings(out_hub), read_embeddings(out_run)
    np.testing.assert_array_equal(a["embedding"], b["embedding"])
    assert a["attrs"]["encoder"] == "hf://ecg-lab/init"


def test_environment_variables_drive_a_subprocess(work: dict[str, Path], hub: HubStandIn, tmp_path: Path) -> None:
    """HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE as a user sets them, through the installed command line."""
    push(work["run"], "ecg-lab/env")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "env-cache"),
           "HF_TOKEN": "hf_standin_write_token", "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    code = "import sys, ecgforge; e = ecgforge.load_encoder(sys.argv[1]); print(e.contract['hub']['commit'])"
    online = subprocess.run([sys.executable, "-c", code, "hf://ecg-lab/env"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert online.returncode == 0, online.stderr[-2000:]
    assert online.stdout.strip() == hub.repos["ecg-lab/env"].branches["main"]
    n = len(hub.log)
    out = tmp_path / "e.h5"
    offline = subprocess.run([sys.executable, "-m", "ecgforge", "embed", "hf://ecg-lab/env", "--cache",
                              str(work["cache"]), "--out", str(out)], env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert len(hub.log) == n and len(read_embeddings(out)["record_id"]) == len(Cache(work["cache"]))


def test_without_the_extra_an_hf_path_says_what_to_install(work: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "huggingface_hub" or m.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(HubError, match=r"pip install 'ecgforge\[hub\]'") as err:
        load_encoder("hf://ecg-lab/tiny")
    assert "\n" not in str(err.value)
    line = one_line_error(cli.invoke(app, ["embed", "hf://ecg-lab/tiny", "--cache", str(work["cache"]),
                                           "--out", str(tmp_path / "e.h5")]))
    assert "pip install 'ecgforge[hub]'" in line and not (tmp_path / "e.h5").exists()
    line = one_line_error(cli.invoke(app, ["push", str(work["run"]), "--repo", "ecg-lab/tiny"]))
    assert "pip install 'ecgforge[hub]'" in line
    # Local paths never need it.
    assert load_encoder(work["export"]).contract["fs_hz"] == 100.0


def test_malformed_hf_paths_are_one_line() -> None:
    assert parse("hf://org/name@refs/pr/1").revision == "refs/pr/1"
    for bad in ("hf://name-only", "hf://org/name@", "hf://org/na me", "hf://../x"):
        with pytest.raises(HubError, match="expected hf://ORG/NAME"):
            load_encoder(bad)
    with pytest.raises(HubError, match="--revision"):
        push(".", "org/name@v1")


# ------------------------------------------------------------------------------------ create_encoder, hub


def test_create_encoder_fresh_and_pretrained(work: dict[str, Path]) -> None:
    torch.manual_seed(0)
    enc = ecgforge.create_encoder("resnet1d", depth=18)
    assert isinstance(enc, torch.nn.Module) and enc.training and enc.embed_dim == 512
    assert enc(torch.zeros(2, 12, 250)).shape == (2, 512)
    x = x_of(work)
    for src in (work["run"], work["export"]):
        pre = ecgforge.create_encoder("resnet1d", pretrained=src)
        assert torch.equal(embed_all(pre, x), embed_all(ecgforge.load_encoder(src), x))
        assert pre.contract["window_s"] == 2.5
    assert ecgforge.create_encoder("resnet1d", pretrained=work["export"], width=8, depth=18).embed_dim == 64
    with pytest.raises(EncoderLoadError, match=r"width=16 \(saved 8\)"):
        ecgforge.create_encoder("resnet1d", pretrained=work["export"], width=16)
    with pytest.raises(EncoderLoadError, match="holds a 'resnet1d' encoder, not 'xresnet1d'"):
        ecgforge.create_encoder("xresnet1d", pretrained=work["export"])
    with pytest.raises(UserError, match="registered: cpc, .*resnet1d"):
        ecgforge.create_encoder("resnet")
    with pytest.raises(UserError, match="depthh"):
        ecgforge.create_encoder("resnet1d", depthh=18)


def test_create_encoder_from_the_hub(work: dict[str, Path], hub: HubStandIn) -> None:
    push(work["export"], "ecg-lab/factory")
    x = x_of(work)
    enc = ecgforge.create_encoder("resnet1d", pretrained="hf://ecg-lab/factory")
    assert torch.equal(embed_all(enc, x), embed_all(load_encoder(work["export"]), x))


def test_torch_hub_load_local(work: dict[str, Path]) -> None:
    import hubconf  # the repository root is on sys.path under pytest (rootdir) and under torch.hub.load

    assert set(ENCODERS) <= {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    torch.manual_seed(0)
    enc = torch.hub.load(str(ROOT), "resnet1d", source="local", depth=18, width=8, trust_repo=True)
    assert enc.embed_dim == 64 and enc(torch.zeros(1, 12, 250)).shape == (1, 64)
    pre = torch.hub.load(str(ROOT), "resnet1d", source="local", pretrained=str(work["export"]))
    x = x_of(work)
    assert torch.equal(embed_all(pre, x), embed_all(load_encoder(work["export"]), x))
    assert torch.hub.load(str(ROOT), "cpc", source="local").embed_dim > 0
