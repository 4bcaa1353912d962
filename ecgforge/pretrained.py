"""Pretrained encoders as files: ``encoder.safetensors`` + ``encoder.json`` (config and input contract).

``encoder.json`` says what the weights expect: the encoder config, the sampling rate, the window, the lead
set and order, the units and normalisation. Loading refuses a mismatch rather than guessing, and refuses a
state dict with missing or unexpected keys: a loader that silently leaves weights random is the most
reported failure of ECG SSL codebases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from safetensors.torch import load_file, save_file
from torch import nn

import ecgforge
from ecgforge.artifacts import atomic_write_json
from ecgforge.encoders import EncoderConfig
from ecgforge.errors import UserError


class EncoderLoadError(UserError):
    """Weights that do not fit the encoder or the data they are given; one line."""


def save_encoder(encoder: nn.Module, cfg: Any, out_dir: str | Path, contract: dict[str, Any]) -> None:
    """Write ``encoder.safetensors`` and ``encoder.json`` (atomically) into ``out_dir``.

    Args:
        cfg: the encoder's validated config (pydantic model).
        contract: ``fs_hz``, ``window_s``, ``leads``, ``units``, ``normalisation``, ``recipe_hash``, ...
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    tmp = out_dir / ".encoder.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out_dir / "encoder.safetensors")
    meta = {
        "format": "ecgforge-encoder",
        "format_version": 1,
        "ecgforge_version": ecgforge.__version__,
        "config": cfg.model_dump(mode="json"),
        "embed_dim": int(getattr(encoder, "embed_dim", 0)),
        **contract,
    }
    atomic_write_json(out_dir / "encoder.json", meta)


def _encoder_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not (p / "encoder.json").is_file() or not (p / "encoder.safetensors").is_file():
        raise EncoderLoadError(f"{p}: no encoder.json + encoder.safetensors here (a run directory or an export)")
    return p


def read_contract(path: str | Path) -> dict[str, Any]:
    return json.loads((_encoder_dir(path) / "encoder.json").read_text())


def check_contract(meta: dict[str, Any], *, fs_hz: float, leads: list[str], source: str = "data") -> None:
    """Refuse data whose sampling rate or lead order differs from what the encoder was trained on."""
    if abs(float(meta["fs_hz"]) - float(fs_hz)) > 1e-6:
        raise EncoderLoadError(
            f"encoder expects {meta['fs_hz']} Hz but {source} is {fs_hz} Hz; build a cache at {meta['fs_hz']} Hz"
        )
    if list(meta["leads"]) != list(leads):
        raise EncoderLoadError(f"encoder expects leads {meta['leads']} but {source} has {list(leads)}")


def load_encoder_weights(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the encoder that ``encoder.json`` describes and load its weights strictly."""
    from ecgforge.registry import build

    d = _encoder_dir(path)
    meta = json.loads((d / "encoder.json").read_text())
    cfg = TypeAdapter(EncoderConfig).validate_python(meta["config"])
    encoder = build(cfg)
    state = load_file(str(d / "encoder.safetensors"))
    missing, unexpected = set(encoder.state_dict()) - set(state), set(state) - set(encoder.state_dict())
    if missing or unexpected:
        raise EncoderLoadError(
            f"{d}: weights do not fit {cfg.kind}: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderLoadError(f"{d}: {str(exc).splitlines()[-1].strip()}") from None
    return encoder, meta


def load_encoder(path: str | Path) -> nn.Module:
    """A ready ``nn.Module`` from a run directory or export; ``.contract`` holds its input contract.

    Example::

        enc = ecgforge.load_encoder("runs/quickstart")
        z = enc(x)  # x (B, 12, T) in mV at enc.contract["fs_hz"], leads in enc.contract["leads"]
    """
    encoder, meta = load_encoder_weights(path)
    encoder.contract = meta  # type: ignore[attr-defined]
    return encoder.eval()


def state_dict_hash(encoder: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["EncoderLoadError", "check_contract", "load_encoder", "load_encoder_weights", "save_encoder"]
