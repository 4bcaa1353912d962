"""Dataset sources: each lists `RecordRef`s (where a record lives, its metadata and labels), reading no signal.

Every source has ``records() -> list[RecordRef]`` and ``label_names() -> {label set: [every label]}``; the
file-format sources (MIMIC-IV-ECG, CODE-15%, MUSE, HL7 aECG, DICOM), CinC and the WFDB folder also
``iter_records()``, a generator of the same records, so a cache build's listing streams into its readers. A
source may leave part of each record's listing to the reader processes: ``complete(ref) -> RecordRef`` runs
there (CinC parses each header in it) and ``label_names(observed)`` then receives the labels they found. A
record in a non-WFDB format has a reader path as its ``path`` (`ecgforge.data.record.reader_path`), read by
the reader its module registers.
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
        "mimic_iv_ecg": "ecgforge.data.sources.mimic_iv_ecg:MimicIVECGSource",
        "code15": "ecgforge.data.sources.code15:Code15Source",
        "muse_xml": "ecgforge.data.sources.muse_xml:MuseXMLSource",
        "hl7_aecg": "ecgforge.data.sources.hl7_aecg:HL7aECGSource",
        "dicom_ecg": "ecgforge.data.sources.dicom_ecg:DicomECGSource",
    },
)

__getattr__ = SOURCES.module_getattr("SourceConfig")  # the config union, made on first use
