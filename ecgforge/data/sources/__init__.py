"""Dataset sources: each lists `RecordRef`s (where a record lives, its metadata and labels), reading no signal.

Every source has ``records() -> list[RecordRef]`` and ``label_names() -> {label set: [every label]}``.
Add one: write ``<name>.py`` with ``<Name>SourceConfig`` (``kind`` literal) and the source class, then add
the config to `SourceConfig` and the class to `SOURCES`.
"""

from typing import Annotated, Union

from pydantic import Field

from ecgforge.data.sources.cinc import CinCSource, CinCSourceConfig
from ecgforge.data.sources.folder import WFDBFolderSource, WFDBFolderSourceConfig
from ecgforge.data.sources.ptbxl import PTBXLSource, PTBXLSourceConfig
from ecgforge.data.sources.synthetic import SyntheticSource, SyntheticSourceConfig

SourceConfig = Annotated[
    Union[  # noqa: UP007
        PTBXLSourceConfig,
        CinCSourceConfig,
        WFDBFolderSourceConfig,
        SyntheticSourceConfig,
    ],
    Field(discriminator="kind"),
]

SOURCES: dict[str, type] = {
    "ptbxl": PTBXLSource,
    "cinc": CinCSource,
    "wfdb_folder": WFDBFolderSource,
    "synthetic": SyntheticSource,
}
