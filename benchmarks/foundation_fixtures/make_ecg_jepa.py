"""Fidelity fixture for ``ecgforge.encoders.ecg_jepa``: run ECG-JEPA's reference encoder on fixed inputs.

    python benchmarks/foundation_fixtures/make_ecg_jepa.py REF_DIR tests/fixtures/foundation/ecg_jepa

``REF_DIR`` is a checkout of sehunfromdaegu/ECG_JEPA (``ecg_jepa.py`` and ``pos_encoding.py`` are imported from
there; they need timm).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit, key_shapes, write_fixture  # noqa: E402

# MaskTransformer.representation hard-codes 2,500 samples in patches of 50, so only the width and depth shrink.
SMALL = dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=4, predictor_embed_dim=16, predictor_depth=1,
             predictor_num_heads=2, c=8, pos_type="sincos", mask_scale=(0, 0), leads=list(range(8)))
FULL = dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=16, predictor_embed_dim=384,
            predictor_depth=6, predictor_num_heads=12, c=8, pos_type="sincos", mask_scale=(0, 0),
            leads=list(range(8)))  # models.py load_encoder


def main(ref: Path, out: Path) -> None:
    sys.path.insert(0, str(ref))
    from ecg_jepa import ecg_jepa

    torch.manual_seed(0)
    encoder = ecg_jepa(**SMALL).encoder.eval()
    x = torch.randn(2, 8, 2500)
    with torch.no_grad():
        features = encoder.representation(x)
    tensors = {"input": x, "features": features, **{f"state.{k}": v for k, v in encoder.state_dict().items()}}
    with torch.device("cpu"):  # the sin-cos table is computed in numpy at init; meta would not hold it
        released = key_shapes(ecg_jepa(**FULL).encoder)
    provenance = {
        "repo": "sehunfromdaegu/ECG_JEPA",
        "commit": git_commit(ref),
        "files": ["ecg_jepa.py (ecg_jepa, MaskTransformer.representation)", "pos_encoding.py", "models.py (load_encoder)"],
        "small_config": SMALL,
        "full_config": FULL,
        "weights": "torch.manual_seed(0), ecg_jepa(**small_config).encoder with its own init",
        "input": "torch.randn(2, 8, 2500) after the model is built",
        "outputs": {"features": "MaskTransformer.representation(input)"},
        "released_keys": "ecg_jepa(**full_config).encoder.state_dict() key -> shape: the layout of the released "
                         "checkpoints' 'encoder' entry (pretrain_ECG_JEPA.py saves {'encoder', 'epoch'})",
    }
    write_fixture(out, tensors, released, provenance)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
