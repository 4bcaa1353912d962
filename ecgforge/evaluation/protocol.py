"""What every transfer protocol's ``[[eval]]`` table says, and the head hyperparameters probes share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class ProtocolConfig(BaseModel, extra="forbid", frozen=True):
    """The task, the label fractions and seeds, the splits, the bootstrap. Each protocol's config adds its
    ``kind``, ``inits`` and hyperparameters."""

    task: str = Field(min_length=1, description="label set of the cache, or 'sex' / 'age'")
    task_type: Literal["multilabel", "multiclass", "regression"] | None = None
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


class ProbeConfig(ProtocolConfig, extra="forbid", frozen=True):
    """A head trained on frozen embeddings (linear probe, robustness): its optimiser settings."""

    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)
    epochs: int = Field(100, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, gt=0)
    val_split: str = "val"
    head: Literal["linear", "mlp"] = Field(
        "linear", description="linear, or mlp: one hidden layer with batch norm and dropout on the frozen "
        "features (ecg-selfsupervised's create_head1d); mlp rows are reported as kind 'mlp_probe'")
    head_hidden: int = Field(512, gt=0, description="hidden width of the mlp head")
    head_dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the mlp head's last layer "
                                "(half of it before its first)")
