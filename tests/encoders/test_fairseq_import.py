"""fairseq-signals wav2vec2 import: a reference module that names its parameters exactly as fairseq-signals'
``Wav2Vec2Model`` (ConvFeatureExtraction, TransformerEncoder with weight-normed ``pos_conv``,
TransformerSentenceEncoderLayer, GumbelVectorQuantizer, project_q, final_proj) and computes its forward the
fairseq way, written independently of ``ecgforge.encoders.wav2vec2``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgforge.encoders.fairseq_import import (
    FairseqImportError,
    convert_fairseq_wav2vec2,
    load_fairseq_checkpoint,
)
from ecgforge.encoders.wav2vec2 import Wav2Vec2
from ecgforge.registry import BuildContext

D, HEADS, FFN, LAYERS, K_POS, G_POS, C_CONV = 32, 4, 48, 2, 8, 4, 24
CONV = [(C_CONV, 2, 2)] * 3


class RefWeightNormConv(nn.Module):
    """Old ``nn.utils.weight_norm(conv, dim=2)``: parameters ``weight_g (1, 1, K)``, ``weight_v``, ``bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.randn(D, D // G_POS, K_POS) * 0.1)
        self.weight_g = nn.Parameter(torch.rand(1, 1, K_POS) + 0.5)
        self.bias = nn.Parameter(torch.randn(D) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        v = self.weight_v
        w = self.weight_g * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        y = F.conv1d(x, w, self.bias, padding=K_POS // 2, groups=G_POS)
        return F.gelu(y[:, :, :-1] if K_POS % 2 == 0 else y)  # SamePad, GELU


class RefAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:  # x (T, B, D), fairseq's time-first layout
        t, b, _ = x.shape
        hd = D // HEADS
        q = self.q_proj(x) * hd**-0.5
        k, v = self.k_proj(x), self.v_proj(x)

        def heads(y: Tensor) -> Tensor:
            return y.contiguous().view(t, b * HEADS, hd).transpose(0, 1)

        w = torch.softmax(torch.bmm(heads(q), heads(k).transpose(1, 2)), dim=-1)
        out = torch.bmm(w, heads(v)).transpose(0, 1).contiguous().view(t, b, D)
        return self.out_proj(out)


class RefLayer(nn.Module):
    def __init__(self, layer_norm_first: bool) -> None:
        super().__init__()
        self.self_attn = RefAttention()
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, FFN), nn.Linear(FFN, D)
        self.final_layer_norm = nn.LayerNorm(D)
        self.layer_norm_first = layer_norm_first

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        if self.layer_norm_first:
            x = residual + self.self_attn(self.self_attn_layer_norm(x))
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(residual + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class RefEncoder(nn.Module):
    def __init__(self, layer_norm_first: bool) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(RefWeightNormConv())
        self.layers = nn.ModuleList(RefLayer(layer_norm_first) for _ in range(LAYERS))
        self.layer_norm = nn.LayerNorm(D)
        self.layer_norm_first = layer_norm_first

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)
        for layer in self.layers:
            x = layer(x)
        x = x.transpose(0, 1)
        return self.layer_norm(x) if self.layer_norm_first else x


class RefQuantizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vars = nn.Parameter(torch.randn(1, 2 * 5, 8))
        self.weight_proj = nn.Linear(C_CONV, 2 * 5)


class RefWav2Vec2(nn.Module):
    """fairseq-signals ``Wav2Vec2Model`` (quantize_targets=True), parameter for parameter."""

    def __init__(self, layer_norm_first: bool = False) -> None:
        super().__init__()
        self.feature_extractor = nn.Module()
        blocks, c_in = [], 12
        for i, (c, k, s) in enumerate(CONV):
            norm = [nn.GroupNorm(c, c)] if i == 0 else []
            blocks.append(
                nn.Sequential(nn.Conv1d(c_in, c, k, s, bias=False), nn.Dropout(0.0), *norm, nn.GELU())
            )
            c_in = c
        self.feature_extractor.conv_layers = nn.ModuleList(blocks)
        self.post_extract_proj = nn.Linear(C_CONV, D)
        self.mask_emb = nn.Parameter(torch.rand(D))
        self.encoder = RefEncoder(layer_norm_first)
        self.layer_norm = nn.LayerNorm(C_CONV)
        self.quantizer = RefQuantizer()
        self.project_q = nn.Linear(8, 16)
        self.final_proj = nn.Linear(D, 16)
        with torch.no_grad():  # non-trivial norms, so a swapped LayerNorm would show
            for m in self.modules():
                if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)

    def forward(self, source: Tensor) -> Tensor:
        x = source
        for block in self.feature_extractor.conv_layers:
            x = block(x)
        x = self.layer_norm(x.transpose(1, 2))
        return self.encoder(self.post_extract_proj(x))  # features_only, mask=False: (B, T', D)


def ours_from(sd: dict[str, Tensor], cfg: dict | None = None) -> Wav2Vec2:
    state, config = convert_fairseq_wav2vec2(sd, cfg)
    model = Wav2Vec2(config, BuildContext())
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


def assert_same_outputs(ref: RefWav2Vec2, ours: Wav2Vec2) -> None:
    x = torch.randn(2, 12, 203)
    with torch.no_grad():
        expected = ref.eval()(x)
        got = ours.forward_features(x).transpose(1, 2)
    assert got.shape == expected.shape == (2, 25, D)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_pretraining_checkpoint_converts_and_matches() -> None:
    ref = RefWav2Vec2()
    sd = ref.state_dict()
    assert "encoder.pos_conv.0.weight_g" in sd and "quantizer.vars" in sd  # the fairseq layout
    state, config = convert_fairseq_wav2vec2(sd)
    assert (
        config.conv_layers == CONV and config.dim == D and config.layers == LAYERS and config.ffn_dim == FFN
    )
    assert (config.conv_pos, config.conv_pos_groups, config.in_leads) == (K_POS, G_POS, 12)
    assert not any(k.startswith(("quantizer", "project_q", "final_proj")) for k in state)
    ours = ours_from(sd, {"model": {"encoder_attention_heads": HEADS}})
    assert torch.equal(ours.mask_emb, ref.mask_emb)
    assert_same_outputs(ref, ours)


def test_cfg_sets_what_shapes_cannot_say() -> None:
    ref = RefWav2Vec2(layer_norm_first=True)
    cfg = {
        "model": {
            "_name": "wav2vec2_cmsc",
            "conv_feature_layers": f"[({C_CONV}, 2, 2)] * 3",
            "encoder_attention_heads": HEADS,
            "layer_norm_first": True,
            "dropout": 0.0,
            "feature_grad_mult": 0.0,
        }
    }
    ours = ours_from(ref.state_dict(), cfg)
    assert ours.cfg.layer_norm_first and ours.cfg.feature_grad_mult == 0.0 and ours.cfg.heads == HEADS
    assert_same_outputs(ref, ours)


def test_finetuned_layouts() -> None:
    ref = RefWav2Vec2()
    sd = ref.state_dict()
    cfg = {"encoder_attention_heads": HEADS}
    # classic fairseq fine-tuning: w2v_encoder.w2v_model.*, a head, mask_emb removed (apply_mask=False),
    # weight norm saved by the parametrizations API.
    classic = {f"w2v_encoder.w2v_model.{k}": v for k, v in sd.items() if k != "mask_emb"}
    for old, new in (
        ("weight_g", "parametrizations.weight.original0"),
        ("weight_v", "parametrizations.weight.original1"),
    ):
        v = classic.pop(f"w2v_encoder.w2v_model.encoder.pos_conv.0.{old}")
        classic[f"w2v_encoder.w2v_model.encoder.pos_conv.0.{new}"] = v
    classic["w2v_encoder.proj.weight"] = torch.randn(5, D)
    classic["w2v_encoder.proj.bias"] = torch.randn(5)
    assert_same_outputs(ref, ours_from(classic, cfg))
    # fairseq-signals >= 2023: encoder.*, positional conv at conv_pos.pos_conv.0, head at proj.
    new_layout = {}
    for k, v in sd.items():
        k = k.replace("encoder.pos_conv.0.", "conv_pos.pos_conv.0.")
        new_layout[f"encoder.{k}"] = v
    new_layout["proj.weight"] = torch.randn(5, D)
    assert_same_outputs(ref, ours_from(new_layout, cfg))


def test_unknown_and_misshaped_keys_are_errors() -> None:
    sd = RefWav2Vec2().state_dict()
    with pytest.raises(FairseqImportError, match="unknown keys.*ema"):
        convert_fairseq_wav2vec2({**sd, "ema.encoder.weight": torch.zeros(1)})
    bad = dict(sd)
    bad["encoder.layers.1.fc1.weight"] = torch.zeros(FFN + 1, D)
    with pytest.raises(FairseqImportError, match="fc1.weight"):
        convert_fairseq_wav2vec2(bad)
    with pytest.raises(FairseqImportError, match="lacks"):
        convert_fairseq_wav2vec2({k: v for k, v in sd.items() if k != "encoder.layers.0.fc2.bias"})
    with pytest.raises(FairseqImportError, match="conv_feature_layers"):
        convert_fairseq_wav2vec2(sd, {"conv_feature_layers": "__import__('os').getcwd()"})


class OmegaNode:
    """Stands in for an OmegaConf node: state ``{'_val': ...}``; loading must never call this class."""

    def __init__(self, val: object) -> None:
        self._val = val

    def __setstate__(self, state: dict) -> None:
        raise AssertionError("the loader executed a class from the checkpoint")


class OmegaDict(OmegaNode):
    def __init__(self, content: dict) -> None:
        self._content = {k: OmegaNode(v) if not isinstance(v, OmegaNode) else v for k, v in content.items()}


def test_load_checkpoint_file_with_pickled_config(tmp_path: Path) -> None:
    ref = RefWav2Vec2(layer_norm_first=True)
    cfg = OmegaDict({"model": OmegaDict({"encoder_attention_heads": HEADS, "layer_norm_first": True})})
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"model": ref.state_dict(), "cfg": cfg, "optimizer_history": []}, path)
    with pytest.raises(Exception):  # noqa: B017 - plain weights_only refuses the foreign classes
        torch.load(path, weights_only=True)
    model = load_fairseq_checkpoint(path)
    assert model.cfg.layer_norm_first and model.cfg.heads == HEADS
    assert_same_outputs(ref, model.eval())


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FairseqImportError, match="no such"):
        load_fairseq_checkpoint(tmp_path / "missing.pt")
    path = tmp_path / "not_fairseq.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(FairseqImportError, match="'model'"):
        load_fairseq_checkpoint(path)


def test_default_heads_assume_64_wide() -> None:
    """Without a cfg, heads = dim // 64 (fairseq configs use 64-wide heads) and dropouts are Oh et al.'s."""
    ref = RefWav2Vec2()
    _, config = convert_fairseq_wav2vec2(ref.state_dict())
    assert config.heads == max(D // 64, 1) == 1
    assert math.isclose(config.dropout, 0.1)
