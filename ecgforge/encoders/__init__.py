"""Encoders: ``x (B, leads, T) -> z (B, embed_dim)``.

Every encoder is an ``nn.Module`` with:
    ``forward(x)`` -> ``(B, embed_dim)`` pooled embedding,
    ``forward_features(x)`` -> ``(B, C, T')`` sequence features,
    ``embed_dim`` (int), ``downsample`` (input samples per feature step), ``receptive_field`` (samples).
Add one: write ``<name>.py`` with ``<Name>Config`` and the module, then add it to the union and the dict.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.encoders.cpc import CPC, CPCConfig
from ecgforge.encoders.resnet1d import ResNet1d, ResNet1dConfig
from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from ecgforge.encoders.xresnet1d import XResNet1d, XResNet1dConfig

EncoderConfig = Annotated[
    Union[ResNet1dConfig, XResNet1dConfig, CPCConfig, Wav2Vec2Config],  # noqa: UP007
    Field(discriminator="kind"),
]

ENCODERS = {
    "resnet1d": ResNet1d,
    "xresnet1d": XResNet1d,
    "cpc": CPC,
    "wav2vec2": Wav2Vec2,
}
