"""Augmentations (``augment = [...]`` lists in a recipe): ``x (B, leads, T) -> (B, leads, T)`` in mV.

Every augmentation is an ``nn.Module`` drawing from torch's global generator on ``x.device``, independently
per sample, with a probability ``p`` of being applied to each sample. Modules that need the sampling rate
read ``ctx.need("fs_hz")``. Add one: write it next to its family (or in a new file) with its ``<Name>Config``
(``Config = <Name>Config``, built as ``cls(cfg, ctx)``), then add one line to the table; CONTRIBUTING.md shows a
whole file (a polarity flip).
"""

from ecgforge.registry import Table

AUGMENTS = Table(
    "augment",
    {
        "gaussian_noise": "ecgforge.augment.noise:GaussianNoise",
        "baseline_wander": "ecgforge.augment.noise:BaselineWander",
        "powerline": "ecgforge.augment.noise:Powerline",
        "electrode_motion": "ecgforge.augment.noise:ElectrodeMotion",
        "baseline_shift": "ecgforge.augment.noise:BaselineShift",
        "random_resized_crop": "ecgforge.augment.crop:RandomResizedCrop",
        "time_out": "ecgforge.augment.crop:TimeOut",
        "amplitude_scale": "ecgforge.augment.amplitude:AmplitudeScale",
        "channel_resize": "ecgforge.augment.amplitude:ChannelResize",
        "random_lead_mask": "ecgforge.augment.leads:RandomLeadMask",
        "threekg": "ecgforge.augment.three_kg_views:ThreeKG",
    },
)

__getattr__ = AUGMENTS.module_getattr("AugmentConfig")  # the config union, made on first use
