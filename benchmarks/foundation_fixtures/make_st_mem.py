"""Fidelity fixture for ``ecgforge.encoders.st_mem``: run ST-MEM's reference encoder and transforms on fixed inputs.

    python benchmarks/foundation_fixtures/make_st_mem.py REF_DIR tests/fixtures/foundation/st_mem

``REF_DIR`` is a checkout of bakqui/ST-MEM (``models/encoder/st_mem_vit.py`` and ``util/transforms.py`` are
imported from there; they need einops).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit, key_shapes, write_fixture  # noqa: E402

SMALL = dict(seq_len=300, patch_size=30, num_leads=12, width=32, depth=2, mlp_dim=64, heads=4, dim_head=8)


def main(ref: Path, out: Path) -> None:
    sys.path.insert(0, str(ref))
    from models.encoder.st_mem_vit import ST_MEM_ViT, st_mem_vit_base
    from util import transforms as T

    torch.manual_seed(0)
    model = ST_MEM_ViT(**SMALL).eval()
    tokens: dict[str, torch.Tensor] = {}
    # The tokens before pooling: the output of the last block (SEP tokens are removed in the test).
    getattr(model, f"block{SMALL['depth'] - 1}").register_forward_hook(lambda _m, _i, o: tokens.setdefault("h", o))
    x = torch.randn(2, 12, 300)
    with torch.no_grad():
        features = model.forward_encoding(x)

    # The contract's per-window preprocessing (configs/downstream/st_mem.yaml eval_transforms after n_crop).
    rng = np.random.default_rng(0)
    t = np.arange(2250) / 250.0
    raw = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.5, 1.5, (12, 1)) + 0.4 * np.sin(2 * np.pi * 0.1 * t)[None]
    raw = raw + 0.05 * rng.standard_normal((12, 2250))
    raw[3] = 0.0  # a flat lead in a live window: standardised with the window's statistics
    steps = [T.HighpassFilter(fs=250, cutoff=0.67), T.LowpassFilter(fs=250, cutoff=40), T.Standardize(axis=(-1, -2))]
    prepared = raw
    for step in steps:
        prepared = step(prepared)

    tensors = {"input": x, "features": features, "hidden": tokens["h"], "raw": torch.from_numpy(raw),
               "prepared": torch.from_numpy(np.ascontiguousarray(prepared)),
               **{f"state.{k}": v for k, v in model.state_dict().items()}}
    released = key_shapes(st_mem_vit_base(num_leads=12))  # on CPU: its init calls .item(), which meta refuses
    provenance = {
        "repo": "bakqui/ST-MEM",
        "commit": git_commit(ref),
        "files": ["models/encoder/st_mem_vit.py (ST_MEM_ViT, st_mem_vit_base)", "models/encoder/vit.py (TransformerBlock)",
                  "util/transforms.py (HighpassFilter, LowpassFilter, Standardize)"],
        "small_config": SMALL,
        "weights": "torch.manual_seed(0), ST_MEM_ViT default init (randn embeddings)",
        "input": "torch.randn(2, 12, 300) after the model is built",
        "outputs": {"features": "ST_MEM_ViT.forward_encoding (mean of the lead-patch tokens, then norm)",
                    "hidden": "forward hook on the last block: (B, 12 * (n + 2), width), SEP tokens included"},
        "preprocessing": "raw = 12 x 2250 at 250 Hz (sines + noise, seed 0, the 4th lead flat); prepared = "
                         "Standardize(axis=(-1, -2))(LowpassFilter(250, 40)(HighpassFilter(250, 0.67)(raw)))",
        "released_keys": "st_mem_vit_base(num_leads=12).state_dict() key -> shape: the layout of encoder.pth['model'] "
                         "(main_pretrain.py saves model.encoder)",
    }
    write_fixture(out, tensors, released, provenance)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
