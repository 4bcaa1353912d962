"""Evaluation protocols (``[[eval]]`` tables in a recipe).

A protocol is a class whose constructor takes its validated config and whose ``run(ctx: EvalContext)``
returns `ResultRow`s (``evaluation.rows``). Add one: write ``<name>.py`` with the class and its
``<Name>Config``, then add one line to the table; reports, the CLI table and exports read the typed rows.
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
    },
)

__getattr__ = PROTOCOLS.module_getattr("EvalConfig")  # the config union, made on first use
