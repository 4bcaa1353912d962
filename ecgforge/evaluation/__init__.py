"""Evaluation protocols (``[[eval]]`` tables in a recipe): each has ``run(ctx: EvalContext) -> rows``.

Add one: write ``<name>.py`` with ``<Name>Config`` and a class whose constructor takes the config's fields
and whose ``run`` returns results.json rows, then add it to the union and the dict below.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.evaluation.linear_probe import LinearProbe, LinearProbeConfig

EvalConfig = Annotated[Union[LinearProbeConfig], Field(discriminator="kind")]  # noqa: UP007

PROTOCOLS = {
    "linear_probe": LinearProbe,
}
