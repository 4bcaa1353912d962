"""Maskers: ``x (B, leads, T) -> masks (B, n_masks, T)`` in [0, 1], trained adversarially to the encoder.

Add one: write ``<name>.py`` with the module and its ``<Name>Config``, then add one line to the table.
"""

from ecgforge.registry import Table

MASKERS = Table(
    "maskers",
    {
        "unet1d": "ecgforge.maskers.unet1d:UNet1d",
    },
)

__getattr__ = MASKERS.module_getattr("MaskerConfig")  # the config union, made on first use
