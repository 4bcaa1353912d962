"""Evaluation protocols (``[[eval]]`` tables in a recipe): each has ``run(ctx: EvalContext) -> rows``.

Add one: write ``<name>.py`` with ``<Name>Config`` and a class whose constructor takes the config's fields
and whose ``run`` returns results.json rows, then add it to the union and the dict below.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.evaluation.finetune import Finetune, FinetuneConfig
from ecgforge.evaluation.identify import Identification, IdentificationConfig
from ecgforge.evaluation.knn import KNN, KNNConfig
from ecgforge.evaluation.linear_probe import LinearProbe, LinearProbeConfig
from ecgforge.evaluation.robustness import Robustness, RobustnessConfig

EvalConfig = Annotated[
    Union[LinearProbeConfig, FinetuneConfig, KNNConfig, IdentificationConfig, RobustnessConfig],  # noqa: UP007
    Field(discriminator="kind"),
]

PROTOCOLS = {
    "linear_probe": LinearProbe,
    "finetune": Finetune,
    "knn": KNN,
    "identification": Identification,
    "robustness": Robustness,
}
