"""Encoders: shapes, geometry attributes, gradients, lead subsets, paper-setting sizes, registry builds."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from ecgforge.encoders import ENCODERS, EncoderConfig
from ecgforge.encoders.cpc import CPC, CPCConfig
from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from ecgforge.encoders.xresnet1d import XResNet1d, XResNet1dConfig
from ecgforge.registry import BuildContext, build
from tests.components import make

# Small widths/depths: the tests check wiring and geometry, not capacity.
SMALL = {
    "xresnet1d": lambda: make(XResNet1d, depth=50, width=8),
    "xresnet1d101": lambda: make(XResNet1d, depth=101, width=4),
    "cpc_linear": lambda: make(CPC, frontend="linear", features=[16, 16], hidden=12),
    "cpc_patches": lambda: make(CPC, features=[16, 16], strides=[5, 2], kernel_sizes=[5, 2], hidden=12),
    "cpc_conv": lambda: make(CPC, frontend="conv", features=[16] * 4, hidden=12, pooling="mean"),
    "wav2vec2": lambda: make(Wav2Vec2, layers=2, dim=32, heads=4, ffn_dim=64, conv_pos=16, conv_pos_groups=4),
    "wav2vec2_prenorm": lambda: make(
        Wav2Vec2,
        conv_layers=[(24, 3, 2), (24, 2, 2)],
        layers=1,
        dim=24,
        heads=2,
        ffn_dim=32,
        conv_pos=8,
        conv_pos_groups=4,
        layer_norm_first=True,
        extractor_mode="layer_norm",
        conv_bias=True,
    ),
}


def expected_steps(name: str, model: nn.Module, t: int) -> int:
    """T' from first principles, independent of the models' own output_length()."""
    if name.startswith("xresnet1d"):
        return -(-t // 32)  # every stride-2 stage uses 'same' padding: ceil at each step
    return model.output_length(t)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("t", [250, 333, 640])
def test_shapes_geometry_and_gradients(name: str, t: int) -> None:
    model = SMALL[name]()
    x = torch.randn(2, 12, t, requires_grad=True)
    feats = model.forward_features(x)
    z = model(x)
    steps = expected_steps(name, model, t)
    assert feats.shape[0] == 2 and feats.shape[-1] == steps
    assert z.shape == (2, model.embed_dim)
    assert torch.isfinite(z).all()
    # downsample is input samples per feature step: T' matches T / downsample up to edge rounding.
    assert abs(steps - t / model.downsample) <= 1
    assert model.receptive_field >= model.downsample
    z.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        if pname != "mask_emb":  # only the masking objective uses mask_emb
            assert p.grad is not None, pname


def test_downsample_is_exact_for_divisible_lengths() -> None:
    t = 32 * 16
    for name, small in SMALL.items():
        model = small()
        # An unpadded conv whose kernel exceeds its stride (wav2vec2_prenorm's k=3, s=2) loses one edge step.
        lost = 1 if name == "wav2vec2_prenorm" else 0
        assert model.forward_features(torch.randn(2, 12, t)).shape[-1] == t // model.downsample - lost, name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_six_lead_input(name: str) -> None:
    """Limb leads only (I, II, III, aVR, aVL, aVF), chest leads zeroed: runs and depends on the given leads."""
    model = SMALL[name]().eval()
    x = torch.zeros(2, 12, 500)
    x[:, :6] = torch.randn(2, 6, 500)
    z = model(x)
    assert z.shape == (2, model.embed_dim) and torch.isfinite(z).all()
    x2 = x.clone()
    # Not a constant offset: wav2vec2's first GroupNorm (one group per channel) removes per-channel DC.
    x2[:, 1] += torch.randn(2, 500)
    assert not torch.allclose(model(x2), z)


def test_cpc_methods() -> None:
    model = make(CPC, frontend="linear", features=[16, 16], strides=[5, 2], kernel_sizes=[5, 2], hidden=12).eval()
    x = torch.randn(2, 12, 400)
    z = model.encode(x)
    c = model.context(z)
    assert z.shape == (2, 40, model.latent_dim) and c.shape == (2, 40, model.hidden)
    assert torch.allclose(model.forward_features(x), c.transpose(1, 2))
    # concat pooling = [mean, max, last] of c over time (ESS's AdaptiveConcatPoolRNN).
    pooled = model(x)
    assert torch.allclose(pooled, torch.cat([c.mean(1), c.amax(1), c[:, -1]], dim=1))
    # The context is causal: changing the future does not change c_t for earlier t.
    x2 = x.clone()
    x2[..., 200:] = 0
    assert torch.allclose(model.context(model.encode(x2))[:, :20], c[:, :20], atol=1e-6)
    assert not torch.allclose(model.context(model.encode(x2))[:, 20:], c[:, 20:])


def test_cpc_linear_frontend_is_patchwise() -> None:
    """The linear front end sees non-overlapping patches: changing patch j only changes latent j."""
    model = make(CPC, frontend="linear", features=[8], strides=[10], hidden=4).eval()
    x = torch.randn(1, 12, 100)
    z = model.encode(x)
    x2 = x.clone()
    x2[..., 30:40] += 1.0
    changed = (model.encode(x2) - z).abs().sum(-1)[0] > 0
    assert changed.tolist() == [i == 3 for i in range(10)]


def test_cpc_config_validation() -> None:
    with pytest.raises(ValidationError):
        CPCConfig(frontend="linear", features=[8, 8], strides=[2, 2], kernel_sizes=[4, 4])
    with pytest.raises(ValidationError):
        CPCConfig(features=[8, 8], strides=[2])
    assert CPCConfig(frontend="conv").strides is None  # filled by the module: 2/2/2/2 with kernels 10/4/4/4
    assert make(CPC, frontend="conv").downsample == 16


def test_wav2vec2_methods() -> None:
    model = SMALL["wav2vec2"]().eval()
    x = torch.randn(2, 12, 800)
    feats = model.extract_features(x)
    assert feats.shape == (2, 50, 256)  # pre-projection conv width of the default front end
    tokens = model.project(feats)
    assert tokens.shape == (2, 50, 32)
    ctx = model.contextualise(tokens)
    assert torch.allclose(model.forward_features(x), ctx.transpose(1, 2))
    assert torch.allclose(model(x), ctx.mean(1))
    # Masking hook: replacing tokens with mask_emb changes the context.
    masked = tokens.clone()
    masked[:, 10:20] = model.mask_emb
    assert not torch.allclose(model.contextualise(masked), ctx)
    # A padding mask removes the padded tokens' influence on the others.
    pad = torch.zeros(2, 50, dtype=torch.bool)
    pad[:, 40:] = True
    noisy = tokens.clone()
    noisy[:, 40:] = torch.randn(2, 10, 32)
    a = model.contextualise(tokens, pad)[:, :40]
    b = model.contextualise(noisy, pad)[:, :40]
    assert torch.allclose(a, b, atol=1e-5)


def test_wav2vec2_feature_grad_mult() -> None:
    torch.manual_seed(0)
    a = make(Wav2Vec2, layers=1, dim=16, heads=2, ffn_dim=16, conv_pos=4, conv_pos_groups=2, feature_grad_mult=1.0)
    b = make(Wav2Vec2, layers=1, dim=16, heads=2, ffn_dim=16, conv_pos=4, conv_pos_groups=2, feature_grad_mult=0.1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 12, 160)
    for m in (a, b):
        m.eval()
        m(x).sum().backward()
    ga = a.feature_extractor.conv_layers[0][0].weight.grad
    gb = b.feature_extractor.conv_layers[0][0].weight.grad
    assert torch.allclose(gb, 0.1 * ga, rtol=1e-4, atol=1e-8)
    # Only the front end is scaled: the transformer's gradients are untouched.
    assert torch.allclose(b.encoder.layers[0].fc1.weight.grad, a.encoder.layers[0].fc1.weight.grad, atol=1e-6)
    frozen = make(Wav2Vec2, layers=1, dim=16, heads=2, ffn_dim=16, conv_pos=4, conv_pos_groups=2, feature_grad_mult=0.0)
    frozen(x).sum().backward()
    assert frozen.feature_extractor.conv_layers[0][0].weight.grad is None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_setting_sizes() -> None:
    with torch.device("meta"):  # shapes only: building 90M parameters costs nothing here
        w2v = make(Wav2Vec2)
    assert 85e6 < n_params(w2v) < 95e6  # Oh et al.: wav2vec2 base, ~90M
    assert w2v.downsample == 16 and w2v.output_length(2500) == 156  # 5 s at 500 Hz -> 156 tokens
    x50, x101 = make(XResNet1d, depth=50), make(XResNet1d, depth=101)
    assert x50.embed_dim == x101.embed_dim == 256  # fastai's 1d xresnet keeps 64-wide bottlenecks
    assert 0.7e6 < n_params(x50) < 1.1e6 and 1.5e6 < n_params(x101) < 2.2e6
    cpc = make(CPC)  # 4 x 512 per-timestep layers + 2-layer LSTM(512)
    assert 4.5e6 < n_params(cpc) < 5.5e6
    assert cpc.downsample == 1 and cpc.embed_dim == 3 * 512


@pytest.mark.parametrize("kind", ["resnet1d", "xresnet1d", "cpc", "wav2vec2"])
def test_registry_builds_default_configs(kind: str) -> None:
    cfg = TypeAdapter(EncoderConfig).validate_python({"kind": kind})
    model = build(ENCODERS, cfg, BuildContext(fs_hz=100.0, window=1000, n_leads=12))
    assert isinstance(model, ENCODERS[kind]) and model.cfg is cfg


def test_configs_forbid_unknown_fields() -> None:
    for cls in (XResNet1dConfig, CPCConfig, Wav2Vec2Config):
        with pytest.raises(ValidationError):
            cls(widht=3)
    with pytest.raises(ValidationError):
        Wav2Vec2Config(dim=100, heads=12)


def test_xresnet1d_concat_pooling_is_the_reference_embedding() -> None:
    """ecg-selfsupervised ``models/resnet_simclr.py`` (``ResNetSimCLR.features`` = the xresnet1d50 up to
    ``head[0]``) and ``models/basic_conv1d.py`` ``AdaptiveConcatPool1d.forward``: ``cat([max, avg], 1)``,
    512-d for xresnet1d50."""
    torch.manual_seed(0)
    model = make(XResNet1d, depth=50, pooling="concat").eval()
    assert model.embed_dim == 512
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        h = model.forward_features(x)
        ref = torch.cat([nn.AdaptiveMaxPool1d(1)(h), nn.AdaptiveAvgPool1d(1)(h)], 1).squeeze(-1)
        torch.testing.assert_close(model(x), ref)
    assert XResNet1dConfig(pooling="concat").pooling == "concat" and XResNet1dConfig().pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        XResNet1dConfig(pooling="max")  # type: ignore[arg-type]
