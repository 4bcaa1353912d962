"""Encoders: ``x (B, leads, T) -> z (B, embed_dim)``.

Every encoder is an ``nn.Module`` with:
    ``forward(x)`` -> ``(B, embed_dim)`` pooled embedding,
    ``forward_features(x)`` -> ``(B, C, T')`` sequence features,
    ``embed_dim`` (int), ``downsample`` (input samples per feature step), ``receptive_field`` (samples).
Add one: write ``<name>.py`` with ``<Name>Config`` and the module, then add it to the union and the dict.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.encoders.resnet1d import ResNet1d, ResNet1dConfig

EncoderConfig = Annotated[Union[ResNet1dConfig], Field(discriminator="kind")]  # noqa: UP007

ENCODERS = {
    "resnet1d": ResNet1d,
}
