"""Evaluation protocols (``[[eval]]`` tables in a recipe).

A protocol is a class built as ``cls(cfg, ctx)`` (its config, named by its ``Config`` attribute, and a
``registry.BuildContext``) whose ``run(ctx: EvalContext)`` returns `ResultRow`s (``evaluation.rows``). One on
frozen embeddings subclasses ``frozen.FrozenFeatureProtocol`` and writes only how it scores them
(``centroid.py`` is the example CONTRIBUTING.md shows). Add one: write ``<name>.py``, then add one line to the
table; reports, the CLI table and exports read the typed rows.
"""

from ecgforge.registry import Table

PROTOCOLS = Table(
    "eval",
    {
        "linear_probe": "ecgforge.evaluation.linear_probe:LinearProbe",
        "finetune": "ecgforge.evaluation.finetune:Finetune",
        "knn": "ecgforge.evaluation.knn:KNN",
        "identification": "ecgforge.evaluation.identification:Identification",
        "robustness": "ecgforge.evaluation.robustness:Robustness",
        "centroid": "ecgforge.evaluation.centroid:NearestCentroid",
    },
)

__getattr__ = PROTOCOLS.module_getattr("EvalConfig")  # the config union, made on first use
