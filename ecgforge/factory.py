"""``ecgforge.create_encoder``: an encoder by registry kind, fresh or with pretrained weights (as ``timm.create_model``).

The keyword arguments are the kind's config fields (``ResNet1dConfig``: ``depth``, ``width``, ...), validated
as a recipe's ``[model.encoder]`` table is. With ``pretrained`` (a run directory, an export, ``hf://ORG/NAME
[@REVISION]`` or a fairseq-signals ``.pt``) the encoder is ``encoder_files.load_encoder``'s: strict weights,
the input contract attached; the keyword arguments given must then equal the saved config (the weights fix
the architecture), so a typo never yields half-random weights. For a foundation-model kind (``ecgfounder``,
``merl_resnet``, ``st_mem``, ``ecg_jepa``, ``hubert_ecg``) ``pretrained`` may be the released checkpoint file,
local or ``hf://ORG/NAME/FILE[@REVISION]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from ecgforge.encoder_files import EncoderLoadError, foundation_init, load_encoder
from ecgforge.encoders import ENCODERS
from ecgforge.errors import UserError
from ecgforge.hub import is_hub_path, parse
from ecgforge.registry import build


def encoder_config_of(kind: str, config: dict[str, Any], where: str = "create_encoder") -> Any:
    """The validated config of encoder ``kind`` with ``config``'s fields; UserError (one line) otherwise."""
    if kind not in ENCODERS:
        raise UserError(f"{where}: no encoder kind {kind!r}; registered: {', '.join(sorted(ENCODERS))}")
    try:
        return ENCODERS.config(kind).model_validate({"kind": kind, **config})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "config"
        raise UserError(f"{where}({kind!r}): {loc}: {first['msg']}") from None


def create_encoder(kind: str, pretrained: str | Path | None = None, **config: Any) -> nn.Module:
    """An encoder module of registry ``kind``.

    Args:
        kind: an ``ENCODERS`` kind (``resnet1d``, ``xresnet1d``, ``cpc``, ``wav2vec2``).
        pretrained: None for fresh weights (seeded by torch's global generator; train mode), or where saved
            weights are: then the module is ``load_encoder(pretrained)`` (eval mode, ``.contract`` and
            ``.preprocess`` attached) and must be of ``kind``.
        **config: the kind's config fields; with ``pretrained``, each must equal the saved value.
    Returns:
        ``nn.Module`` mapping ``x (B, leads, T)`` to ``(B, embed_dim)``.
    """
    cfg = encoder_config_of(kind, config)  # unknown kinds and fields fail before any file is read
    if pretrained is None:
        return build(ENCODERS, cfg)
    p, s = Path(str(pretrained)), str(pretrained)
    released = ((p.is_file() and p.name not in ("encoder.json", "encoder.safetensors"))
                or (is_hub_path(s) and parse(s, file=None).filename is not None))
    if hasattr(ENCODERS[kind], "from_checkpoint") and foundation_init(pretrained) is None and released:
        pretrained = f"{kind}:{pretrained}"  # a foundation model's released file (12_lead_ECGFounder.pth, hf://...)
    encoder = load_encoder(pretrained)
    saved = encoder.contract["config"]
    if saved.get("kind") != kind:
        raise EncoderLoadError(f"{pretrained}: holds a {saved.get('kind')!r} encoder, not {kind!r}")
    given = cfg.model_dump(mode="json")
    diff = [f"{k}={given[k]!r} (saved {saved.get(k)!r})" for k in sorted(config) if given[k] != saved.get(k)]
    if diff:
        raise EncoderLoadError(f"{pretrained}: the saved {kind} differs from what was asked: {', '.join(diff)}; "
                               "leave those arguments out to use the saved config")
    return encoder


__all__ = ["create_encoder", "encoder_config_of"]
