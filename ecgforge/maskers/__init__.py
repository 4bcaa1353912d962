"""Maskers: ``x (B, leads, T) -> masks (B, n_masks, T)`` in [0, 1], trained adversarially to the encoder.

Add one: write ``<name>.py`` with ``<Name>Config`` and the module, then add it to the union and the dict.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.maskers.unet1d import UNet1d, UNet1dConfig

MaskerConfig = Annotated[Union[UNet1dConfig], Field(discriminator="kind")]  # noqa: UP007

MASKERS = {
    "unet1d": UNet1d,
}
