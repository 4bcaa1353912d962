"""Canonical 12-lead order and lead-name aliases.

Every tensor ecgforge stores or feeds an encoder has the leads in `CANONICAL_LEADS` order. Headers in the
wild spell them many ways (``AVR`` in PTB-XL, ``MLII`` in MIT-BIH, ``DII`` in Brazilian and Italian
exports, ``C1`` for V1 in some European systems, trailing spaces); `resolve_lead` maps those to the
canonical name, and `canonicalize` reorders a record's leads into the canonical (12, T) layout.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ecgforge.data.record import RecordError, Signal

CANONICAL_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_CANONICAL_INDEX = {lead: j for j, lead in enumerate(CANONICAL_LEADS)}
_LIMB = {"i": "I", "ii": "II", "iii": "III", "avr": "aVR", "avl": "aVL", "avf": "aVF"}
# Normalised spelling (lower case, no spaces/underscores/dots) -> canonical name.
_ALIASES: dict[str, str] = {}
for _key, _lead in _LIMB.items():
    _ALIASES[_key] = _lead
    _ALIASES["ml" + _key] = _lead  # modified limb leads (MLII in MIT-BIH) are the limb lead for our purposes
for _key in ("i", "ii", "iii"):
    _ALIASES["d" + _key] = _LIMB[_key]  # Einthoven's DI/DII/DIII
for _n in range(1, 7):
    _ALIASES[f"v{_n}"] = f"V{_n}"
    _ALIASES[f"c{_n}"] = f"V{_n}"  # chest leads C1..C6 (IEC naming)
# Bare numbers ("1", "2") are NOT aliases: headers use them for channel numbers as often as for leads.

_PREFIX = re.compile(r"^(?:lead|ecg|ekg)[\s_:-]*")
_STRIP = re.compile(r"[\s_.]+")


@functools.lru_cache(maxsize=4096)  # a dataset spells its leads a handful of ways; a cache build asks 12x per record
def resolve_lead(name: str) -> str | None:
    """Canonical name for a header's lead name, or None if it is not one of the 12 standard leads.

    Case-insensitive; ignores surrounding/inner whitespace, underscores and a ``Lead``/``ECG`` prefix.
    A leading minus (``-aVR``, an inverted lead) is deliberately *not* an alias: its polarity differs.
    """
    key = _PREFIX.sub("", name.strip().lower())
    key = _STRIP.sub("", key)
    return _ALIASES.get(key)


def canonicalize(signal: Signal) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a record's leads into canonical order.

    Args:
        signal: ``data (leads, T)`` in mV with ``lead_names`` as written in the header.

    Returns:
        ``data (12, T)`` float32 in `CANONICAL_LEADS` order, zero where a lead is absent, and
        ``present (12,)`` bool. Leads that are not one of the 12 (e.g. ``ABP``, ``-aVR``) are dropped.

    Raises:
        RecordError: two header leads resolve to the same canonical lead (e.g. ``II`` and ``MLII``), or the
            number of names does not match the number of rows.
    """
    data = np.asarray(signal.data)
    if data.ndim != 2 or data.shape[0] != len(signal.lead_names):
        raise RecordError(f"{len(signal.lead_names)} lead names for data of shape {data.shape}")
    if tuple(resolve_lead(name) for name in signal.lead_names) == CANONICAL_LEADS:  # the usual order: one copy
        return data.astype(np.float32), np.ones(len(CANONICAL_LEADS), bool)
    out = np.zeros((len(CANONICAL_LEADS), data.shape[1]), np.float32)
    present = np.zeros(len(CANONICAL_LEADS), bool)
    source_of: dict[str, str] = {}
    for row, name in enumerate(signal.lead_names):
        lead = resolve_lead(name)
        if lead is None:
            continue
        if lead in source_of:
            raise RecordError(f"duplicated lead: {source_of[lead]!r} and {name!r} are both {lead}")
        source_of[lead] = name
        j = _CANONICAL_INDEX[lead]
        out[j] = data[row]
        present[j] = True
    return out, present
