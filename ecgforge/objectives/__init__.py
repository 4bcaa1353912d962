"""Pretraining objectives (``[ssl]`` in a recipe). Interface: ``objectives.base.Objective``.

Add one: write ``<name>.py`` with ``<Name>Config`` and an ``Objective`` subclass, then add it to the union
and the dict below.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.objectives.simclr import SimCLR, SimCLRConfig

SSLConfig = Annotated[Union[SimCLRConfig], Field(discriminator="kind")]  # noqa: UP007

OBJECTIVES = {
    "simclr": SimCLR,
}
