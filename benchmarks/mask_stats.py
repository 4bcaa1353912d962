"""Coverage and span length of a trained adv_mask run's masks, to match the random-mask control to them.

Loads the run's last checkpoint (`app.report.load_trained_objective`), draws ``--n`` random 2.5 s windows of its
pretraining split, augments them as the objective's second view is augmented in training, and measures the
applied (binarised) masks, computed in train mode as in training with `maskers.random_mask.mask_statistics`. Prints the statistics as JSON and the
``--set`` lines that make `maskers.random_mask` draw masks with the same mean coverage and span length.

    python benchmarks/mask_stats.py runs/x/adv_D
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ecgforge.app.report import load_trained_objective
from ecgforge.maskers.random_mask import mask_statistics
from ecgforge.objectives.adv_mask import binarise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=512, help="windows measured")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    trained = load_trained_objective(args.run)
    if trained is None or not hasattr(trained.objective, "masker"):
        raise SystemExit(f"{args.run}: not an adversarial-masking run with a checkpoint")
    obj, plan = trained.objective, trained.plan
    cache, window = plan.cache, plan.window
    idx = plan.split_indices[plan.recipe.data.pretrain_split]
    rng = np.random.default_rng(args.seed)
    recs = rng.choice(idx, size=min(args.n, len(idx)), replace=False)
    xs = []
    for i in recs:
        n = int(cache.lengths[int(i)])
        start = int(rng.integers(0, n - window + 1))
        xs.append(np.asarray(cache.read(int(i), start, window), dtype=np.float32))
    x = torch.from_numpy(np.stack(xs))
    torch.manual_seed(args.seed)
    # Train mode (batch statistics in the masker's batch norm), as the masks were computed when the encoder saw
    # them; nothing is saved, so the running statistics it updates do not matter.
    obj.masker.train()
    with torch.no_grad():
        v2 = obj.augment(x)
        applied = binarise(obj.masker(v2), obj.cfg.binarization)
    stats = mask_statistics(applied, cache.fs_hz)
    stats["coverage_mean"] = float(np.mean(stats["coverage"]))
    stats["span_s_mean"] = float(np.mean(stats["span_s"]))
    stats["checkpoint"] = str(trained.checkpoint)
    print(json.dumps(stats))
    print(f"--set 'ssl.masker={{kind=\"random_mask\",n_masks={applied.shape[1]},"
          f"coverage={stats['coverage_mean']:.3f},span_s={stats['span_s_mean']:.3f}}}'")


if __name__ == "__main__":
    main()
