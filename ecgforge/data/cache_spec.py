"""The cache recipe (``ecgforge cache build SPEC.toml``): a dataset source and how to preprocess its records.

Torch-free on purpose: building, inspecting and validating caches never loads a model library.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ecgforge.config_files import Strict, load_model
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.sources import SOURCES

SourceConfig = SOURCES.union


class FilterConfig(Strict):
    """Optional zero-phase filtering applied before resampling. Absent keys mean no filter."""

    highpass_hz: float | None = Field(None, gt=0, description="baseline-wander removal (e.g. 0.5)")
    lowpass_hz: float | None = Field(None, gt=0)
    notch_hz: float | None = Field(None, gt=0, description="powerline notch (50 or 60)")
    order: int = Field(3, ge=1, le=8, description="Butterworth order, applied forward and backward")


class SignalConfig(Strict):
    fs_hz: float = Field(gt=0, description="target sampling rate; records are resampled polyphase")
    leads: list[str] = Field(default_factory=lambda: list(CANONICAL_LEADS))
    min_duration_s: float = Field(1.0, ge=0, description="shorter records are skipped with a reason")
    max_duration_s: float | None = Field(None, gt=0, description="longer records are truncated")
    filter: FilterConfig = FilterConfig()

    @field_validator("leads")
    @classmethod
    def _known_leads(cls, leads: list[str]) -> list[str]:
        unknown = [lead for lead in leads if lead not in CANONICAL_LEADS]
        if unknown:
            raise ValueError(f"unknown lead(s) {unknown}; expected names from {list(CANONICAL_LEADS)}")
        if len(set(leads)) != len(leads):
            raise ValueError("duplicated lead names")
        return leads


class CacheRecipe(Strict):
    """``ecgforge cache build SPEC.toml``: one HDF5 file per dataset and preprocessing spec."""

    schema_version: Literal[1] = 1
    name: str = Field(min_length=1)
    out: str = Field(description="path of the HDF5 cache to write")
    source: SourceConfig
    signal: SignalConfig
    workers: int = Field(0, ge=0, description="reader processes; 0 = number of CPU cores")

    def spec_hash(self) -> str:
        """Hash of everything that determines the cache's content (not where it is written)."""
        payload = self.model_dump(mode="json", exclude={"out", "name", "workers"})
        payload["source"].pop("path", None)  # the same data moved elsewhere is the same cache
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_cache_recipe(path: str | Path, overrides: list[str] | None = None) -> CacheRecipe:
    """Read, override and validate a cache recipe; RecipeError with one line per problem."""
    return load_model(CacheRecipe, path, overrides)
