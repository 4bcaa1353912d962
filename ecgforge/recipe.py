"""Recipe schema: what a TOML recipe may say, validated once, with errors that name the file and field.

Two kinds of recipe share this module:
- a *run recipe* (``ecgforge run``): data, encoder, objective, training and evaluations;
- a *cache recipe* (``ecgforge cache build``): a dataset source and how to preprocess it into HDF5.

Every model is frozen and forbids unknown keys, so a typo fails when the recipe is read, not hours into a
run. ``--set dotted.key=value`` overrides are parsed as TOML values, merged, then validated with the rest.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.sources import SourceConfig
from ecgforge.encoders import EncoderConfig
from ecgforge.errors import UserError
from ecgforge.evaluation import EvalConfig
from ecgforge.objectives import SSLConfig

SCHEMA_VERSION = 1


class RecipeError(UserError):
    """A recipe problem a user can fix. ``str(err)`` is one or more lines, each naming file and field."""


class Strict(BaseModel, extra="forbid", frozen=True):
    pass


# --------------------------------------------------------------------------------------------- cache


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


# ----------------------------------------------------------------------------------------------- run


Selector = dict[str, list[int] | list[str] | int | str]


class DataConfig(Strict):
    cache: str = Field(description="HDF5 cache path (relative paths resolve against the working directory)")
    build: str | None = Field(None, description="cache recipe to build `cache` from when it is absent")
    window_s: float = Field(2.5, gt=0, description="training/evaluation window length")
    eval_stride_s: float | None = Field(None, gt=0, description="stride of evaluation windows; default window_s")
    splits: dict[str, Selector] = Field(
        default_factory=lambda: {"train": {"fold": [1, 2, 3, 4, 5, 6, 7, 8]}, "val": {"fold": [9]}, "test": {"fold": [10]}},
        description="split name -> {metadata column: allowed value(s)}; 'strat_fold' is an alias of 'fold'",
    )
    pretrain_split: str = "train"
    exclude_ptbxl_overlap: bool = Field(True, description="drop CinC 'HR*' records that are PTB-XL ECGs")
    in_memory: bool = Field(False, description="load the whole cache into RAM (fast; for caches that fit)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")

    @model_validator(mode="after")
    def _pretrain_split_exists(self) -> DataConfig:
        if self.pretrain_split not in self.splits:
            raise ValueError(f"pretrain_split {self.pretrain_split!r} is not one of splits {sorted(self.splits)}")
        return self


class ModelConfig(Strict):
    """``[model]``: the encoder, optionally started from saved weights (``init``).

    With ``init`` the saved encoder's config is used when ``[model.encoder]`` is left out, and must equal
    ``[model.encoder]`` when both are given. ``[model.encoder] init = ...`` is accepted as well and moved here.
    """

    encoder: EncoderConfig = Field(None, validate_default=False,  # type: ignore[assignment]
                                   description="required unless `init` gives it")
    init: str | None = Field(
        None, description="start from a saved encoder: a run directory, an export, its encoder.json, or a "
        "fairseq-signals .pt; relative paths resolve against the working directory",
    )

    @model_validator(mode="before")
    @classmethod
    def _encoder_init(cls, data: Any) -> Any:
        # The encoder configs forbid unknown keys (typos fail early), so `init` is lifted out of the table.
        if isinstance(data, dict) and isinstance(data.get("encoder"), dict) and "init" in data["encoder"]:
            enc = dict(data["encoder"])
            init = enc.pop("init")
            if data.get("init") is not None and data["init"] != init:
                raise ValueError(f"init is given twice and differs: model.init {data['init']!r}, model.encoder.init {init!r}")
            data = {**data, "init": init}
            if enc:
                data["encoder"] = enc
            else:
                data.pop("encoder")
        enc = data.get("encoder") if isinstance(data, dict) else None
        if isinstance(enc, dict) and enc and "kind" not in enc and data.get("init") is not None:
            raise ValueError(f"encoder: {sorted(enc)} without `kind`: give only `init` (the saved config is "
                             "used) or the whole encoder config (it must equal the saved one)")
        return data

    @model_validator(mode="after")
    def _resolve_init(self) -> ModelConfig:
        if self.init is None:
            if self.encoder is None:
                raise ValueError("[model.encoder] is required (or `init` to start from a saved encoder)")
            return self
        from ecgforge.pretrained import init_encoder_config

        object.__setattr__(self, "encoder", init_encoder_config(self.init, self.encoder))
        return self


class OptimConfig(Strict):
    kind: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    eps: float = Field(1e-8, gt=0)


class ScheduleConfig(Strict):
    kind: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class TrainConfig(Strict):
    epochs: int = Field(1, ge=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimiser steps")
    batch_size: int = Field(64, gt=0, description="per process; the effective batch is this x processes x accumulation")
    grad_accum_steps: int = Field(1, ge=1)
    grad_clip_norm: float | None = Field(None, gt=0)
    precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False
    sync_batchnorm: bool = Field(True, description="sync BN statistics across processes (multi-GPU)")
    optim: dict[str, OptimConfig] = Field(default_factory=lambda: {"encoder": OptimConfig()})
    schedule: ScheduleConfig = ScheduleConfig()
    log_every_steps: int = Field(10, ge=1)
    checkpoint_every_steps: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    tensorboard: bool = False
    time_budget_s: float | None = Field(None, gt=0, description="stop pretraining after this many seconds")


class Recipe(Strict):
    """``ecgforge run RECIPE``."""

    schema_version: Literal[1] = 1
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    ssl: SSLConfig | None = Field(None, description="the pretraining objective; absent = evaluate only")
    train: TrainConfig = TrainConfig()
    eval: list[EvalConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _optim_groups(self) -> Recipe:
        if self.ssl is not None:
            from ecgforge.objectives import OBJECTIVES

            missing = [g for g in dict.fromkeys(OBJECTIVES[self.ssl.kind].phases) if g not in self.train.optim]
            if missing:
                raise ValueError(f"ssl kind {self.ssl.kind!r} needs [train.optim.{missing[0]}] (optimiser groups: {missing})")
        return self


# ------------------------------------------------------------------------------------ loading, errors


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``file: field.path: message (got value)``."""
    lines = []
    for e in err.errors():
        # Tagged unions add the tag to the location ("ssl.simclr.temperature"): keep it, it says which kind.
        loc = _format_loc(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "union_tag_not_found":
            # pydantic says "Unable to extract tag": say which key is missing, and point at a misspelling of it.
            tag = str(e.get("ctx", {}).get("discriminator", "kind")).strip("'")
            msg = f"required key {tag!r} is missing"
            close = difflib.get_close_matches(tag, [str(k) for k in got], n=1) if isinstance(got, dict) else []
            if close:
                msg += f"; {close[0]!r} is an unknown key (misspelled?)"
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {loc}: {msg}{shown}")
    return "\n".join(lines)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: TOML syntax error: {exc}") from None


def parse_override(item: str) -> tuple[list[str | int], Any]:
    """``"train.optim.encoder.lr=3e-4"`` -> (["train", "optim", "encoder", "lr"], 0.0003).

    The value is parsed as a TOML value (numbers, booleans, arrays, inline tables, quoted strings); a bare
    word that is not valid TOML is taken as a string, so ``--set name=my-run`` works. List items are
    addressed by index: ``eval.0.seeds=[0,1]``.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected dotted.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[: i + 1]))} does not exist")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[:i]))} is not a table")
                node = node.setdefault(part, [] if isinstance(nxt, int) else {})
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path))} does not exist")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"--set {item!r}: {_format_loc(tuple(path[:-1]))} is not a table")
    return raw


def migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring an older recipe to the current schema. Version 1 is the first; newer ones are refused."""
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RecipeError(f"{source}: schema_version: this ecgforge reads version {SCHEMA_VERSION}, got {version!r}")
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a run recipe; raises RecipeError with one line per problem."""
    raw = migrate(apply_overrides(read_toml(path), overrides or []), str(path))
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, str(path))) from None


def load_cache_recipe(path: str | Path, overrides: list[str] | None = None) -> CacheRecipe:
    raw = migrate(apply_overrides(read_toml(path), overrides or []), str(path))
    try:
        return CacheRecipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, str(path))) from None


def is_cache_recipe(path: str | Path) -> bool:
    """Cache recipes have [source], [signal] and ``out``; run recipes have [data] and [model].

    Any one of the cache keys decides, so that a cache recipe missing its [source] is reported as that,
    not as a run recipe missing [data] and [model].
    """
    raw = read_toml(path)
    return bool({"source", "signal", "out"} & raw.keys()) and not {"data", "model"} & raw.keys()


def to_toml_dict(model: BaseModel) -> dict[str, Any]:
    """A validated model as a TOML-writable dict (TOML has no null: None fields are left out)."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v

    return strip(model.model_dump(mode="json"))
