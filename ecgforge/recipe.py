"""The run recipe (``ecgforge run RECIPE``): data, encoder, objective, training and evaluations.

Every model is frozen and forbids unknown keys, so a typo fails when the recipe is read, not hours into a
run. ``--set dotted.key=value`` overrides are parsed as TOML values, merged, then validated with the rest
(``config_files``). Validators check the recipe itself and read no file: ``[model] init`` is resolved by the
application (``app.recipes.resolve_init``), which reads the saved encoder's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ecgforge.config_files import Strict, load_model
from ecgforge.encoders import ENCODERS
from ecgforge.evaluation import PROTOCOLS
from ecgforge.hub import HubError, init_hub_path
from ecgforge.objectives import OBJECTIVES

EncoderConfig = ENCODERS.union
SSLConfig = OBJECTIVES.union
EvalConfig = PROTOCOLS.union



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
    fallback_splits: dict[str, Selector] = Field(
        default_factory=dict,
        description="used instead of `splits` (all of them) on a cache where some split of `splits` selects no "
                    "record, e.g. PTB-XL folds 1-8/9/10 on a copy with folds 1-3; same split names; the run "
                    "says so and resolved.toml keeps the splits used")
    pretrain_split: str = "train"
    exclude_ptbxl_overlap: bool = Field(True, description="drop CinC 'HR*' records that are PTB-XL ECGs")
    in_memory: bool = Field(False, description="load the whole cache into RAM (fast; for caches that fit)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    allow_overlap: list[Literal["pretrain", "train", "test"]] = Field(
        default_factory=list,
        description="let these roles share records or patients with 'test' (e.g. [\"pretrain\", \"test\"]); "
                    "runs refuse any overlap otherwise; needs allow_overlap_reason")
    allow_overlap_reason: str | None = Field(None, description="why the overlap is wanted; kept in results.json")

    @model_validator(mode="after")
    def _pretrain_split_exists(self) -> DataConfig:
        if self.pretrain_split not in self.splits:
            raise ValueError(f"pretrain_split {self.pretrain_split!r} is not one of splits {sorted(self.splits)}")
        if self.fallback_splits and set(self.fallback_splits) != set(self.splits):
            raise ValueError(f"fallback_splits names {sorted(self.fallback_splits)}; it must name the splits of "
                             f"`splits`: {sorted(self.splits)}")
        if self.allow_overlap:
            if "test" not in self.allow_overlap or len(set(self.allow_overlap)) < 2:
                raise ValueError(f"allow_overlap {self.allow_overlap}: name 'test' and the role it may share with "
                                 "('pretrain' and/or 'train')")
            if not (self.allow_overlap_reason or "").strip():
                raise ValueError("allow_overlap needs allow_overlap_reason: say why the overlap is wanted")
        return self


class ModelConfig(Strict):
    """``[model]``: the encoder, optionally started from saved weights (``init``).

    With ``init`` the saved encoder's config is used when ``[model.encoder]`` is left out, and must equal
    ``[model.encoder]`` when both are given. ``[model.encoder] init = ...`` is accepted as well and moved here.
    """

    encoder: EncoderConfig = Field(None, validate_default=False,  # type: ignore[assignment]
                                   description="required unless `init` gives it")
    init: str | None = Field(
        None, description="start from a saved encoder: a run directory, an export, its encoder.json, a "
        "fairseq-signals .pt, an export on the Hugging Face Hub as hf://ORG/NAME[@REVISION] (needs "
        "ecgforge[hub]), or a foundation model's released checkpoint as KIND:PATH "
        "(ecgfounder:12_lead_ECGFounder.pth; kinds ecgfounder, merl_resnet, st_mem, ecg_jepa, hubert_ecg) or, "
        "on the Hub, KIND:hf://ORG/NAME/FILE[@REVISION] (ecgfounder:hf://PKUDigitalHealth/ECGFounder/"
        "12_lead_ECGFounder.pth); relative paths resolve against the working directory",
    )
    encoder_is_default: bool = Field(
        False, description="true: [model.encoder] applies only without `init` (a benchmark suite's stand-in "
        "encoder); with `init` the saved encoder's config replaces it instead of having to equal it")

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

    @field_validator("init")
    @classmethod
    def _hub_id(cls, init: str | None) -> str | None:
        # The form of a Hub id is checked here; whether it exists, when the run downloads it.
        try:
            if init is not None:
                init_hub_path(init)
        except HubError as exc:
            raise ValueError(str(exc)) from None
        return init

    @model_validator(mode="after")
    def _encoder_or_init(self) -> ModelConfig:
        if self.init is None and self.encoder is None:
            raise ValueError("[model.encoder] is required (or `init` to start from a saved encoder)")
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


class MonitorConfig(Strict):
    """``[train.monitor]``: a probe of the encoder every ``every_steps`` while it pretrains (``train.monitor``)."""

    every_steps: int = Field(50, ge=1, description="optimiser steps between checks (also at step 0 and the last)")
    task: str = Field(description="label set (or 'sex', 'age') of the probe")
    probes: list[Literal["knn", "linear"]] = Field(default_factory=lambda: ["knn"], min_length=1,
                                                   description="k-NN (cheap) and/or a linear head")
    split: str = Field("train", description="split of data.splits the labelled subset is drawn from")
    n_records: int = Field(400, ge=4, description="labelled records of the fixed subset (patient-grouped)")
    test_frac: float = Field(0.5, gt=0, lt=1, description="share of the subset (by patient) the probe is scored on")
    label_fractions: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="fractions of the probe-train part (patient-grouped, fixed) each probe is trained on; "
                    "keys monitor/<probe>_<fraction>/..., monitor/<probe>/... for 1")
    k: int = Field(20, ge=1, description="neighbours of the k-NN probe")
    linear_epochs: int = Field(100, ge=1, description="epochs of the linear probe (Adam, full subset, no selection)")
    linear_lr: float = Field(1e-3, gt=0)
    reference: bool = Field(True, description="score a random-init encoder once at step 0")

    @model_validator(mode="after")
    def _probes_once(self) -> MonitorConfig:
        if len(set(self.probes)) != len(self.probes):
            raise ValueError(f"probes: {self.probes} names a probe twice")
        if any(not 0 < f <= 1 for f in self.label_fractions) or len(set(self.label_fractions)) != len(self.label_fractions):
            raise ValueError(f"label_fractions: {self.label_fractions}: each in (0, 1], none twice")
        return self


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
    trackers: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"]] = Field(
        default_factory=list, description="experiment trackers through Accelerate (log_with); logs under the run directory")
    time_budget_s: float | None = Field(None, gt=0, description="stop pretraining after this many seconds")
    monitor: MonitorConfig | None = Field(None, description="online probe while pretraining; absent = off")


    @model_validator(mode="before")
    @classmethod
    def _tensorboard_alias(cls, data: Any) -> Any:
        # `tensorboard = true` came before `trackers`: read as trackers = ["tensorboard"] (resolved.toml then
        # carries only trackers).
        if isinstance(data, dict) and "tensorboard" in data:
            data = dict(data)
            on = data.pop("tensorboard")
            if not isinstance(on, bool):
                raise ValueError(f"tensorboard: expected true or false, got {on!r} (prefer trackers = [\"tensorboard\"])")
            if on and "tensorboard" not in (trackers := list(data.get("trackers", []))):
                data["trackers"] = [*trackers, "tensorboard"]
        return data

    @model_validator(mode="after")
    def _trackers_once(self) -> TrainConfig:
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"trackers: {self.trackers} names a tracker twice")
        return self


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
            missing = [g for g in dict.fromkeys(self.ssl.phases) if g not in self.train.optim]
            if missing:
                raise ValueError(f"ssl kind {self.ssl.kind!r} needs [train.optim.{missing[0]}] (optimiser groups: {missing})")
        m = self.train.monitor
        if m is not None and m.split not in self.data.splits:
            raise ValueError(f"train.monitor.split {m.split!r} is not one of data.splits {sorted(self.data.splits)}")
        return self


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a run recipe; RecipeError with one line per problem. ``[model] init`` is
    not resolved here (see ``app.recipes.load_run_recipe``)."""
    return load_model(Recipe, path, overrides)
