"""Pretrained encoders as files: ``encoder.safetensors`` + ``encoder.json`` (config and input contract).

``encoder.json`` says what the weights expect: the encoder config, the sampling rate, the window, the lead
set and order, the units and normalisation, the ecgforge version and the recipe hash. Loading refuses a
mismatch rather than guessing (no silent resampling or lead reordering), and refuses a state dict with
missing or unexpected keys: a loader that silently leaves weights random is the most reported failure of
ECG SSL codebases.

Five things load: a run directory or an export (a folder holding both files), either file itself, an export
on the Hugging Face Hub (``hf://ORG/NAME[@REVISION]``, downloaded by ``ecgforge.hub`` into huggingface_hub's
cache, then loaded as a local export), and a fairseq-signals wav2vec 2.0 checkpoint (``.pt``; Oh et al. 2022),
converted by ``encoders.fairseq_import``, and a public foundation model's released checkpoint named by its encoder
kind, ``KIND:PATH`` (``ecgfounder:12_lead_ECGFounder.pth``; kinds whose class has ``from_checkpoint``: ECGFounder,
MERL, ST-MEM, ECG-JEPA, HuBERT-ECG) or ``KIND:hf://ORG/NAME/FILE[@REVISION]`` (the file downloaded into
huggingface_hub's cache), loaded strictly with the model's own input contract. Loading checks the weights file against the sha256 ``encoder.json``
records, so a file swapped or damaged after saving (or on the way from the Hub) is refused.
A fairseq checkpoint stores no input contract, so the one attached to it is fairseq-signals' default
preprocessing (``preprocess_physionet2021.py``: 500 Hz, 1-47 Hz band-pass, per-lead z-score; 5 s crops) and
is marked ``"assumed": true``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, TypeAdapter, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.encoders import ENCODERS
from ecgforge.encoders.foundation import InputContract
from ecgforge.errors import UserError, resolved_against
from ecgforge.fsio import atomic_file, atomic_write_json
from ecgforge.hub import download, download_file, is_hub_path
from ecgforge.registry import build
from ecgforge.version import __version__

FORMAT = "ecgforge-encoder"
FORMAT_VERSION = 1

# fairseq-signals' default ECG preprocessing (scripts/preprocess: resample to 500 Hz, zero-phase 3rd-order
# Butterworth 1-47 Hz, per-lead z-score with the median and std) and wav2vec 2.0's 5 s crops (2,500 samples).
FAIRSEQ_CONTRACT: dict[str, Any] = {
    "fs_hz": 500.0,
    "window_s": 5.0,
    "leads": list(CANONICAL_LEADS),
    "units": "standardised (per-lead z-score)",
    "normalisation": "fairseq-signals default: 1-47 Hz band-pass, per-lead (x - median) / std",
    "assumed": True,
}


class EncoderLoadError(UserError):
    """Weights that do not fit the encoder or the data they are given; one line."""


# ----------------------------------------------------------------------------------------------- saving


def save_encoder(encoder: nn.Module, cfg: BaseModel, out_dir: str | Path, contract: dict[str, Any]) -> None:
    """Write ``encoder.safetensors`` and ``encoder.json`` (each atomically) into ``out_dir``.

    Args:
        encoder: the module whose ``state_dict`` is saved (tensors moved to CPU).
        cfg: the encoder's validated config (pydantic model), enough to rebuild the architecture.
        contract: ``fs_hz``, ``window_s``, ``leads``, ``units``, ``normalisation``, ``recipe_hash``, ...
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_file(out_dir / "encoder.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ecgforge_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "embed_dim": int(getattr(encoder, "embed_dim", 0)),
        "weights_sha256": _file_sha256(out_dir / "encoder.safetensors"),
        **contract,
    }
    atomic_write_json(out_dir / "encoder.json", meta)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- reading


def foundation_init(init: str | Path) -> tuple[str, str] | None:
    """``(kind, path)`` for ``"KIND:PATH"`` (PATH a local file or ``hf://ORG/NAME/FILE[@REVISION]``) where KIND is a
    foundation-model encoder kind (one whose class reads released checkpoints with ``from_checkpoint``), else
    None (``hf://...`` and plain paths are not)."""
    kind, sep, rest = str(init).partition(":")
    if not sep or not rest or kind not in ENCODERS.entries:
        return None
    return (kind, rest) if hasattr(ENCODERS[kind], "from_checkpoint") else None


def _foundation(init: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A released foundation-model checkpoint, loaded strictly, with its ``encoder.json``-style metadata. A Hub
    file is downloaded into huggingface_hub's cache first and read from there as the local file it is."""
    kind, path = foundation_init(init)  # type: ignore[misc]
    cls = ENCODERS[kind]
    origin = None
    if is_hub_path(path):
        local, origin = download_file(path, beside=cls.files_beside, label=str(init))
        path = str(local)
    model = cls.from_checkpoint(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ecgforge_version": __version__,
        "config": model.cfg.model_dump(mode="json"),
        "embed_dim": int(model.embed_dim),
        "source": f"{kind} checkpoint {Path(path).name}",
        "licence": cls.licence,
        "weights": cls.weights_url,
        **model.contract.encoder_json(),
    }
    if origin is not None:  # where it came from, as for an export from the Hub
        meta["hub"] = origin
    return model, meta


def is_fairseq_checkpoint(path: str | Path) -> bool:
    if is_hub_path(path):
        return False
    p = Path(path)
    return p.suffix == ".pt" and p.is_file()


def _local(path: str | Path) -> tuple[Path, dict[str, str] | None]:
    """A local path for ``path``: itself, or the downloaded snapshot of an ``hf://`` export with its origin."""
    if is_hub_path(path):
        return download(str(path))
    return Path(path), None


def _encoder_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name in ("encoder.json", "encoder.safetensors"):
        p = p.parent
    if not p.exists():
        raise EncoderLoadError(f"{p}: no such run directory, export or encoder file{resolved_against(p)}")
    if not (p / "encoder.json").is_file() or not (p / "encoder.safetensors").is_file():
        raise EncoderLoadError(
            f"{p}: no encoder.json + encoder.safetensors here (expected a run directory, an export, "
            "or a fairseq-signals .pt checkpoint)"
        )
    return p


def read_contract(path: str | Path) -> dict[str, Any]:
    """The ``encoder.json`` of a run directory / export (or the assumed contract of a fairseq ``.pt``, or the
    contract of a foundation model's ``KIND:PATH``)."""
    if foundation_init(path) is not None:
        return _foundation(path)[1]
    if is_fairseq_checkpoint(path):
        return _fairseq(path)[1]
    local, origin = _local(path)
    d = _encoder_dir(local)
    try:
        meta = json.loads((d / "encoder.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EncoderLoadError(f"{d / 'encoder.json'}: unreadable ({exc})") from None
    if meta.get("format", FORMAT) != FORMAT or int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise EncoderLoadError(
            f"{d / 'encoder.json'}: format {meta.get('format')!r} v{meta.get('format_version')}; "
            f"this ecgforge reads {FORMAT} v{FORMAT_VERSION} (upgrade ecgforge)"
        )
    for key in ("config", "fs_hz", "leads"):
        if key not in meta:
            raise EncoderLoadError(f"{d / 'encoder.json'}: no {key!r} field; not an ecgforge encoder")
    if origin is not None:  # where it came from, in memory only (embeddings record the contract they used)
        meta["hub"] = origin
    return meta


def encoder_config(meta: dict[str, Any], source: str = "encoder.json") -> BaseModel:
    """The validated encoder config stored in ``meta["config"]``."""
    try:
        return TypeAdapter(ENCODERS.union).validate_python(meta["config"])
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise EncoderLoadError(f"{source}: config.{loc}: {first['msg']} (written by a newer ecgforge?)") from None


def check_contract(meta: dict[str, Any], *, fs_hz: float, leads: Sequence[str], source: str = "data",
                   window_s: float | None = None) -> None:
    """Refuse data whose sampling rate or lead order differs from what the encoder was trained on, and (given
    ``window_s``) windows of another length than a foundation model's input contract takes.

    Raises:
        EncoderLoadError: one line naming both values and what to do.
    """
    if abs(float(meta["fs_hz"]) - float(fs_hz)) > 1e-6:
        derive = " or set data.build (a cache recipe), from which a run derives one" if "input_contract" in meta else ""
        raise EncoderLoadError(
            f"encoder expects {meta['fs_hz']:g} Hz but {source} is {float(fs_hz):g} Hz; "
            f"build a cache at {meta['fs_hz']:g} Hz{derive} (ecgforge never resamples silently)"
        )
    if list(meta["leads"]) != list(leads):
        what = "in another order" if sorted(meta["leads"]) == sorted(leads) else "a different lead set"
        raise EncoderLoadError(
            f"encoder expects leads {' '.join(meta['leads'])} but {source} has {' '.join(leads)} ({what})"
        )
    own = meta.get("input_contract")
    if window_s is not None and own is not None and abs(float(own["window_s"]) - float(window_s)) > 1e-9:
        raise EncoderLoadError(
            f"{own.get('model', 'the encoder')} takes {float(own['window_s']):g} s windows but data.window_s is "
            f"{float(window_s):g}; set data.window_s = {float(own['window_s']):g}"
        )


def _check_state(encoder: nn.Module, state: dict[str, torch.Tensor], where: str, kind: str) -> None:
    """Exactly the encoder's keys with exactly its shapes, or one line saying what differs."""
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise EncoderLoadError(
            f"{where}: weights do not fit {kind}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise EncoderLoadError(f"{where}: {k} has shape {tuple(state[k].shape)}, {kind} needs {tuple(v.shape)}")


def _fairseq(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    from ecgforge.encoders.fairseq_import import load_fairseq_checkpoint

    model = load_fairseq_checkpoint(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ecgforge_version": __version__,
        "config": model.cfg.model_dump(mode="json"),  # the Wav2Vec2Config the importer inferred
        "embed_dim": int(model.embed_dim),
        "source": f"fairseq-signals checkpoint {Path(path).name}",
        **FAIRSEQ_CONTRACT,
    }
    return model, meta


def load_encoder_weights(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the encoder that ``encoder.json`` describes and load its weights strictly.

    Returns:
        ``(encoder, meta)``: the module in train mode on CPU and the parsed ``encoder.json``.
    """
    if foundation_init(path) is not None:
        return _foundation(path)
    if is_fairseq_checkpoint(path):
        return _fairseq(path)
    local, origin = _local(path)
    d = _encoder_dir(local)
    meta = read_contract(d)
    if origin is not None:
        meta["hub"] = origin
    cfg = encoder_config(meta, str(d / "encoder.json"))
    encoder = build(ENCODERS, cfg)
    try:
        state = load_file(str(d / "encoder.safetensors"))
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is one line for the user
        raise EncoderLoadError(f"{d / 'encoder.safetensors'}: unreadable ({type(exc).__name__}: {exc})") from None
    _check_state(encoder, state, str(d / "encoder.safetensors"), cfg.kind)  # type: ignore[attr-defined]
    want = meta.get("weights_sha256")
    if want and (got := _file_sha256(d / "encoder.safetensors")) != want:
        raise EncoderLoadError(f"{d / 'encoder.safetensors'}: sha256 {got[:12]}... differs from the "
                               f"{want[:12]}... encoder.json records; the weights were changed or damaged after saving")
    encoder.load_state_dict(state, strict=True)
    return encoder, meta


# ------------------------------------------------------------------------------------------- the module


def make_preprocess(contract: dict[str, Any], device_of: Callable[[], torch.device]) -> Callable[..., torch.Tensor]:
    """The ``preprocess`` helper attached to a loaded encoder (see ``load_encoder``)."""
    want_fs, want_leads = float(contract["fs_hz"]), list(contract["leads"])

    def preprocess(
        signal: np.ndarray,
        fs_hz: float,
        lead_names: Sequence[str],
        *,
        resample: bool = False,
        reorder: bool = False,
    ) -> torch.Tensor:
        """``signal (leads, T)`` in mV -> ``(1, leads, T')`` float32 on the encoder's device.

        Refuses a sampling rate other than ``contract["fs_hz"]`` unless ``resample=True`` (polyphase, as the
        cache builder does) and lead names in another order unless ``reorder=True``; a lead the encoder
        needs but the signal lacks is always refused. No filter or normalisation is applied: the signal
        must already be what ``contract["normalisation"]`` says.
        """
        x = np.asarray(signal, dtype=np.float32)
        names = list(lead_names)
        if x.ndim != 2 or x.shape[0] != len(names):
            raise EncoderLoadError(f"signal has shape {x.shape}; expected (leads, T) with {len(names)} leads as named")
        if names != want_leads:
            lacking = [lead for lead in want_leads if lead not in names]
            if lacking:
                raise EncoderLoadError(f"encoder expects leads {' '.join(want_leads)}; the signal lacks {' '.join(lacking)}")
            if not reorder:
                raise EncoderLoadError(
                    f"encoder expects leads {' '.join(want_leads)} but the signal has {' '.join(names)}; "
                    "pass reorder=True to reorder them"
                )
            x = x[[names.index(lead) for lead in want_leads]]
        if abs(float(fs_hz) - want_fs) > 1e-6:
            if not resample:
                raise EncoderLoadError(
                    f"encoder expects {want_fs:g} Hz but the signal is {float(fs_hz):g} Hz; pass resample=True to resample"
                )
            from ecgforge.data.cache_spec import FilterConfig
            from ecgforge.data.dsp import preprocess as resample

            x = resample(x, float(fs_hz), want_fs, FilterConfig())
        if not np.isfinite(x).all():
            raise EncoderLoadError("signal has NaN or infinite samples")
        return torch.from_numpy(np.ascontiguousarray(x))[None].to(device_of())

    return preprocess


def load_encoder(path: str | Path) -> nn.Module:
    """A ready ``nn.Module`` in eval mode from a run directory, an export (a folder, or ``hf://ORG/NAME[@REVISION]``
    on the Hugging Face Hub; needs ``pip install 'ecgforge[hub]'``), a fairseq-signals ``.pt`` or a foundation
    model's released checkpoint, ``KIND:PATH`` or ``KIND:hf://ORG/NAME/FILE[@REVISION]``.

    The module carries its input contract: ``.contract`` (the ``encoder.json`` dict: ``fs_hz``, ``window_s``,
    ``leads``, ``units``, ``normalisation``, ``config``, ...) and ``.preprocess(signal, fs_hz, lead_names,
    resample=False, reorder=False)``, which turns a ``(leads, T)`` array into the ``(1, leads, T)`` input
    the encoder expects and refuses a wrong sampling rate or lead order unless told to fix it.

    Example::

        enc = ecgforge.load_encoder("runs/quickstart")  # or "hf://my-org/ecg-simclr@v1"
        z = enc(enc.preprocess(x, fs_hz=100, lead_names=leads))  # (1, enc.embed_dim)
    """
    encoder, meta = load_encoder_weights(path)
    encoder.contract = meta  # type: ignore[assignment]
    encoder.preprocess = make_preprocess(  # type: ignore[assignment]
        meta, lambda: next(encoder.parameters(), torch.empty(0)).device
    )
    return encoder.eval()


# --------------------------------------------------------------------------- recipe `[model] init = ...`


def init_encoder_config(init: str, given: BaseModel | None) -> BaseModel:
    """The encoder config a recipe's ``init`` implies, checked against the one the recipe gives.

    A recipe may give only ``init`` (the saved config is used as is) or both; then they must be equal,
    since silently building another architecture would leave the weights unloadable or half random.
    Raises ``ValueError`` (the recipe validator turns it into ``file: model: message``).
    """
    try:
        meta = read_contract(init)
        saved = encoder_config(meta, f"{init}: encoder.json")
    except UserError as exc:
        raise ValueError(f"init: {exc}") from None
    if given is None:
        return saved
    if given != saved:
        a, b = given.model_dump(mode="json"), saved.model_dump(mode="json")
        diff = [f"{k}={a.get(k)!r} (saved {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise ValueError(
            f"init {init!r}: [model.encoder] differs from the saved encoder: {', '.join(diff)}; "
            "leave [model.encoder] out to use the saved config"
        )
    return saved


def input_contract(meta: dict[str, Any]) -> InputContract | None:
    """The model's own input contract an ``encoder.json`` (or a ``KIND:PATH`` checkpoint's metadata) carries:
    a foundation model's, or that of an encoder trained further from one; None for an ecgforge encoder."""
    own = meta.get("input_contract")
    return None if own is None else InputContract.model_validate(own)


def initial_encoder(model_cfg: Any, *, fs_hz: float, leads: Sequence[str], source: str,
                    window_s: float | None = None) -> nn.Module:
    """The encoder a run starts from: freshly built, or loaded from ``model_cfg.init`` (train mode).

    With ``init``, the saved contract is checked against the run's cache (``source``, its ``fs_hz`` and
    ``leads``; a foundation model's window against ``window_s``) and the weights are loaded strictly; they are then evaluated as they are (no ``[ssl]``) or
    trained further (``[ssl]`` continues pretraining; a fine-tuning evaluation starts from them).
    """
    init = getattr(model_cfg, "init", None)
    if init is None:
        return build(ENCODERS, model_cfg.encoder)
    encoder, meta = load_encoder_weights(init)
    check_contract(meta, fs_hz=fs_hz, leads=leads, source=f"{source} (model.init = {init!r})", window_s=window_s)
    return encoder.train()


__all__ = [
    "EncoderLoadError",
    "check_contract",
    "foundation_init",
    "init_encoder_config",
    "initial_encoder",
    "input_contract",
    "load_encoder",
    "load_encoder_weights",
    "read_contract",
    "save_encoder",
]
