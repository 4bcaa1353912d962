"""A foundation model's released checkpoint on the Hugging Face Hub: ``model.init = "KIND:hf://ORG/NAME/FILE[@REV]"``
(and ``ecgforge embed``, ``load_encoder``, ``create_encoder``, the leakage guard and the licence it carries).

No test touches the network: the files are published, in each model's released layout (random weights of the
fidelity fixtures' small configurations: ECGFounder's ``.pth``, HuBERT-ECG's Hub ``model.safetensors`` with its
``config.json``), on ``tests.hub_standin.HubStandIn`` through ``huggingface_hub`` itself, and downloaded by
``hf_hub_download`` into a temporary cache. What the Hub gives must load exactly as the same file given by its
local path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import ecgforge
from ecgforge.app.embed import read_embeddings
from ecgforge.app.leakage import derived_from, init_checkpoint
from ecgforge.app.recipes import load_run_recipe
from ecgforge.cli import app
from ecgforge.data.pretraining_sets import licence_line
from ecgforge.encoder_files import load_encoder
from ecgforge.hub import HubError, init_hub_path, parse
from ecgforge.recipe import Recipe
from tests.app.test_suites_foundation import released_file
from tests.encoders.test_foundation import reference_state
from tests.hub_standin import HubStandIn
from tests.test_encoder_files import SPLITS, make_cache, one_line_error

hf = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants as hf_constants  # noqa: E402 - after the importorskip

pytestmark = pytest.mark.usefixtures("one_torch_thread")
cli = CliRunner()

FOUNDER = "ecg-lab/ECGFounder"  # stand-ins for PKUDigitalHealth/ECGFounder and Edoardo-BS/hubert-ecg-base
HUBERT = "ecg-lab/hubert-ecg-base"


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """A fresh stand-in Hub, huggingface_hub pointed at it, an empty cache, a write token (as test_hub's)."""
    with HubStandIn() as standin:
        point_at(monkeypatch, standin.url, tmp_path / "hf-cache")
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_standin_write_token")
        yield standin


def point_at(monkeypatch: pytest.MonkeyPatch, url: str, cache: Path) -> None:
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))


def publish(repo_id: str, folder: Path) -> str:
    """Every file of ``folder`` committed to ``repo_id`` on the stand-in (created if absent); the commit hash."""
    api = hf.HfApi()
    api.create_repo(repo_id, exist_ok=True)
    ops = [hf.CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in sorted(folder.iterdir())]
    return api.create_commit(repo_id, operations=ops, commit_message="release").oid


def founder_release(root: Path) -> Path:
    """``12_lead_ECGFounder.pth`` as released (``{"state_dict": ..., "epoch": ...}``), small, in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    released_file("ecgfounder", root / "tmp").rename(root / "12_lead_ECGFounder.pth")
    (root / "tmp").rmdir()
    return root / "12_lead_ECGFounder.pth"


def hubert_release(root: Path) -> Path:
    """The Hub's ``model.safetensors`` (``save_pretrained`` names: ``weight_g`` / ``weight_v``) and ``config.json``,
    whose head count the weights do not hold (4; inferred from the width it would be 1)."""
    root.mkdir(parents=True, exist_ok=True)
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                             "weight_v"): v.contiguous()
           for k, v in reference_state("hubert_ecg").items()}
    save_file(old, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"num_attention_heads": 4, "hidden_size": 32}))
    return root / "model.safetensors"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("kind", "repo", "release"), [("ecgfounder", FOUNDER, founder_release),
                                                         ("hubert_ecg", HUBERT, hubert_release)])
def test_a_released_file_from_the_hub_loads_as_the_local_file(kind: str, repo: str, release, hub: HubStandIn,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = release(tmp_path / "release")
    commit = publish(repo, local.parent)
    init = f"{kind}:hf://{repo}/{local.name}"
    enc, want = load_encoder(init), load_encoder(f"{kind}:{local}")
    assert same_weights(enc, want) and not enc.training
    assert enc.contract["hub"] == {"repo_id": repo, "revision": "main", "file": local.name, "commit": commit}
    assert {k: v for k, v in enc.contract.items() if k != "hub"} == want.contract
    # In huggingface_hub's cache, the files its reader uses beside it too (HuBERT-ECG's heads: config.json).
    snapshot = Path(hf_constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in local.parent.iterdir())
    if kind == "hubert_ecg":
        assert enc.contract["config"]["num_attention_heads"] == 4
    # A commit pins it; offline, the cache answers without one request.
    assert same_weights(load_encoder(f"{init}@{commit}"), want)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    n = len(hub.log)
    assert same_weights(load_encoder(init), want) and len(hub.log) == n
    with pytest.raises(HubError) as err:
        load_encoder(f"{init}@v2")
    line = str(err.value)
    assert line.startswith(f"{init}@v2: HF_HUB_OFFLINE is set and it is not in the local cache") and "\n" not in line
    assert "give its local path (KIND:PATH)" in line


def test_create_encoder_and_the_recipe_take_the_hub_file(hub: HubStandIn, tmp_path: Path) -> None:
    local = founder_release(tmp_path / "release")
    publish(FOUNDER, local.parent)
    want = load_encoder(f"ecgfounder:{local}")
    assert same_weights(ecgforge.create_encoder("ecgfounder", pretrained=f"hf://{FOUNDER}/{local.name}"), want)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
schema_version = 1
name = "founder-from-hub"
[data]
cache = "{tmp_path / 'c.h5'}"
splits = {SPLITS}
[model]
init = "ecgfounder:hf://{FOUNDER}/{local.name}@main"
[[eval]]
kind = "linear_probe"
task = "rhythm"
""")
    r = load_run_recipe(recipe)
    assert r.model.encoder == want.cfg  # the config read from the Hub file, as from the local one


def test_embed_from_the_hub_writes_what_the_local_file_writes(hub: HubStandIn, tmp_path: Path) -> None:
    local = founder_release(tmp_path / "release")
    publish(FOUNDER, local.parent)
    cache = make_cache(tmp_path, "syn-100hz", fs_hz=100.0, n_patients=2)
    out = {}
    for name, init in (("hub", f"ecgfounder:hf://{FOUNDER}/{local.name}"), ("local", f"ecgfounder:{local}")):
        out[name] = tmp_path / f"{name}.h5"
        res = cli.invoke(app, ["embed", init, "--cache", str(cache), "--out", str(out[name])])
        assert res.exit_code == 0, res.output
    a, b = read_embeddings(out["hub"]), read_embeddings(out["local"])
    assert len(a["embedding"]) == 4
    np.testing.assert_array_equal(a["embedding"], b["embedding"])
    assert a["attrs"]["encoder"] == f"ecgfounder:hf://{FOUNDER}/{local.name}"


# -------------------------------------------------------------------------------------------- one line


def test_a_missing_file_repo_or_hub_is_one_line(hub: HubStandIn, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    local = founder_release(tmp_path / "release")
    publish(FOUNDER, local.parent)
    init = f"ecgfounder:hf://{FOUNDER}/1_lead_ECGFounder.pth"
    with pytest.raises(HubError) as err:
        load_encoder(init)
    assert str(err.value) == f"{init}: the repository lacks 1_lead_ECGFounder.pth on {hub.url}"
    line = one_line_error(cli.invoke(app, ["embed", init, "--cache", str(tmp_path / "absent.h5"),
                                           "--out", str(tmp_path / "e.h5")]))
    assert "lacks 1_lead_ECGFounder.pth" in line and not (tmp_path / "e.h5").exists()
    with pytest.raises(HubError, match="no such repository .*HF_TOKEN"):
        load_encoder(f"ecgfounder:hf://ecg-lab/absent/{local.name}")
    with pytest.raises(HubError, match="no such revision"):
        load_encoder(f"ecgfounder:hf://{FOUNDER}/{local.name}@v9")
    # No Hub to reach (a closed port) and nothing cached: say so, and what to do instead. (huggingface_hub
    # retries a refused connection five times over 23 s; the waits are skipped here.)
    point_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "other-cache")
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with pytest.raises(HubError) as err:
        load_encoder(f"ecgfounder:hf://{FOUNDER}/{local.name}")
    line = str(err.value)
    assert "http://127.0.0.1:9 cannot be reached and it is not in the local cache" in line and "\n" not in line
    assert "download 12_lead_ECGFounder.pth yourself and give its local path (KIND:PATH)" in line


MALFORMED = [
    ("ecgfounder:hf://PKUDigitalHealth/ECGFounder", "name the checkpoint file in the repository"),
    ("ecgfounder:hf://PKUDigitalHealth/ECGFounder/@main", "expected hf://ORG/NAME"),
    ("ecgfounder:hf://PKUDigitalHealth/ECGFounder/../x.pth", "expected hf://ORG/NAME"),
    ("ecgfounder:hf://only-a-name", "expected hf://ORG/NAME"),
    ("ecgfounder:hf://PKUDigitalHealth/ECGFounder/12_lead_ECGFounder.pth@", "expected hf://ORG/NAME"),
    ("hf://PKUDigitalHealth/ECGFounder/12_lead_ECGFounder.pth",
     "names a file, but an ecgforge export is hf://ORG/NAME"),
]


@pytest.mark.parametrize(("init", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_id_is_one_line_naming_model_init(init: str, message: str, tmp_path: Path) -> None:
    """Refused before anything is downloaded (no Hub here at all): by load_encoder, and by the recipe schema
    that ``ecgforge validate`` / ``run`` read, naming ``model.init``."""
    with pytest.raises(HubError) as err:
        load_encoder(init)
    assert str(err.value).startswith(f"{init}: ") and message in str(err.value) and "\n" not in str(err.value)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'schema_version = 1\nname = "m"\n[data]\ncache = "c.h5"\n[model]\ninit = "{init}"\n')
    line = one_line_error(cli.invoke(app, ["validate", str(recipe)]))
    assert line.startswith(f"error: {recipe}: model.init: {init}: ") and message in line, line


def test_the_id_is_parsed_in_one_place() -> None:
    assert init_hub_path("ecgfounder:hf://PKUDigitalHealth/ECGFounder/12_lead_ECGFounder.pth@v1") == parse(
        "hf://PKUDigitalHealth/ECGFounder/12_lead_ECGFounder.pth@v1", file=True)
    p = parse("hf://org/name/sub/model.safetensors@refs/pr/1", file=True)
    assert (p.repo_id, p.filename, p.revision) == ("org/name", "sub/model.safetensors", "refs/pr/1")
    assert str(p) == "hf://org/name/sub/model.safetensors@refs/pr/1"
    assert init_hub_path("hf://org/name@v1") == parse("hf://org/name@v1")
    for local in ("ecgfounder:/ckpt/12_lead_ECGFounder.pth", "runs/x", r"C:\runs\x", "C:/runs/x"):
        assert init_hub_path(local) is None
    Recipe.model_validate({"name": "ok", "data": {"cache": "c.h5"},
                           "model": {"init": "hubert_ecg:hf://Edoardo-BS/hubert-ecg-base/model.safetensors"}})


def test_without_the_extra_a_hub_file_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "huggingface_hub" or m.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(HubError, match=r"^ecgfounder:hf://o/n/f.pth: loading .* pip install 'ecgforge\[hub\]'$"):
        load_encoder("ecgfounder:hf://o/n/f.pth")


# ---------------------------------------------------------------------------- leakage guard and licence


@pytest.mark.parametrize(("kind", "file", "model", "commercial"), [
    ("ecgfounder", "12_lead_ECGFounder.pth", "ecgfounder", True),
    ("hubert_ecg", "model.safetensors", "hubert_ecg", False),
])
def test_the_leakage_guard_and_the_card_see_the_same_model(kind: str, file: str, model: str, commercial: bool) -> None:
    """What the KIND names decides, as for a local path; nothing is downloaded for it."""
    on_hub, local = f"{kind}:hf://some-org/some-name/{file}", f"{kind}:/ckpts/{file}"
    a, b = init_checkpoint(on_hub), init_checkpoint(local)
    assert a is not None and a == b and a.id == model and a.commercial is commercial
    assert {k: v for k, v in derived_from(on_hub).items() if k != "init"} == \
        {k: v for k, v in derived_from(local).items() if k != "init"}
    assert ("non-commercial" in licence_line(a)) is not commercial
