"""Pretraining objectives (``[ssl]`` in a recipe). Interface: ``objectives.base.Objective``.

Add one: write ``<name>.py`` with an ``Objective`` subclass built as ``cls(cfg, ctx)`` and its config (an
``ObjectiveConfig`` subclass named by the class's ``Config``), then add one line to the table (CONTRIBUTING.md
shows ``vicreg.py`` whole).
"""

from ecgforge.registry import Table

OBJECTIVES = Table(
    "ssl",
    {
        "simclr": "ecgforge.objectives.simclr:SimCLR",
        "byol": "ecgforge.objectives.byol:BYOL",
        "swav": "ecgforge.objectives.swav:SwAV",
        "moco": "ecgforge.objectives.moco:MoCo",
        "adv_mask": "ecgforge.objectives.adv_mask:AdvMask",
        "three_kg": "ecgforge.objectives.three_kg:ThreeKGObjective",
        "cpc": "ecgforge.objectives.cpc:CPCObjective",
        "wav2vec2": "ecgforge.objectives.wav2vec2:Wav2Vec2Objective",
        "cmsc": "ecgforge.objectives.cmsc:CMSC",
        "w2v_cmsc_rlm": "ecgforge.objectives.w2v_cmsc_rlm:W2VCMSCRLM",
        "supervised": "ecgforge.objectives.supervised:Supervised",
        "vicreg": "ecgforge.objectives.vicreg:VICReg",
    },
)

__getattr__ = OBJECTIVES.module_getattr("SSLConfig")  # the config union, made on first use
