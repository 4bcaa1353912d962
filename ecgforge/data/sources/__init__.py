"""Dataset sources: each lists `RecordRef`s (where a record lives, its metadata and labels), reading no signal.

Every source has ``records() -> list[RecordRef]`` and ``label_names() -> {label set: [every label]}``.
Add one: write ``<name>.py`` with the source class and its ``<Name>Config`` (``kind`` literal), then add one
line to the table.
"""

from ecgforge.registry import Table

SOURCES = Table(
    "sources",
    {
        "ptbxl": "ecgforge.data.sources.ptbxl:PTBXLSource",
        "cinc": "ecgforge.data.sources.cinc:CinCSource",
        "wfdb_folder": "ecgforge.data.sources.folder:WFDBFolderSource",
        "synthetic": "ecgforge.data.sources.synthetic:SyntheticSource",
    },
)

__getattr__ = SOURCES.module_getattr("SourceConfig")  # the config union, made on first use
