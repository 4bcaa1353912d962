"""Pretraining objectives (``[ssl]`` in a recipe). Interface: ``objectives.base.Objective``.

Add one: write ``<name>.py`` with ``<Name>Config`` and an ``Objective`` subclass, then add it to the union
and the dict below.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.objectives.adv_mask import AdvMask, AdvMaskConfig
from ecgforge.objectives.byol import BYOL, BYOLConfig
from ecgforge.objectives.cmsc import CMSC, CMSCConfig
from ecgforge.objectives.cpc import CPCObjective, CPCObjectiveConfig
from ecgforge.objectives.simclr import SimCLR, SimCLRConfig
from ecgforge.objectives.supervised import Supervised, SupervisedConfig
from ecgforge.objectives.three_kg import ThreeKGObjective, ThreeKGObjectiveConfig
from ecgforge.objectives.w2v_cmsc_rlm import W2VCMSCRLM, W2VCMSCRLMConfig
from ecgforge.objectives.wav2vec2 import Wav2Vec2Objective, Wav2Vec2ObjectiveConfig

SSLConfig = Annotated[
    Union[  # noqa: UP007
        SimCLRConfig,
        BYOLConfig,
        AdvMaskConfig,
        ThreeKGObjectiveConfig,
        CPCObjectiveConfig,
        Wav2Vec2ObjectiveConfig,
        CMSCConfig,
        W2VCMSCRLMConfig,
        SupervisedConfig,
    ],
    Field(discriminator="kind"),
]

OBJECTIVES = {
    "simclr": SimCLR,
    "byol": BYOL,
    "adv_mask": AdvMask,
    "three_kg": ThreeKGObjective,
    "cpc": CPCObjective,
    "wav2vec2": Wav2Vec2Objective,
    "cmsc": CMSC,
    "w2v_cmsc_rlm": W2VCMSCRLM,
    "supervised": Supervised,
}
