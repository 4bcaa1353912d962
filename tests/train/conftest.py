"""Helpers for the training tests: a tiny WFDB-built cache and run recipes that train in seconds on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import wfdb

from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS

ROOT = Path(__file__).resolve().parents[2]
N_RECORDS = 24
FS_HZ = 100


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 records of 12 leads, 4 s at 100 Hz, written with ``wfdb.wrsamp`` and cached through ``wfdb_folder``;
    label ``A``/``B`` (1 Hz vs 2 Hz base rhythm) for a linear probe."""
    return write_tiny_cache(tmp_path_factory.mktemp("tiny"))


def write_tiny_cache(root: Path) -> Path:
    """`tiny_cache`'s records and cache, under ``root``; the cache's path (record ``r<i>`` has label ``"AB"[i % 2]``)."""
    folder = root / "wfdb"
    folder.mkdir()
    rows = ["record,label"]
    t = np.arange(4 * FS_HZ) / FS_HZ
    for i in range(N_RECORDS):
        rng = np.random.default_rng(i)
        x = np.sin(2 * np.pi * (1.0 + i % 2) * t)[None] * rng.uniform(0.2, 1.5, (12, 1))
        x = x + 0.05 * rng.standard_normal((12, t.size))
        wfdb.wrsamp(f"r{i:02d}", fs=FS_HZ, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x.T,
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
        rows.append(f"r{i:02d},{'AB'[i % 2]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    spec = CacheRecipe.model_validate({
        "name": "tiny", "out": str(root / "tiny.h5"),
        "source": {"kind": "wfdb_folder", "path": str(folder), "labels_csv": str(root / "labels.csv")},
        "signal": {"fs_hz": FS_HZ},
    })
    return build_cache(spec, workers=1).path


def recipe_dict(cache: Path, *, eval_: bool = False, **train: Any) -> dict[str, Any]:
    """SimCLR on a resnet1d-18 of width 8, 1 s windows; 16 training records (train batches of 4 -> 4 per epoch)."""
    ids = [f"r{i:02d}" for i in range(N_RECORDS)]
    r: dict[str, Any] = {
        "schema_version": 1, "name": "tiny", "seed": 7,
        "data": {"cache": str(cache), "window_s": 1.0,
                 "splits": {"train": {"record_id": ids[:16]}, "val": {"record_id": ids[16:20]},
                            "test": {"record_id": ids[20:]}}},
        "model": {"encoder": {"kind": "resnet1d", "depth": 18, "width": 8}},
        "ssl": {"kind": "simclr", "projector_hidden": 32, "projector_dim": 16,
                "augment": [{"kind": "random_resized_crop", "min_scale": 0.5}, {"kind": "gaussian_noise", "std_mv": 0.05}]},
        "train": {"epochs": 3, "batch_size": 4, "log_every_steps": 1, "checkpoint_every_steps": 3,
                  "optim": {"encoder": {"kind": "adam", "lr": 1e-3}},
                  "schedule": {"kind": "cosine", "warmup_steps": 2}, **train},
    }
    if eval_:
        r["eval"] = [{"kind": "linear_probe", "task": "label", "epochs": 3, "bootstrap": 0, "inits": ["pretrained"]}]
    return r


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(recipe))
    return path


def cli(*args: str, launcher: list[str] | None = None) -> list[str]:
    """The command line of ``ecgforge ARGS`` run by this interpreter (or under ``launcher``)."""
    return [*(launcher or [sys.executable, "-m"]), "ecgforge", *args]


def env(**extra: str) -> dict[str, str]:
    """Subprocess environment: one thread each, so that two runs on this machine compute bit for bit alike."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120", **extra}


def run_cli(*args: str, launcher: list[str] | None = None, timeout: float = 240,
            **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args, launcher=launcher), cwd=ROOT, env=env(**extra_env), capture_output=True,
                          text=True, timeout=timeout)


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}
