"""Data parallelism on CPU (gloo): N processes with batch B train like one process with batch N*B.

Gradient scaling of ``gather_with_grad``. Process r's loss L_r averages over its own 2B anchors, and each anchor
sees all N*B samples as candidates; the loss of one process with the combined batch is L = (1/N) sum_r L_r. DDP
averages parameter gradients, g = (1/N) sum_r J_r^T dz_r, where J_r is process r's Jacobian of its embeddings
z_r and dz_r the gradient its backward gives z_r. Since dL/dtheta = sum_r J_r^T dL/dz_r, we need
dz_r = N dL/dz_r = sum_s dL_s/dz_r: the backward of the gather must SUM the gradients that every process's loss
sends to z_r (all-reduce sum, then take this rank's slice), not average them. That is what it does.

BatchNorm: torch's SyncBatchNorm has no CPU kernel, so on CPU each process normalises over its own B samples and
a BN model cannot match the N*B run exactly. The end-to-end check therefore uses an encoder without batch
statistics (wav2vec2: GroupNorm/LayerNorm, per sample), a projection head without BatchNorm (``ssl.projector_bn = false``),
no augmentation and no dropout: every remaining
difference is the data-parallel machinery (sharding, gradient averaging, gathered negatives, metric reduction).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ecgforge.objectives.losses import nt_xent
from tests.gloo import spawn_gloo
from tests.train.conftest import ROOT, env, losses, recipe_dict, write_recipe

ENTRY = "ecgforge"

B, D_IN, D, N = 4, 10, 6, 2


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(N * B, D_IN, generator=g), torch.randn(N * B, D_IN, generator=g)
    torch.manual_seed(0)
    return x1, x2, torch.nn.Linear(D_IN, D)


def _worker(rank: int, out: str) -> None:
    x1, x2, model = _data()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    rows = slice(rank * B, (rank + 1) * B)
    loss = nt_xent(ddp(x1[rows]), ddp(x2[rows]), temperature=0.5)
    loss.backward()
    torch.save({"grad": model.weight.grad.clone(), "loss": loss.detach()}, f"{out}/{rank}.pt")


def test_two_processes_with_gathered_negatives_get_the_gradient_of_the_combined_batch(tmp_path: Path) -> None:
    x1, x2, model = _data()
    loss = nt_xent(model(x1), model(x2), temperature=0.5)
    loss.backward()
    spawn_gloo(_worker, N, tmp_path, str(tmp_path))
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(N)]
    for p in parts:  # DDP leaves the averaged gradient on every process
        torch.testing.assert_close(p["grad"], model.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack([p["loss"] for p in parts]).mean(), loss.detach())
    # Guard against a vacuous pass: a different batch split gives a different gradient.
    half = nt_xent(model(x1[:B]), model(x2[:B]), temperature=0.5)
    model.weight.grad = None
    half.backward()
    assert not torch.allclose(model.weight.grad, parts[0]["grad"], atol=1e-4)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_matches_one_process_with_the_combined_batch(
        tiny_cache: Path, tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("the accelerate command is not installed beside this interpreter")
    encoder = {"kind": "wav2vec2", "conv_layers": [[16, 4, 2], [16, 3, 2]], "layers": 1, "dim": 16, "heads": 2,
               "ffn_dim": 32, "dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0,
               "dropout_features": 0.0}

    def recipe(batch: int) -> dict:
        r = recipe_dict(tiny_cache, max_steps=3, batch_size=batch, checkpoint_every_steps=100,
                        optim={"encoder": {"kind": "sgd", "lr": 0.05, "momentum": 0.9}})
        r["model"]["encoder"] = encoder
        r["ssl"]["augment"] = []
        r["ssl"]["projector_bn"] = False  # per-sample head: SyncBatchNorm has no CPU kernel
        return r

    one = write_recipe(tmp_path / "one.toml", recipe(8))
    two = write_recipe(tmp_path / "two.toml", recipe(4))
    a = subprocess.run([sys.executable, "-m", ENTRY, "run", str(one), "--out", str(tmp_path / "one")], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=240)
    assert a.returncode == 0, a.stderr[-3000:]
    # `--cpu` would select Accelerate's single-process (or MPI) launcher; torchrun processes use gloo on CPU
    # when ACCELERATE_USE_CPU is set (see docs/scaling.md).
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", ENTRY]
    b = subprocess.run([*launcher, "run", str(two), "--out", str(tmp_path / "two")], cwd=ROOT,
                       env=env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True, timeout=240)
    assert b.returncode == 0, b.stderr[-3000:]
    import json

    env_json = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env_json["world_size"] == 2
    ckpt = tmp_path / "two" / "checkpoints" / "step_3"  # one checkpoint, each process's RNG state in it
    assert {"random_states_0.pkl", "random_states_1.pkl", "progress.json"} <= {p.name for p in ckpt.iterdir()}
    la, lb = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert la.keys() == lb.keys() == {1, 2, 3}
    for step in la:  # metrics are averaged over processes: the mean of the two halves' losses
        assert lb[step] == pytest.approx(la[step], rel=1e-4), (step, la, lb)
    wa, wb = (load_file(str(tmp_path / d / "encoder.safetensors")) for d in ("one", "two"))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
