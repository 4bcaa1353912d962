"""Typed results rows: what every evaluation protocol returns and results.json, reports and exports read.

A protocol fills the common fields and puts what is its own into ``conditions`` (the test condition that,
with init and label fraction, identifies a row: a noise level, a lead subset) or ``facts`` (what the row
reports beside its metrics: the learning rates used, ``k``, patient counts). Reports group by the common
fields plus the conditions, and draw one curve per condition key, so a new protocol needs no edit there.
In results.json a row is one flat object (the keys of ``conditions`` and ``facts`` at the top level, and
``condition_keys`` naming the former), as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The metric each task type's rows lead with (and model selection uses).
PRIMARY = {"multilabel": "macro_auroc", "multiclass": "macro_auroc", "regression": "mae"}

#: Keys of the flat JSON row that are ResultRow fields (the rest are conditions or facts).
_FIELDS = ("kind", "task", "task_type", "init", "label_fraction", "seed", "split", "metrics", "ci95",
           "dropped_classes", "excluded_classes", "primary", "reference", "n_train_records", "n_val_records",
           "n_test_records", "versus")

#: The mark a row's macro AUROC carries in the results table and the report where it averages fewer classes
#: than the task has (`ResultRow.excluded_classes`), and the line explaining it.
EXCLUDED_MARK = "§"
EXCLUDED_LEGEND = (f"{EXCLUDED_MARK} macro_auroc leaves classes out: results.json excluded_classes names them and why "
                   "(without training positives / negatives, undefined in test)")


@dataclass
class ResultRow:
    """One evaluation result: a protocol x task x init x label fraction x seed (x condition).

    Attributes:
        metrics: metric name -> value (None where undefined on this test set).
        ci95: metric name -> [low, high] 95% interval (bootstrap over test records, or over patients for identification).
        dropped_classes: classes the macro AUROC leaves out; ``excluded_classes``: why, reason -> classes
            (``without_training_positives``, ``without_training_negatives``: the training subset never / always
            showed them; ``undefined_in_test``: no positive or no negative test record), empty when none is.
        primary: the metric reports lead with and model selection uses (``macro_auroc``, ``mae``, ``top1``).
        reference: the row is tested on the unperturbed condition (clean, all leads): label-efficiency
            curves and comparisons use these; condition curves start from them.
        conditions: test-condition fields that tell rows apart beyond init / fraction / seed.
        facts: anything else the protocol reports for the row.
        versus: on a ``pretrained`` row, reference init -> its paired difference ``{"delta", "ci95",
            "p_value"}`` by metric (``evaluation.paired``).
        evidence: what the metrics were computed from (``evaluation.paired.Evidence``), in memory only.
    """

    kind: str
    task: str
    task_type: str
    init: str
    label_fraction: float
    seed: int
    split: str
    metrics: dict[str, float | None]
    primary: str
    ci95: dict[str, list[float]] = field(default_factory=dict)
    dropped_classes: list[str] = field(default_factory=list)
    excluded_classes: dict[str, list[str]] = field(default_factory=dict)
    reference: bool = True
    n_train_records: int | None = None
    n_val_records: int | None = None
    n_test_records: int | None = None
    conditions: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    versus: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _FIELDS if getattr(self, k) is not None}
        for key in ("versus", "excluded_classes"):  # only where there is something to say
            if not getattr(self, key):
                del out[key]
        out.update(self.conditions)
        out.update(self.facts)
        if self.conditions:
            out["condition_keys"] = list(self.conditions)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ResultRow:
        """The row a results.json object describes (rows written before ``primary`` existed get it from the
        task type)."""
        # Rows written before `condition_keys` existed: robustness rows named their conditions these keys.
        cond_keys = list(d.get("condition_keys", [k for k in _LEGACY_CONDITIONS if k in d]))
        known = {k: d[k] for k in _FIELDS if k in d}
        known.setdefault("primary", _default_primary(d))
        known.setdefault("split", "test")
        known.setdefault("seed", 0)
        known.setdefault("label_fraction", 1.0)
        known.setdefault("task_type", "")
        known.setdefault("metrics", {})
        known.setdefault("reference", int(d.get("noise_level", 0) or 0) == 0 and str(d.get("leads", "12")) == "12")
        rest = {k: v for k, v in d.items() if k not in _FIELDS and k != "condition_keys"}
        return cls(**known, conditions={k: rest.pop(k) for k in cond_keys if k in rest}, facts=rest)

    def key(self) -> tuple[Any, ...]:
        """What a group of seeds shares: protocol, task, init, label fraction, conditions."""
        return (self.kind, self.task, self.init, self.label_fraction, *sorted(self.conditions.items()))

    def value(self, metric: str | None = None) -> float | None:
        v = self.metrics.get(metric or self.primary)
        return float(v) if isinstance(v, (int, float)) else None

    def mark(self, metric: str) -> str:
        """`EXCLUDED_MARK` where ``metric`` is the macro AUROC and it leaves classes out, else ``""``."""
        return EXCLUDED_MARK if metric == "macro_auroc" and self.excluded_classes else ""


_LEGACY_CONDITIONS = ("noise_level", "leads")


def _default_primary(d: dict[str, Any]) -> str:
    return PRIMARY.get(d.get("task_type", ""), next(iter(d.get("metrics", {})), ""))


def rows_from_json(rows: list[dict[str, Any]]) -> list[ResultRow]:
    return [ResultRow.from_json(r) for r in rows]
