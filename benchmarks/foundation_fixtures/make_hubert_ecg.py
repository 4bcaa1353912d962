"""Fidelity fixture for ``ecgforge.encoders.hubert_ecg``: run HuBERT-ECG's reference model and preprocessing.

    python benchmarks/foundation_fixtures/make_hubert_ecg.py REF_DIR tests/fixtures/foundation/hubert_ecg

``REF_DIR`` is a checkout of Edoar-do/HuBERT-ECG; ``code/hubert_ecg.py``, ``code/utils.py`` and ``code/dataset.py``
are imported from there (they need transformers, biosppy, peakutils, loguru, neurokit2, iterative-stratification,
torchmetrics, torcheval).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit, key_shapes, write_fixture  # noqa: E402

SMALL = dict(conv_dim=(16,) * 5, conv_kernel=(10, 3, 3, 2, 2), conv_stride=(4, 2, 2, 2, 2), conv_bias=False,
             hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, classifier_proj_size=8,
             ensemble_length=1, vocab_sizes=[10], mask_time_prob=0.33)
# pretrain.py, largeness "base" with downsampling_factor 5 (the released hubert_ecg_base); small: 512/8/8/2048.
FULL = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048),
        "large": dict(hidden_size=960, num_hidden_layers=16, num_attention_heads=12, intermediate_size=3840)}
CONV = dict(conv_dim=(512,) * 5, conv_kernel=(10, 3, 3, 2, 2), conv_stride=(4, 2, 2, 2, 2), classifier_proj_size=256,
            ensemble_length=1, vocab_sizes=[500], mask_time_prob=0.33)


def main(ref: Path, out: Path) -> None:
    sys.path.insert(0, str(ref / "code"))
    from dataset import ECGDataset
    from hubert_ecg import HuBERTECG, HuBERTECGConfig
    from utils import ecg_preprocessing

    torch.manual_seed(0)
    model = HuBERTECG(HuBERTECGConfig(**SMALL)).eval()
    x = torch.randn(2, 1200)  # 12 leads x 1 s at 100 Hz, concatenated
    with torch.no_grad():
        hidden = model(x, return_dict=True).last_hidden_state

    # The contract: ecg_preprocessing on a 10 s record at 500 Hz, stored as .npy, read back by the dataset
    # (first 5 s, leads concatenated, decimated by 5), as finetune.py / test.py feed the model.
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500.0
    raw = np.sin(2 * np.pi * 1.1 * t)[None] * rng.uniform(0.5, 1.5, (12, 1)) + 0.3 * np.sin(2 * np.pi * 0.3 * t)[None]
    raw = raw + 0.05 * rng.standard_normal((12, 5000)) + np.linspace(0, 0.5, 5000)[None]
    record = ecg_preprocessing(raw, 500)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "ecg_0.npy", record)
        (Path(tmp) / "set.csv").write_text("filename,age,sex,label\necg_0.npy,60,male,1\n")
        ds = ECGDataset(str(Path(tmp) / "set.csv"), tmp, downsampling_factor=5, pretrain=False, encode=True)
        sequence, _ = ds[0]

    hf_state = model.state_dict()
    # code/hubert_ecg_classification.py HuBERTForECGClassification.forward: x = last_hidden_state.mean(dim=1).
    tensors = {"input": x, "hidden": hidden, "features": hidden.mean(dim=1), "raw": torch.from_numpy(raw),
               "record": torch.from_numpy(np.ascontiguousarray(record)), "sequence": sequence.double(),
               **{f"state.{k}": v for k, v in hf_state.items()}}
    with torch.device("meta"):
        released = {size: key_shapes(HuBERTECG(HuBERTECGConfig(**CONV, **dims))) for size, dims in FULL.items()}
    provenance = {
        "repo": "Edoar-do/HuBERT-ECG",
        "commit": git_commit(ref),
        "files": ["code/hubert_ecg.py (HuBERTECG, HuBERTECGConfig)", "code/pretrain.py (sizes)",
                  "code/utils.py (ecg_preprocessing)", "code/dataset.py (ECGDataset.__getitem__, encode=True)",
                  "code/hubert_ecg_classification.py (mean pooling)"],
        "small_config": SMALL,
        "full_configs": {k: {**CONV, **v} for k, v in FULL.items()},
        "weights": "torch.manual_seed(0), HuBERTECG(HuBERTECGConfig(**small_config)) default init",
        "input": "torch.randn(2, 1200) after the model is built",
        "outputs": {"hidden": "HuBERTECG(...)(input).last_hidden_state (eval mode: no masking)",
                    "features": "hidden.mean(dim=1), the pooling of hubert_ecg_classification.py"},
        "preprocessing": "raw = 12 x 5000 at 500 Hz (sines, drift, noise; seed 0); record = "
                         "utils.ecg_preprocessing(raw, 500); sequence = ECGDataset(..., downsampling_factor=5, "
                         "pretrain=False, encode=True)[0][0] on record saved as .npy",
        "released_keys": "HuBERTECG(HuBERTECGConfig(**full_configs[size])).state_dict() key -> shape (the "
                         "transformers version in 'transformers' names the weight norm)",
    }
    import transformers

    provenance["transformers"] = transformers.__version__
    write_fixture(out, tensors, released, provenance)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
