"""Foundation-model encoders against their reference code (#27).

Fixtures in ``tests/fixtures/foundation/<model>/`` were made by ``benchmarks/foundation_fixtures/make_<model>.py``
running the authors' own code (see each ``provenance.json``): a small configuration of the architecture with
random weights, its input and outputs, and the full-size released layout (key -> shape). Here our encoders load
those weights strictly and must give the reference outputs, and the released layout must map onto our full-size
model exactly. The input contracts are pinned against the references' preprocessing (fixture) or formulas (here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.encoders import ENCODERS
from ecgforge.encoders.ecg_jepa import ECGJEPA, ECGJEPAConfig
from ecgforge.encoders.ecgfounder import ECGFounder, ECGFounderConfig
from ecgforge.encoders.foundation import CheckpointError, FoundationEncoder, apply_filters, normalise
from ecgforge.encoders.hubert_ecg import HuBERTECG, HuBERTECGConfig
from ecgforge.encoders.merl import MERLResNet, MERLResNetConfig
from ecgforge.encoders.st_mem import STMEM, STMEMConfig
from ecgforge.registry import BuildContext, build

from .seeded_weights import seeded_state, state_sha256

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foundation"
ATOL = 1e-4


def _lead_index(names: tuple[str, ...]) -> list[int]:
    return [CANONICAL_LEADS.index(n) for n in names]


def _decimate_concatenated(x: np.ndarray) -> np.ndarray:
    """HuBERT-ECG's dataset.py: ``ecg_data.reshape(-1)`` (leads concatenated) then ``signal.decimate(ecg_data, 5)``."""
    from scipy import signal

    return np.stack([signal.decimate(record.reshape(-1), 5) for record in x])


def _st_mem_tokens(hidden: Tensor) -> Tensor:
    """Reference last-block output (B, 12 * (n + 2), D) -> lead-patch tokens (B, D, 12 * n), SEP removed."""
    b, _, d = hidden.shape
    return hidden.reshape(b, 12, -1, d)[:, :, 1:-1].reshape(b, -1, d).transpose(1, 2)


@dataclass(frozen=True)
class Case:
    cls: type[FoundationEncoder]
    small: Any  # our config equal to the fixture's small reference configuration
    released: str | None = None  # the entry of released_keys.json (None: the file is the layout)
    sequence: str | None = None  # fixture name of the reference's pre-pool output
    seeded: bool = False  # weights drawn by seeded_state (not stored)
    # The reference's input transform written from its code: x (B, 12, T) canonical -> network input.
    reference_prepare: Any = None
    kind: str = ""


CASES: dict[str, Case] = {
    "ecgfounder": Case(
        ECGFounder,
        ECGFounderConfig(base_filters=8, filter_list=(8, 16, 16, 32), m_blocks_list=(2, 1, 2, 1), groups_width=4),
        released="12_lead", sequence="sequence", kind="ecgfounder",
        # dataset.py z_score_normalization: (signal - np.mean(signal)) / (np.std(signal) + 1e-8), whole array.
        reference_prepare=lambda x: (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-8),
    ),
    "merl": Case(
        MERLResNet, MERLResNetConfig(), sequence="sequence", seeded=True, kind="merl_resnet",
        # finetune_dataset.py: (ecg - np.min(ecg)) / (np.max(ecg) - np.min(ecg) + 1e-8); then ecg[[4, 5]] = ecg[[5, 4]].
        reference_prepare=lambda x: ((x - x.min(axis=(1, 2), keepdims=True))
                                     / (x.max(axis=(1, 2), keepdims=True) - x.min(axis=(1, 2), keepdims=True) + 1e-8)
                                     )[:, [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]],
    ),
    "st_mem": Case(
        STMEM, STMEMConfig(seq_len=300, patch_size=30, width=32, depth=2, mlp_dim=64, heads=4, dim_head=8),
        sequence="hidden", kind="st_mem",
        # util/transforms.py Standardize(axis=(-1, -2)): np.divide(x - loc, scale, where=scale != 0), else 0.
        reference_prepare=lambda x: (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True),
    ),
    "ecg_jepa": Case(
        ECGJEPA, ECGJEPAConfig(embed_dim=32, depth=2, heads=4), kind="ecg_jepa",
        # ecg_data.py waves_ptbxl: np.concatenate([data[:, :2], data[:, 6:]], axis=1); no scaling.
        reference_prepare=lambda x: np.concatenate([x[:, :2], x[:, 6:]], axis=1),
    ),
    "hubert_ecg": Case(
        HuBERTECG,
        HuBERTECGConfig(conv_dim=(16,) * 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
        released="base", sequence="hidden", kind="hubert_ecg",
        reference_prepare=_decimate_concatenated,  # the min-max scaling is per record (contract.prepare_record)
    ),
}


def fixture(name: str) -> dict[str, Tensor]:
    return load_file(str(FIXTURES / name / "fixture.safetensors"))


def provenance(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "provenance.json").read_text())


def released_layout(name: str) -> dict[str, list[int]]:
    layout = json.loads((FIXTURES / name / "released_keys.json").read_text())
    entry = CASES[name].released
    return layout[entry] if entry else layout


def reference_state(name: str) -> dict[str, Tensor]:
    """The state dict the reference ran with, in the reference's key layout."""
    if CASES[name].seeded:
        prov = provenance(name)
        state = seeded_state(released_layout(name), prov["seed"])
        assert state_sha256(state) == prov["weights_sha256"], "this torch draws other seeded weights than the fixture's"
        return state
    return {k[len("state."):]: v for k, v in fixture(name).items() if k.startswith("state.")}


def loaded(name: str) -> FoundationEncoder:
    case = CASES[name]
    sd, cfg = case.cls.convert(reference_state(name), name, case.small)
    model = case.cls(cfg).eval()
    model.load_state_dict(sd, strict=True)
    return model


def dropped_by_rule(name: str, key: str) -> bool:
    return any(re.search(rule.pattern, key) for rule in CASES[name].cls.DROP)


def meta_state(layout: dict[str, list[int]]) -> dict[str, Tensor]:
    with torch.device("meta"):
        return {k: torch.empty(shape, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
                for k, shape in layout.items()}


def test_every_fixture_has_its_provenance_and_is_small() -> None:
    for name in CASES:
        prov = provenance(name)
        assert {"repo", "commit", "files", "command", "torch"} <= set(prov), name
        assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]), name
        assert (FIXTURES / name / "fixture.safetensors").stat().st_size < 2_000_000, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_the_reference_output(name: str) -> None:
    """Reference weights, loaded strictly, on the reference input: the reference's features (and pre-pool
    sequence) within 1e-4 in float32."""
    model, fx = loaded(name), fixture(name)
    with torch.no_grad():
        seq = model.network_features(fx["input"])
        z = model.pool(seq)
    assert z.shape == fx["features"].shape
    assert (z - fx["features"]).abs().max() < ATOL
    seq_name = CASES[name].sequence
    if seq_name is not None:
        ref = {"st_mem": _st_mem_tokens, "hubert_ecg": lambda h: h.transpose(1, 2)}.get(name, lambda h: h)(fx[seq_name])
        assert seq.shape == ref.shape and (seq - ref).abs().max() < ATOL
    # Other weights change the output: the comparison can fail.
    with torch.no_grad():
        first = next(model.parameters())
        first.add_(torch.randn(first.shape, generator=torch.Generator().manual_seed(0)))
        assert (model.pool(model.network_features(fx["input"])) - fx["features"]).abs().max() > ATOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_layout_maps_exactly_onto_the_full_size_model(name: str) -> None:
    """The full-size released key list (recorded from the reference class) converts strictly, reads back the
    released architecture (our config's defaults), and our default model has exactly the kept keys and shapes."""
    case = CASES[name]
    layout = released_layout(name)
    sd, cfg = case.cls.convert(meta_state(layout), name)
    assert cfg == case.small.__class__()  # the registry default is the released model
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in case.cls(cfg).state_dict().items()}
    kept = {k: tuple(v) for k, v in layout.items() if not dropped_by_rule(name, k)}
    assert ours == kept
    assert {k: tuple(v.shape) for k, v in sd.items()} == kept


def test_hubert_ecg_sizes_read_from_the_released_layouts() -> None:
    layout = json.loads((FIXTURES / "hubert_ecg" / "released_keys.json").read_text())
    sizes = {}
    for size, keys in layout.items():
        _, cfg = HuBERTECG.convert(meta_state(keys))
        sizes[size] = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size)
    assert sizes == {"small": (512, 8, 8, 2048), "base": (768, 12, 12, 3072), "large": (960, 16, 12, 3840)}


def test_released_layouts_of_the_variants() -> None:
    """ECGFounder's 1-lead model reads lead I; both drop exactly the 150-label head and the unused BatchNorms."""
    layout = json.loads((FIXTURES / "ecgfounder" / "released_keys.json").read_text())
    sd, cfg = ECGFounder.convert(meta_state(layout["1_lead"]))
    assert cfg.in_channels == 1 and cfg.contract.leads == ("I",)
    dropped = set(layout["12_lead"]) - set(ECGFounder.convert(meta_state(layout["12_lead"]))[0])
    assert {k for k in dropped if not re.search(r"(first_bn|bn[123])\.", k)} == {"dense.weight", "dense.bias"}
    with torch.device("meta"):
        n = sum(v.numel() for v in ECGFounder(ECGFounderConfig()).parameters())
    assert 30.5e6 < n < 30.7e6  # 30.7 M with the head, as published


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_renamed_key_is_refused_naming_it(name: str) -> None:
    state = reference_state(name)
    keys = sorted(k for k in state if k.endswith(".weight") and not dropped_by_rule(name, k))
    key = keys[len(keys) // 2]
    bad = {(k.replace("weight", "wieght") if k == key else k): v for k, v in state.items()}
    with pytest.raises(CheckpointError) as err:
        CASES[name].cls.convert(bad, "ckpt.pth", CASES[name].small)
    msg = str(err.value)
    assert key.replace("weight", "wieght") in msg and repr(key) in msg and "\n" not in msg


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_wrong_shape_and_a_missing_key_are_refused(name: str) -> None:
    case = CASES[name]
    state = reference_state(name)
    key = next(k for k, v in state.items() if v.ndim >= 2 and not dropped_by_rule(name, k))
    with pytest.raises(CheckpointError, match=re.escape(key) + r" has shape"):
        case.cls.convert({**state, key: state[key][:, :-1]}, "ckpt.pth", case.small)
    with pytest.raises(CheckpointError, match=r"missing key " + re.escape(repr(key))):
        case.cls.convert({k: v for k, v in state.items() if k != key}, "ckpt.pth", case.small)
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        case.cls.convert({**state, "extra.weight": state[key]}, "ckpt.pth", case.small)


# How each model's released file wraps its state dict (see each module's docstring).
WRAP = {
    "ecgfounder": lambda sd: {"state_dict": sd, "epoch": 10},
    "merl": lambda sd: {f"module.{k}": v for k, v in sd.items()},  # a DistributedDataParallel save
    "st_mem": lambda sd: {"epoch": 799, "model": sd, "optimizer": None, "scaler": None,
                          "config": {"model": {"seq_len": 300, "patch_size": 30, "num_leads": 12}}},
    "ecg_jepa": lambda sd: {"encoder": sd, "epoch": 99},
    "hubert_ecg": lambda sd: {"model_config": ConfigStandIn(num_attention_heads=4, conv_stride=[4, 2, 2, 2, 2]),
                              "model_state_dict": sd, "optimizer_state_dict": {}},
}


class ConfigStandIn:
    """A pickled configuration object (HuBERT-ECG's ``.pt`` holds a ``HuBERTECGConfig``): read as plain data."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def test_hubert_ecg_reads_its_config_from_the_pt_and_the_hub_layout(tmp_path: Path) -> None:
    """The heads are not in the weights: the ``.pt``'s pickled config (read without running it) or the Hub's
    ``config.json`` supplies them; the Hub's ``model.safetensors`` with old ``weight_g`` / ``weight_v`` names loads."""
    state, fx = reference_state("hubert_ecg"), fixture("hubert_ecg")
    torch.save(WRAP["hubert_ecg"](state), tmp_path / "hubert_ecg_small.pt")
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                             "weight_v"): v for k, v in state.items()}
    from safetensors.torch import save_file

    (tmp_path / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "hub" / "model.safetensors"))
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"num_attention_heads": 4, "hidden_size": 32}))
    for path in (tmp_path / "hubert_ecg_small.pt", tmp_path / "hub" / "model.safetensors"):
        model = HuBERTECG.from_checkpoint(path).eval()
        assert model.cfg == CASES["hubert_ecg"].small
        with torch.no_grad():
            assert (model.network_features(fx["input"]).transpose(1, 2) - fx["hidden"]).abs().max() < ATOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_checkpoint_reads_the_released_file_format(name: str, tmp_path: Path) -> None:
    path = tmp_path / "released.pth"
    torch.save(WRAP[name](reference_state(name)), path)
    case = CASES[name]
    model = case.cls.from_checkpoint(path, case.small).eval()
    fx = fixture(name)
    with torch.no_grad():
        assert (model.pool(model.network_features(fx["input"])) - fx["features"]).abs().max() < ATOL
    with pytest.raises(CheckpointError, match="no state dict under"):
        torch.save({"weights": 1}, path)
        case.cls.from_checkpoint(path, case.small)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        case.cls.from_checkpoint(tmp_path / "absent.pth")


def test_merl_whole_model_checkpoint_keeps_only_the_encoder() -> None:
    state = reference_state("merl")
    whole = {**{f"ecg_encoder.{k}": v for k, v in state.items()}, "proj_t.0.weight": torch.zeros(4, 768),
             "lm_model.embeddings.word_embeddings.weight": torch.zeros(8, 768)}
    sd, _ = MERLResNet.convert(whole)
    assert set(sd) == {k for k in state if not k.startswith("linear.")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_feeds_the_network_its_own_input(name: str) -> None:
    """``forward`` on ecgforge's canonical mV window equals the network on the reference's own transform of it."""
    case = CASES[name]
    model = loaded(name)
    t = model.contract.window if name != "st_mem" else case.small.seq_len
    t = 1000 if name == "hubert_ecg" else t
    if name == "ecgfounder":
        t = 1000
    x = torch.randn(2, 12, t, dtype=torch.float64).mul(0.5).add(0.1).float()
    ref_in = torch.from_numpy(np.ascontiguousarray(case.reference_prepare(x.double().numpy()))).float()
    with torch.no_grad():
        assert (model(x) - model.pool(model.network_features(ref_in))).abs().max() < ATOL
        assert (model.forward_features(x) - model.network_features(ref_in)).abs().max() < ATOL


def test_contract_preprocessing_matches_the_reference() -> None:
    """ECGFounder's util.filter_bandpass + z-score and ST-MEM's eval transforms, recorded from their code."""
    for name, cfg in (("ecgfounder", ECGFounderConfig()), ("st_mem", STMEMConfig())):
        fx, c = fixture(name), cfg.contract
        y = normalise(torch.from_numpy(apply_filters(fx["raw"].numpy(), c.fs_hz, c.filters))[None], c.normalisation)[0]
        assert (y - fx["prepared"]).abs().max() < 1e-8, name
        # The public entry points: record-scope (ECGFounder) or window-scope (ST-MEM) filters, then the encoder's
        # own window normalisation; float32.
        raw = fx["raw"].numpy()
        filtered = c.prepare_record(raw) if c.filter_scope == "record" else c.prepare_window(raw)
        y32 = normalise(torch.from_numpy(filtered)[None], c.normalisation)[0]
        assert y32.dtype == torch.float32 and (y32 - fx["prepared"]).abs().max() < 1e-5, name
        assert np.array_equal(c.prepare_window(raw) if c.filter_scope == "record" else c.prepare_record(raw),
                              raw.astype(np.float32)), name  # the other scope leaves the signal as it is
    fx, hubert = fixture("hubert_ecg"), HuBERTECG(CASES["hubert_ecg"].small)
    record = hubert.contract.prepare_record(fx["raw"].numpy())  # utils.ecg_preprocessing: FIR band-pass, scaling
    assert np.abs(record - fx["record"].numpy()).max() < 1e-6
    sequence = hubert.prepare(torch.from_numpy(record[:, :2500]).double()[None])[0]  # dataset.py: 5 s, concat, decimate
    assert (sequence - fx["sequence"]).abs().max() < 1e-6
    flat = normalise(torch.full((1, 12, 100), 3.0), STMEMConfig().contract.normalisation)
    assert torch.equal(flat, torch.zeros_like(flat))  # Standardize: 0 where std == 0


def test_contracts_say_what_each_model_takes() -> None:
    founder, merl, st_mem, jepa = (c().contract for c in (ECGFounderConfig, MERLResNetConfig, STMEMConfig, ECGJEPAConfig))
    assert (founder.fs_hz, founder.window) == (500.0, 5000) and founder.leads == CANONICAL_LEADS
    assert (merl.fs_hz, merl.window) == (500.0, 5000) and merl.leads[4:6] == ("aVF", "aVL")
    assert (st_mem.fs_hz, st_mem.window, st_mem.filter_scope) == (250.0, 2250, "window")
    assert (jepa.fs_hz, jepa.window, jepa.normalisation.kind) == (250.0, 2500, "none")
    assert _lead_index(jepa.leads) == [0, 1, 6, 7, 8, 9, 10, 11]
    meta = founder.encoder_json()
    assert meta["leads"] == list(CANONICAL_LEADS) and meta["input_contract"]["model"].startswith("ECGFounder")
    json.dumps(meta)  # encoder.json-ready


@pytest.mark.parametrize("name", sorted(CASES))
def test_registry_builds_with_the_convention(name: str) -> None:
    case = CASES[name]
    cfg = ENCODERS.config(case.kind).model_validate(case.small.model_dump())
    model = build(ENCODERS, cfg, BuildContext(fs_hz=case.small.contract.fs_hz))
    assert isinstance(model, case.cls) and model.cfg == case.small
    t = 300 if name == "st_mem" else (2500 if name == "ecg_jepa" else 1000)
    x = torch.randn(2, 12, t)
    z = model(x)
    assert z.shape == (2, model.embed_dim) and torch.isfinite(z).all()
    z.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
