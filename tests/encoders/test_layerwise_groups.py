"""ST-MEM's and ECG-JEPA's early / late parameters for layer-wise fine-tuning rates are the ECG foundation-model
benchmark's: AI4HealthUOL/ecg-fm-benchmarking@6367295666569d63d6642594bbe3ae9ac56a1644,
``code/clinical_ts/models/fm_ecg.py``, ``StMemWrapper.get_params`` and ``ECGJEPAWrapper.get_params``, whose rules
are transcribed below (their ``encoder_params`` are our early group, their ``predictor_params`` our late one).
"""

from __future__ import annotations

import pytest
from torch import nn

from ecgforge.encoders.ecg_jepa import ECGJEPA, ECGJEPAConfig
from ecgforge.encoders.st_mem import STMEM, STMEMConfig
from ecgforge.evaluation.finetune import layer_halves


def st_mem_rule(name: str) -> str | None:
    """``StMemWrapper.get_params``, verbatim but for the return values. Its names carry an ``encoder.`` prefix,
    which ``self.model.encoder.named_parameters()`` (the ViT itself) does not give, so the committed code
    matches nothing; the names below are given the prefix its rules are written for."""
    if name in ["encoder.pos_embedding", "encoder.sep_embedding"]:
        return "early"
    elif name.startswith(("encoder.lead_embeddings", "encoder.to_patch_embedding")):
        return "early"
    elif any(name.startswith(f"encoder.block{i}.") for i in [0, 1, 2]):
        return "early"
    elif any(name.startswith(f"encoder.block{i}.") for i in range(3, 12)):
        return "late"
    elif name.startswith(("encoder.norm", "encoder.dropout")):
        return "late"
    return None


def ecg_jepa_rule(name: str) -> str | None:
    """``ECGJEPAWrapper.get_params``, verbatim but for the return values (``pos_embed`` is a buffer here)."""
    if name in ["pos_embed", "W_P.weight", "W_P.bias"]:
        return "early"
    elif any(name.startswith(f"encoder_blocks.blocks.{i}.") for i in range(3)):
        return "early"
    elif any(name.startswith(f"encoder_blocks.blocks.{i}.") for i in range(3, 12)):
        return "late"
    elif name.startswith(("norm.weight", "norm.bias")):
        return "late"
    return None


CASES = {
    # five blocks: 0-2 early and 3-4 late under the benchmark's rule, where the middle split would cut at 2
    "st_mem": (STMEM(STMEMConfig(seq_len=300, patch_size=30, width=32, depth=5, mlp_dim=32, heads=2, dim_head=16)),
               lambda n: st_mem_rule(f"encoder.{n}")),
    "ecg_jepa": (ECGJEPA(ECGJEPAConfig(embed_dim=32, depth=5, heads=2, patch_size=10, n_patches=5)), ecg_jepa_rule),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_split_is_the_benchmarks(name: str) -> None:
    encoder, rule = CASES[name]
    early, late, line = layer_halves(encoder)
    assert line == f"{type(encoder).__name__}.layerwise_groups()"
    named = {id(p): n for n, p in encoder.named_parameters()}
    got = {"early": [named[id(p)] for p in early], "late": [named[id(p)] for p in late]}
    want = {"early": [], "late": []}
    for n, _ in encoder.named_parameters():
        side = rule(n)
        assert side is not None, f"the benchmark's rule leaves {n} out"
        want[side].append(n)
    assert got == want
    block2 = "block2." if name == "st_mem" else "blocks.2."
    assert any(block2 in n for n in got["early"])  # the generic middle split of five blocks puts block 2 late


def test_blocks_past_twelve_are_late() -> None:
    """The benchmark's rule stops at block 11 (its models have 12); a deeper model keeps them with the late ones."""
    encoder = ECGJEPA(ECGJEPAConfig(embed_dim=8, depth=14, heads=2, patch_size=10, n_patches=2, mlp_ratio=1.0))
    early, late = encoder.layerwise_groups()
    named = {id(p): n for n, p in encoder.named_parameters()}
    assert {named[id(p)].split(".")[2] for p in late if named[id(p)].startswith("encoder_blocks")} == {
        str(i) for i in range(3, 14)}
    assert len(early) + len(late) == len(list(encoder.parameters()))
    assert all(isinstance(p, nn.Parameter) for p in early + late)
