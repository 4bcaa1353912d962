"""Shared helpers of the fidelity-fixture scripts (run outside the test suite, with the reference code on a
path given on the command line; none of the reference code is in this repository).

Each script writes ``tests/fixtures/foundation/<model>/``: ``fixture.safetensors`` (the input, the state dict
under ``state.``, the reference outputs), ``released_keys.json`` (the full-size layout: key -> shape) and
``provenance.json`` (repository, commit, files, classes, configs, command, library versions).
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def git_commit(path: Path) -> str:
    """The commit a reference checkout is at: ``git rev-parse HEAD``, or ``COMMIT`` written next to an export."""
    marker = path / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def key_shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def compact_json(obj: Any, indent: int = 0) -> str:
    """JSON with one line per leaf entry (a key and its shape), so a layout diffs line by line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict) and any(isinstance(v, dict) for v in obj.values()):
        body = ",\n".join(f"{pad}{json.dumps(k)}: {compact_json(v, indent + 1).strip()}" for k, v in obj.items())
        return "{\n" + body + "\n" + " " * indent + "}" + ("\n" if indent == 0 else "")
    if isinstance(obj, dict):
        body = ",\n".join(f"{pad}{json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
        return "{\n" + body + "\n" + " " * indent + "}" + ("\n" if indent == 0 else "")
    return json.dumps(obj)


def write_fixture(out: Path, tensors: dict[str, torch.Tensor], released: dict[str, Any], provenance: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out / "fixture.safetensors"))
    (out / "released_keys.json").write_text(compact_json(released))
    provenance = {
        **provenance,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    size = (out / "fixture.safetensors").stat().st_size
    print(f"{out}: fixture.safetensors {size / 1e6:.2f} MB, {len(tensors)} tensors")
