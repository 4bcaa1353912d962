"""Maskers: ``x (B, leads, T) -> masks (B, n_masks, T)`` in [0, 1], trained adversarially to the encoder.

Add one: write ``<name>.py`` with its ``<Name>Config`` and the module (``Config = <Name>Config``, built as
``cls(cfg, ctx)``), then add one line to the table; CONTRIBUTING.md shows a whole file.
"""

from ecgforge.registry import Table

MASKERS = Table(
    "maskers",
    {
        "unet1d": "ecgforge.maskers.unet1d:UNet1d",
        "random_mask": "ecgforge.maskers.random_mask:RandomMask",
    },
)

__getattr__ = MASKERS.module_getattr("MaskerConfig")  # the config union, made on first use
