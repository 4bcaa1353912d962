"""What a protocol's ``[[eval]]`` table says (the task and its splits, the encoders compared, the probes' heads),
and what every protocol is: `EvalProtocol`, built as ``cls(cfg, ctx)``, whose ``run`` gives results rows.

Derived facts are on the config, known before anything is built or any cache is opened: ``task_types`` (the
task types a protocol can score), ``split_fields()`` (every split the table names, for a pre-flight to check
against ``[data.splits]``) and ``task_spec`` (what `tasks.load_task` loads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from ecgforge.data.splits import TaskType
from ecgforge.registry import BuildContext

if TYPE_CHECKING:
    from ecgforge.evaluation.context import EvalContext
    from ecgforge.evaluation.rows import ResultRow

ALL_TASK_TYPES: frozenset[str] = frozenset({"multilabel", "multiclass", "regression"})


@dataclass(frozen=True)
class TaskSpec:
    """The labelled records a protocol asks for: ``task`` on ``cache`` (None: the run's) over three splits.

    ``val_split`` None: no validation records (a protocol with nothing to select). ``task_types``: those the
    protocol supports; loading a task of another type is refused.
    """

    protocol: str
    task: str
    task_type: TaskType | None
    cache: str | None
    train_split: str
    val_split: str | None
    test_split: str
    task_types: frozenset[str] = ALL_TASK_TYPES


class ProtocolConfig(BaseModel, extra="forbid", frozen=True):
    """The task, the label fractions and seeds, the splits, the bootstrap. Each protocol's config adds its
    ``kind``, ``inits`` and hyperparameters, and narrows ``task_types`` where it cannot score every type."""

    #: Task types this protocol can score; a task of another type is refused before anything runs.
    task_types: ClassVar[frozenset[str]] = ALL_TASK_TYPES

    task: str = Field(min_length=1, description="label set of the cache, or 'sex' / 'age'")
    task_type: TaskType | None = None
    label_fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the test records for 95% CIs (0 = off)")
    train_split: str = "train"
    test_split: str = "test"
    cache: str | None = Field(None, description="evaluate on another cache than [data].cache")
    subsample_val: bool = Field(
        True, description="draw the validation split with each label fraction as the training split is "
                          "(patient-grouped, stratified); false keeps the full validation split")

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        bad = [f for f in fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"label fractions must lie in (0, 1], got {bad}")
        return fractions

    @field_validator("task_type")
    @classmethod
    def _supported_type(cls, task_type: TaskType | None) -> TaskType | None:
        if task_type is not None and task_type not in cls.task_types:
            raise ValueError(f"this protocol scores {' / '.join(sorted(cls.task_types))} tasks only")
        return task_type

    def split_fields(self) -> dict[str, str]:
        """TOML field -> split name, for every split this table names (each must be one of ``[data.splits]``)."""
        return {"train_split": self.train_split, "test_split": self.test_split}

    @property
    def task_spec(self) -> TaskSpec:
        """What `tasks.load_task` loads for this table (a validation split where `split_fields` names one)."""
        return TaskSpec(
            protocol=self.kind, task=self.task, task_type=self.task_type, cache=self.cache,  # type: ignore[attr-defined]
            train_split=self.train_split, val_split=self.split_fields().get("val_split"),
            test_split=self.test_split, task_types=self.task_types)


class FrozenFeatureConfig(ProtocolConfig, extra="forbid", frozen=True):
    """A protocol on frozen embeddings (`frozen.FrozenFeatureProtocol`): the encoders it embeds with."""

    inits: list[Literal["pretrained", "random"]] = Field(
        default_factory=lambda: ["pretrained", "random"], min_length=1,
        description="pretrained = this run's encoder; random = the same architecture freshly initialised "
                    "with each seed (the reference every pretrained row is compared with)")


class ProbeConfig(FrozenFeatureConfig, extra="forbid", frozen=True):
    """A head trained on frozen embeddings (linear probe, robustness): its optimiser settings."""

    epochs: int = Field(100, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, gt=0)
    val_split: str = "val"
    head: Literal["linear", "mlp", "attention"] = Field(
        "linear", description="linear; mlp: one hidden layer with batch norm and dropout on the frozen "
        "features (ecg-selfsupervised's create_head1d), rows of kind 'mlp_probe'; attention: a learnable-query "
        "attention pooling over the encoder's token sequence (forward_features), the frozen head of the ECG "
        "foundation-model benchmark, rows of kind 'attention_probe'")
    head_hidden: int = Field(512, gt=0, description="hidden width of the mlp head")
    head_dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the mlp head's last layer "
                                "(half of it before its first)")
    head_heads: int = Field(16, gt=0, description="attention heads of the attention head (the benchmark's 16); "
                            "must divide the encoder's feature width")

    def split_fields(self) -> dict[str, str]:
        return {**super().split_fields(), "val_split": self.val_split}


class EvalProtocol(ABC):
    """An evaluation protocol: built as ``cls(cfg, ctx)`` from its ``Config`` and a ``registry.BuildContext``;
    ``run`` gets the run's `context.EvalContext` and returns its rows (`rows.ResultRow`). Protocols on frozen
    embeddings subclass ``frozen.FrozenFeatureProtocol`` instead, which writes ``run``."""

    Config: ClassVar[type[BaseModel]]

    def __init__(self, cfg: Any, ctx: BuildContext) -> None:
        self.cfg = cfg

    @abstractmethod
    def run(self, ctx: EvalContext) -> list[ResultRow]:
        """Every row of this table: each init x seed (x label fraction x test condition)."""
