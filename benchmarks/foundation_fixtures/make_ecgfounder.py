"""Fidelity fixture for ``ecgforge.encoders.ecgfounder``: run the reference Net1D and filter on fixed inputs.

    python benchmarks/foundation_fixtures/make_ecgfounder.py REF_DIR tests/fixtures/foundation/ecgfounder

``REF_DIR`` is a checkout of PKUDigitalHealth/ECGFounder (its ``net1d.py``, ``util.py`` and ``dataset.py`` are
imported from there; their imports need matplotlib, scikit-learn, h5py, tqdm, wfdb, torchvision).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit, key_shapes, write_fixture  # noqa: E402

SMALL = dict(in_channels=12, base_filters=8, ratio=1, filter_list=[8, 16, 16, 32], m_blocks_list=[2, 1, 2, 1],
             kernel_size=16, stride=2, groups_width=4, n_classes=5, use_bn=False, use_do=False)
FULL = dict(base_filters=64, ratio=1, filter_list=[64, 160, 160, 400, 400, 1024, 1024],
            m_blocks_list=[2, 2, 2, 3, 3, 4, 4], kernel_size=16, stride=2, groups_width=16, n_classes=150,
            use_bn=False, use_do=False)  # finetune_model.py ft_12lead_ECGFounder / ft_1lead_ECGFounder, ptbxl_eval.py


def synthetic_ecg(rng: np.random.Generator, leads: int, t: int, fs: float) -> np.ndarray:
    """Spiky beats at 72 bpm + baseline wander + 50 Hz hum + noise (float64, mV), so every filter step acts."""
    time = np.arange(t) / fs
    beats = np.exp(-(((time[None] % (60 / 72)) - 0.3) ** 2) / (2 * 0.01**2))
    x = beats * rng.uniform(0.5, 1.5, (leads, 1))
    x = x + 0.3 * np.sin(2 * np.pi * 0.2 * time)[None] + 0.1 * np.sin(2 * np.pi * 50 * time)[None]
    return x + 0.02 * rng.standard_normal((leads, t))


def main(ref: Path, out: Path) -> None:
    sys.path.insert(0, str(ref))
    from dataset import LVEF_12lead_cls_Dataset
    from net1d import Net1D
    from util import filter_bandpass

    torch.manual_seed(0)
    model = Net1D(**SMALL, return_features=True).eval()
    # Move the never-applied BatchNorm tensors off their init values, so a loader that used them would differ.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                m.running_mean.normal_()
    seq: dict[str, torch.Tensor] = {}
    model.stage_list[-1].register_forward_hook(lambda _m, _i, o: seq.setdefault("out", o))
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        logits, features = model(x)

    # The contract's preprocessing: util.filter_bandpass then the dataset's z-score, on a 10 s 500 Hz record.
    raw = synthetic_ecg(np.random.default_rng(0), 12, 5000, 500.0)
    prepared = LVEF_12lead_cls_Dataset.z_score_normalization(None, filter_bandpass(raw, 500))

    tensors = {
        "input": x,
        "features": features,
        "sequence": seq["out"],
        "logits": logits,
        "raw": torch.from_numpy(raw),
        "prepared": torch.from_numpy(prepared),
        **{f"state.{k}": v for k, v in model.state_dict().items()},
    }
    with torch.device("meta"):
        released = {f"{n}_lead": key_shapes(Net1D(in_channels=n, **FULL)) for n in (12, 1)}
    provenance = {
        "repo": "PKUDigitalHealth/ECGFounder",
        "commit": git_commit(ref),
        "files": ["net1d.py (Net1D)", "util.py (filter_bandpass)", "dataset.py (LVEF_12lead_cls_Dataset.z_score_normalization)"],
        "small_config": SMALL,
        "full_config": FULL,
        "weights": "torch.manual_seed(0), Net1D default init; BatchNorm tensors (unused, use_bn=False) randomised",
        "input": "torch.randn(2, 12, 1000) after the model is built",
        "outputs": {"features": "Net1D(return_features=True)[1]", "logits": "Net1D(...)[0] (the head we drop)",
                    "sequence": "forward hook on stage_list[-1]"},
        "preprocessing": "raw = synthetic 12 x 5000 at 500 Hz (make_ecgfounder.synthetic_ecg, seed 0); "
                         "prepared = z_score_normalization(util.filter_bandpass(raw, 500))",
        "released_keys": "Net1D(in_channels=12|1, **full_config).state_dict() key -> shape, the layout of "
                         "12_lead_ECGFounder.pth / 1_lead_ECGFounder.pth ['state_dict'] as finetune_model.py loads it",
    }
    write_fixture(out, tensors, released, provenance)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
