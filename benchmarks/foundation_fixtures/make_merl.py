"""Fidelity fixture for ``ecgforge.encoders.merl``: run MERL's reference ResNet-18 on fixed inputs.

    python benchmarks/foundation_fixtures/make_merl.py REF_DIR tests/fixtures/foundation/merl

``REF_DIR`` is a checkout of cheliu-computation/MERL-ICML2024 (``utils/resnet1d.py`` is imported from there).
The reference class has no width knob, so the weights are not stored: they are drawn by
``tests/encoders/seeded_weights.seeded_state`` from the released layout and a seed, and their sha256 is stored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from common import git_commit, key_shapes, write_fixture  # noqa: E402

from tests.encoders.seeded_weights import seeded_state, state_sha256  # noqa: E402

SEED = 27


def main(ref: Path, out: Path) -> None:
    sys.path.insert(0, str(ref / "utils"))
    from resnet1d import ResNet18

    model = ResNet18().eval()  # utils/resnet1d.py: the pretraining encoder, saved as *_encoder.pth
    released = key_shapes(model)
    state = seeded_state(released, SEED)
    model.load_state_dict(state, strict=True)
    torch.manual_seed(0)
    x = torch.rand(2, 12, 1000)  # min-max scaled input lies in [0, 1]
    with torch.no_grad():
        sequence = model(x)  # utils/resnet1d.py ResNet.forward returns layer4's output
        features = torch.nn.AdaptiveAvgPool1d(1)(sequence).flatten(1)  # finetune/models/resnet1d.py: avgpool
    provenance = {
        "repo": "cheliu-computation/MERL-ICML2024",
        "commit": git_commit(ref),
        "files": ["utils/resnet1d.py (ResNet18 = ResNet(BasicBlock, [2, 2, 2, 2]))",
                  "finetune/models/resnet1d.py (avgpool before the linear head)"],
        "config": "ResNet18() (full size; the class has no size arguments)",
        "weights": f"tests/encoders/seeded_weights.seeded_state(released_keys, seed={SEED}); not stored",
        "weights_sha256": state_sha256(state),
        "seed": SEED,
        "input": "torch.manual_seed(0); torch.rand(2, 12, 1000)",
        "outputs": {"sequence": "ResNet.forward (layer4 output)", "features": "AdaptiveAvgPool1d(1) of it"},
        "released_keys": "ResNet18().state_dict() key -> shape: the layout of MERL's *_encoder.pth "
                         "(utils_trainer.py saves ecg_encoder.state_dict())",
    }
    write_fixture(out, {"input": x, "sequence": sequence, "features": features}, released, provenance)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
