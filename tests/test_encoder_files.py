"""Pretrained encoders as artifacts: a tiny quickstart-like run -> export -> load (API, recipe init, embed).

One module-scoped run (synthetic cache of 20 patients, SimCLR for 2 steps, resnet1d width 8) feeds every test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import ecgforge
from ecgforge.app.embed import read_embeddings
from ecgforge.app.recipes import load_run_recipe as load_recipe
from ecgforge.cli import app
from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.encoder_files import EncoderLoadError, check_contract, load_encoder
from ecgforge.errors import UserError
from ecgforge.layers.weights import state_dict_hash

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SPLITS = '{ train = { fold = [1, 2, 3, 4, 5, 6] }, val = { fold = [7, 8] }, test = { fold = [9, 10] } }'


def make_cache(root: Path, name: str, *, fs_hz: float = 100.0, leads: list[str] = LEADS, n_patients: int = 20) -> Path:
    out = root / f"{name}.h5"
    spec = CacheRecipe.model_validate({
        "name": name, "out": str(out),
        "source": {"kind": "synthetic", "path": str(root / f"wfdb-{n_patients}"), "n_patients": n_patients,
                   "records_per_patient": 2, "seed": 0},
        "signal": {"fs_hz": fs_hz, "leads": leads},
    })
    build_cache(spec, workers=1)
    return out


def one_line_error(res: object) -> str:
    assert res.exit_code == 2, res.output  # type: ignore[attr-defined]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output  # type: ignore[attr-defined]
    return lines[0]


def embed_all(enc: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return enc.eval()(x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_quickstart_run(root: Path, *, label_fractions: str, probe_epochs: int) -> tuple[Path, Path, Path]:
    """A small cache, recipes/quickstart.toml run on it (width 8, 2 steps, one probe) and its export, under ``root``.

    The recipe's ``build`` line is dropped: with it, the run would rebuild the small cache given by
    ``--set data.cache=...`` as the 200-patient synthetic one. Returns ``(cache, run_dir, export_dir)``.
    """
    cache = make_cache(root, "syn")
    run_dir, export_dir = root / "runs" / "tiny", root / "export" / "tiny"
    recipe = root / "quickstart.toml"
    recipe.write_text("\n".join(ln for ln in (ROOT / "recipes" / "quickstart.toml").read_text().splitlines()
                                if not ln.startswith("build = ")))
    sets = [
        f"data.cache={json.dumps(str(cache))}", "data.window_s=2.5", f"data.splits={SPLITS}",
        "model.encoder.width=8", "train.max_steps=2", "train.batch_size=8", "train.log_every_steps=1",
        "ssl.projector_hidden=32", "ssl.projector_dim=16", f"eval.0.label_fractions={label_fractions}", "eval.0.seeds=[0]",
        f"eval.0.epochs={probe_epochs}", "eval.0.bootstrap=0",
    ]
    res = cli.invoke(app, ["run", str(recipe), "--out", str(run_dir), *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["export", str(run_dir), "--out", str(export_dir)])
    assert res.exit_code == 0, res.output
    return cache, run_dir, export_dir


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """cache, run (quickstart with --set: width 8, 2 steps), export, and a run that starts from the export."""
    root = tmp_path_factory.mktemp("artifacts")
    cache, run_dir, export_dir = tiny_quickstart_run(root, label_fractions="[1.0]", probe_epochs=5)
    init_recipe = root / "init.toml"
    init_recipe.write_text(f"""
schema_version = 1
name = "from-export"
[data]
cache = "{cache}"
window_s = 2.5
splits = {SPLITS}
[model.encoder]
init = "{export_dir}"
[[eval]]
kind = "linear_probe"
task = "rhythm"
epochs = 5
bootstrap = 0
""")
    init_run = root / "runs" / "from-export"
    res = cli.invoke(app, ["run", str(init_recipe), "--out", str(init_run)])
    assert res.exit_code == 0, res.output
    return {"root": root, "cache": cache, "run": run_dir, "export": export_dir, "init_recipe": init_recipe,
            "init_run": init_run}


def test_run_saves_encoder_with_its_contract(work: dict[str, Path]) -> None:
    meta = json.loads((work["run"] / "encoder.json").read_text())
    assert meta["config"] == {"kind": "resnet1d", "depth": 18, "width": 8, "kernel_size": 7, "stem_kernel": 15,
                              "fc": False, "in_leads": 12}
    assert meta["fs_hz"] == 100.0 and meta["window_s"] == 2.5 and meta["leads"] == LEADS
    assert meta["units"] == "mV" and meta["normalisation"] and meta["ecgforge_version"] == ecgforge.__version__
    assert len(meta["recipe_hash"]) == 16 and meta["pretrained"] == "simclr" and meta["embed_dim"] == 64
    import hashlib

    assert meta["weights_sha256"] == hashlib.sha256((work["run"] / "encoder.safetensors").read_bytes()).hexdigest()


def test_export_is_self_describing_and_loads(work: dict[str, Path]) -> None:
    exp = work["export"]
    assert {"encoder.json", "encoder.safetensors", "README.md"} <= {p.name for p in exp.iterdir()}
    card = (exp / "README.md").read_text()
    results = json.loads((work["run"] / "results.json").read_text())
    auroc = next(r["metrics"]["macro_auroc"] for r in results["eval"] if r["init"] == "pretrained")
    assert "| linear_probe | rhythm | pretrained | 1 | - | test | macro_auroc | " + f"{auroc:.4f}" in card
    assert 'kind = "simclr"' in card and "100.0 Hz" in card and "I II III aVR aVL aVF V1 V2 V3 V4 V5 V6" in card
    enc = ecgforge.load_encoder(exp)
    assert not enc.training and enc.contract["fs_hz"] == 100.0
    # Not random: the weights are the run's, bit for bit.
    assert state_dict_hash(enc) == state_dict_hash(load_encoder(work["run"]))
    # An occupied destination is refused unless --overwrite.
    assert "--overwrite" in one_line_error(cli.invoke(app, ["export", str(work["run"]), "--out", str(exp)]))


def test_api_export_and_recipe_init_give_identical_embeddings(work: dict[str, Path]) -> None:
    x = torch.from_numpy(Cache(work["cache"]).read(0, 0, 250))[None]
    z_run = embed_all(load_encoder(work["run"]), x)
    z_export = embed_all(load_encoder(work["export"]), x)
    z_init = embed_all(load_encoder(work["init_run"]), x)  # the run that started from `init` and did no [ssl]
    assert torch.equal(z_run, z_export) and torch.equal(z_export, z_init)
    assert json.loads((work["init_run"] / "encoder.json").read_text())["pretrained"] is None
    # A fresh encoder of the same architecture differs: the loaded weights are not left random.
    torch.manual_seed(0)
    from ecgforge.encoders import ENCODERS
    from ecgforge.registry import build

    fresh = build(ENCODERS, load_recipe(work["init_recipe"]).model.encoder)
    assert not torch.allclose(embed_all(fresh, x), z_export)


def test_embed_cli_one_row_per_record_joining_back(work: dict[str, Path]) -> None:
    out = work["root"] / "emb.h5"
    res = cli.invoke(app, ["embed", str(work["export"]), "--cache", str(work["cache"]), "--out", str(out),
                           "--split", "train={fold = [1, 2, 3, 4, 5, 6]}", "--split", "test={fold = [9, 10]}",
                           "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    e, cache = read_embeddings(out), Cache(work["cache"])
    sel = np.isin(cache.fold, [1, 2, 3, 4, 5, 6, 9, 10])
    assert len(e["record_id"]) == sel.sum() == len(set(e["record_id"]))
    assert (cache.record_id[e["cache_index"]] == e["record_id"]).all()
    assert (cache.patient_id[e["cache_index"]] == e["patient_id"]).all()
    assert (cache.fold[e["cache_index"]] == e["fold"]).all()
    assert np.array_equal(cache.labels["rhythm"][e["cache_index"]], e["labels"]["rhythm"])
    assert e["label_names"]["rhythm"] == cache.label_names["rhythm"]
    assert set(e["split"][e["fold"] <= 6]) == {"train"} and set(e["split"][e["fold"] >= 9]) == {"test"}
    assert e["embedding"].shape == (sel.sum(), 64) and e["attrs"]["window"] == 250
    # Each row is the mean of the encoder's embeddings of the record's windows (10 s / 2.5 s = 4 tiles).
    enc = load_encoder(work["export"])
    k = 3
    i = int(e["cache_index"][k])
    x = torch.from_numpy(cache.read(i).reshape(12, 4, 250).transpose(1, 0, 2).copy())
    assert e["n_windows"][k] == 4
    np.testing.assert_allclose(e["embedding"][k], embed_all(enc, x).mean(0).numpy(), rtol=1e-4, atol=1e-5)
    # The same command through the run directory gives the same numbers.
    out2 = work["root"] / "emb_run.h5"
    assert cli.invoke(app, ["embed", str(work["run"]), "--cache", str(work["cache"]), "--out", str(out2)]).exit_code == 0
    e2 = read_embeddings(out2)
    assert len(e2["record_id"]) == len(cache) and set(e2["split"]) == {""}
    np.testing.assert_array_equal(e2["embedding"][e["cache_index"]], e["embedding"])


def test_wrong_sampling_rate_or_lead_order_is_refused(work: dict[str, Path]) -> None:
    root = work["root"]
    c50 = make_cache(root, "syn50", fs_hz=50.0, n_patients=4)
    crev = make_cache(root, "synrev", leads=LEADS[::-1])  # patients in every split: the pre-flight passes
    line = one_line_error(cli.invoke(app, ["embed", str(work["export"]), "--cache", str(c50), "--out", str(root / "x.h5")]))
    assert "100 Hz" in line and "50 Hz" in line and not (root / "x.h5").exists()
    line = one_line_error(cli.invoke(app, ["run", str(work["init_recipe"]), "--out", str(root / "runs" / "rev"),
                                           "--set", f"data.cache={json.dumps(str(crev))}"]))
    assert "another order" in line and "model.init" in line
    with pytest.raises(EncoderLoadError, match="different lead set"):
        check_contract(json.loads((work["export"] / "encoder.json").read_text()), fs_hz=100, leads=LEADS[:6])


def test_preprocess_refuses_unless_asked(work: dict[str, Path]) -> None:
    enc = load_encoder(work["export"])
    sig = Cache(work["cache"]).read(0, 0, 250)
    ref = enc.preprocess(sig, 100, LEADS)
    assert ref.shape == (1, 12, 250) and ref.dtype == torch.float32
    with pytest.raises(EncoderLoadError, match="500 Hz; pass resample=True"):
        enc.preprocess(sig, 500, LEADS)
    with pytest.raises(EncoderLoadError, match="pass reorder=True"):
        enc.preprocess(sig[::-1], 100, LEADS[::-1])
    with pytest.raises(EncoderLoadError, match="lacks V6"):
        enc.preprocess(sig[:11], 100, LEADS[:11], reorder=True)
    assert torch.equal(enc.preprocess(sig[::-1].copy(), 100, LEADS[::-1], reorder=True), ref)
    up = np.repeat(sig, 2, axis=1)  # 200 Hz version of the same samples
    assert enc.preprocess(up, 200, LEADS, resample=True).shape == (1, 12, 250)


def test_missing_unexpected_or_misshapen_weights_are_refused(work: dict[str, Path], tmp_path: Path) -> None:
    state = load_file(str(work["export"] / "encoder.safetensors"))
    cases = {
        "missing": {k: v for k, v in state.items() if k != "stem.0.weight"},
        "unexpected": {**state, "head.weight": torch.zeros(3)},
    }
    for name, sd in cases.items():
        d = tmp_path / name
        shutil.copytree(work["export"], d)
        save_file(sd, str(d / "encoder.safetensors"))
        with pytest.raises(EncoderLoadError, match=f"1 {name}") as err:
            load_encoder(d)
        assert "\n" not in str(err.value)
    d = tmp_path / "shape"
    shutil.copytree(work["export"], d)
    meta = json.loads((d / "encoder.json").read_text())
    meta["config"]["kernel_size"] = 5
    (d / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(EncoderLoadError, match="shape"):
        load_encoder(d)
    # Through the CLI it is one line and exit 2.
    assert "missing" in one_line_error(cli.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]))


def test_recipe_init_forms(work: dict[str, Path], tmp_path: Path) -> None:
    exp = json.dumps(str(work["export"]))
    base = work["init_recipe"]
    r = load_recipe(base)
    assert r.model.init == str(work["export"]) and r.model.encoder.width == 8  # config taken from the export
    r2 = load_recipe(base, ["model.encoder.kind=resnet1d", "model.encoder.width=8"])
    assert r2.model.encoder == r.model.encoder
    with pytest.raises(RecipeError, match="width=16 \\(saved 8\\)"):
        load_recipe(base, ["model.encoder.kind=resnet1d", "model.encoder.width=16"])
    with pytest.raises(RecipeError, match="without `kind`"):
        load_recipe(base, ["model.encoder.width=16"])
    with pytest.raises(RecipeError, match="given twice"):
        load_recipe(base, [f"model.init={json.dumps(str(tmp_path))}"])
    with pytest.raises(RecipeError, match="no such run directory"):
        load_recipe(base, ['model.encoder.init="nowhere/at/all"'])
    # [model] init works too, and resolved.toml (init + the full encoder) validates as it is.
    text = base.read_text().replace("[model.encoder]\n", "[model]\n")
    (tmp_path / "model_init.toml").write_text(text)
    assert load_recipe(tmp_path / "model_init.toml").model == r.model
    assert load_recipe(work["init_run"] / "resolved.toml").model == r.model
    no_model = tmp_path / "no_model.toml"
    no_model.write_text(base.read_text().replace("[model.encoder]\n", "[model]\n").replace(f"init = {exp}\n", ""))
    with pytest.raises(RecipeError, match=r"\[model.encoder\] is required"):
        load_recipe(no_model)


def test_import_ecgforge_stays_cheap() -> None:
    code = "import sys, ecgforge; assert 'torch' not in sys.modules; assert callable(ecgforge.load_encoder)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fairseq_checkpoint_loads_exports_and_embeds_the_same(tmp_path: Path) -> None:
    """A fine-tuned fairseq-signals layout (w2v_encoder.w2v_model.*, old weight norm, head) through load_encoder."""
    from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
    from ecgforge.registry import BuildContext

    cfg = Wav2Vec2Config(conv_layers=[(32, 2, 2)] * 3, layers=2, dim=64, heads=1, ffn_dim=128, conv_pos=8,
                         conv_pos_groups=4)
    ref = Wav2Vec2(cfg, BuildContext()).eval()
    theirs = {}
    for k, v in ref.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        theirs[f"w2v_encoder.w2v_model.{k}"] = v.clone()
    theirs["w2v_encoder.proj.weight"] = torch.zeros(5, 64)
    model_cfg = {"conv_feature_layers": "[(32, 2, 2)] * 3", "encoder_layers": 2, "encoder_embed_dim": 64,
                 "encoder_attention_heads": 1, "encoder_ffn_embed_dim": 128, "conv_pos": 8, "conv_pos_groups": 4}
    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save({"model": theirs, "cfg": {"model": model_cfg}}, ckpt)
    x = torch.randn(2, 12, 400)
    enc = load_encoder(ckpt)
    assert enc.contract["fs_hz"] == 500.0 and enc.contract["assumed"] is True and not enc.training
    assert torch.allclose(embed_all(enc, x), embed_all(ref, x), atol=1e-5)
    res = cli.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "w2v")])
    assert res.exit_code == 0, res.output
    exported = load_encoder(tmp_path / "w2v")
    assert exported.contract["config"]["kind"] == "wav2vec2" and "fairseq-signals" in (tmp_path / "w2v" / "README.md").read_text()
    assert torch.equal(embed_all(exported, x), embed_all(enc, x))
    # A checkpoint with a tensor the encoder has no place for is refused, not half loaded.
    theirs["w2v_encoder.w2v_model.encoder.layers.5.fc1.weight"] = torch.zeros(1)
    torch.save({"model": theirs, "cfg": {"model": model_cfg}}, ckpt)
    with pytest.raises(UserError):
        load_encoder(ckpt)
