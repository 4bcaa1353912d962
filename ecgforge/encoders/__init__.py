"""Encoders: ``x (B, leads, T) -> z (B, embed_dim)``.

Every encoder is an ``nn.Module`` with:
    ``forward(x)`` -> ``(B, embed_dim)`` pooled embedding,
    ``forward_features(x)`` -> ``(B, C, T')`` sequence features,
    ``embed_dim`` (int), ``downsample`` (input samples per feature step), ``receptive_field`` (samples).
Add one: write ``<name>.py`` with its ``<Name>Config`` and the module (``Config = <Name>Config``, built as
``cls(cfg, ctx)``), then add one line to the table; CONTRIBUTING.md shows a whole file.
"""

from ecgforge.registry import Table

ENCODERS = Table(
    "encoders",
    {
        "resnet1d": "ecgforge.encoders.resnet1d:ResNet1d",
        "xresnet1d": "ecgforge.encoders.xresnet1d:XResNet1d",
        "cpc": "ecgforge.encoders.cpc:CPC",
        "wav2vec2": "ecgforge.encoders.wav2vec2:Wav2Vec2",
        "ecgfounder": "ecgforge.encoders.ecgfounder:ECGFounder",
        "merl_resnet": "ecgforge.encoders.merl:MERLResNet",
        "st_mem": "ecgforge.encoders.st_mem:STMEM",
        "ecg_jepa": "ecgforge.encoders.ecg_jepa:ECGJEPA",
        "hubert_ecg": "ecgforge.encoders.hubert_ecg:HuBERTECG",
    },
)

__getattr__ = ENCODERS.module_getattr("EncoderConfig")  # the config union, made on first use
