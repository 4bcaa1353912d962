"""Augmentations (``augment = [...]`` lists in a recipe): ``x (B, leads, T) -> (B, leads, T)`` in mV.

Every augmentation is an ``nn.Module`` drawing from torch's global generator on ``x.device``, independently
per sample, with a probability ``p`` of being applied to each sample. Modules that need the sampling rate
take the run-context keyword ``fs_hz``. Add one: write it next to its family (or in a new file) with its
``<Name>Config``, then add it to the union and the dict below.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.augment.amplitude import (
    AmplitudeScale,
    AmplitudeScaleConfig,
    ChannelResize,
    ChannelResizeConfig,
)
from ecgforge.augment.crop import RandomResizedCrop, RandomResizedCropConfig, TimeOut, TimeOutConfig
from ecgforge.augment.leads import RandomLeadMask, RandomLeadMaskConfig
from ecgforge.augment.noise import (
    BaselineShift,
    BaselineShiftConfig,
    BaselineWander,
    BaselineWanderConfig,
    ElectrodeMotion,
    ElectrodeMotionConfig,
    GaussianNoise,
    GaussianNoiseConfig,
    Powerline,
    PowerlineConfig,
    physio_noise,
)
from ecgforge.augment.threekg import ThreeKG, ThreeKGConfig

AugmentConfig = Annotated[
    Union[  # noqa: UP007
        GaussianNoiseConfig,
        BaselineWanderConfig,
        PowerlineConfig,
        ElectrodeMotionConfig,
        BaselineShiftConfig,
        RandomResizedCropConfig,
        TimeOutConfig,
        AmplitudeScaleConfig,
        ChannelResizeConfig,
        RandomLeadMaskConfig,
        ThreeKGConfig,
    ],
    Field(discriminator="kind"),
]

AUGMENTS = {
    "gaussian_noise": GaussianNoise,
    "baseline_wander": BaselineWander,
    "powerline": Powerline,
    "electrode_motion": ElectrodeMotion,
    "baseline_shift": BaselineShift,
    "random_resized_crop": RandomResizedCrop,
    "time_out": TimeOut,
    "amplitude_scale": AmplitudeScale,
    "channel_resize": ChannelResize,
    "random_lead_mask": RandomLeadMask,
    "threekg": ThreeKG,
}

__all__ = ["AUGMENTS", "AugmentConfig", "physio_noise"]
