"""Dataset sources: each implements `ecgforge.data.sources.base.Source` (list records, name labels, read one).

A source lists `RecordRef`s (metadata, labels and a locator, reading no signal) as a stream, and reads a record
by its locator when the cache builder asks (in its reader processes, each of which builds the source again from
its config). WFDB sources subclass `base.WFDBSource` (the locator is the record path); the file-format ones
read their own formats (MUSE and HL7 XML, DICOM, CODE-15%'s HDF5 part files, NumPy / HDF5 arrays).
Add one: write ``<name>.py`` with the source class and its config (``Config = <Name>Config``, a ``kind``
literal), then add one line to the table (CONTRIBUTING.md shows a whole example).
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
        "arrays": "ecgforge.data.sources.arrays:ArraysSource",
    },
)

__getattr__ = SOURCES.module_getattr("SourceConfig")  # the config union, made on first use
