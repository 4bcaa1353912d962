"""Import fairseq-signals ECG wav2vec2 checkpoints (Oh et al. 2022; the public ECG-FM weights) into ``Wav2Vec2``.

A fairseq checkpoint is a pickled dict with ``model`` (the state dict) and usually ``cfg`` (an OmegaConf tree
whose ``model`` node holds the architecture). Layouts seen in the wild, all handled here:

* pretraining (``Wav2Vec2Model`` / ``Wav2Vec2CMSCModel``): our keys, plus the quantiser and target heads;
* fine-tuned, classic fairseq: everything under ``w2v_encoder.w2v_model.``, head under ``w2v_encoder.proj``;
* fine-tuned, fairseq-signals >= 2023 (``ECGTransformerFinetuningModel``): encoder under ``encoder.``,
  head ``proj``, positional conv at ``conv_pos.pos_conv.0`` instead of ``encoder.pos_conv.0``;
* the positional conv's weight norm as ``weight_g``/``weight_v`` (old ``nn.utils.weight_norm``) or as
  ``parametrizations.weight.original0/1`` (new API, which ``Wav2Vec2`` uses).

Keys an encoder does not need are dropped by the patterns in ``UNUSED``; any other unknown key is an error, and
so is any tensor whose shape differs from the model the config describes.
"""

from __future__ import annotations

import ast
import logging
import operator
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ecgforge.encoders.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from ecgforge.errors import UserError, resolved_against
from ecgforge.registry import BuildContext

log = logging.getLogger(__name__)

# Pattern -> why an encoder does not need it.
UNUSED: dict[str, str] = {
    r"^quantizer\.": "Gumbel quantiser of the pretraining targets",
    r"^input_quantizer\.": "input quantiser (quantize_input variants)",
    r"^project_q\.": "projection of the quantised targets",
    r"^project_inp\.": "projection after the input quantiser",
    r"^final_proj\.": "projection of the context for the contrastive logits",
    r"^target_glu\.": "GLU on the targets (target_glu variants)",
    r"^(w2v_encoder\.)?proj\.": "fine-tuning classification head",
}

_OURS = [
    r"mask_emb",
    r"feature_extractor\.conv_layers\.\d+\.0\.(weight|bias)",
    r"feature_extractor\.conv_layers\.\d+\.2\.(weight|bias)",
    r"feature_extractor\.conv_layers\.\d+\.2\.1\.(weight|bias)",
    r"layer_norm\.(weight|bias)",
    r"post_extract_proj\.(weight|bias)",
    r"encoder\.pos_conv\.0\.(bias|parametrizations\.weight\.original[01])",
    r"encoder\.layers\.\d+\.self_attn\.[qkv]_proj\.(weight|bias)",
    r"encoder\.layers\.\d+\.self_attn\.out_proj\.(weight|bias)",
    r"encoder\.layers\.\d+\.(self_attn_layer_norm|final_layer_norm|fc1|fc2)\.(weight|bias)",
    r"encoder\.layer_norm\.(weight|bias)",
]
_OURS_RE = re.compile("|".join(f"(?:{p})" for p in _OURS))
_RENAMES = [
    (re.compile(r"^conv_pos\.pos_conv\.0\."), "encoder.pos_conv.0."),
    (re.compile(r"\.weight_g$"), ".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), ".parametrizations.weight.original1"),
]
# fairseq-signals model-cfg name -> our Wav2Vec2Config field.
_CFG_FIELDS = {
    "extractor_mode": "extractor_mode",
    "conv_bias": "conv_bias",
    "encoder_layers": "layers",
    "encoder_embed_dim": "dim",
    "encoder_attention_heads": "heads",
    "encoder_ffn_embed_dim": "ffn_dim",
    "layer_norm_first": "layer_norm_first",
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input",
    "dropout_features": "dropout_features",
    "encoder_layerdrop": "layerdrop",
    "feature_grad_mult": "feature_grad_mult",
    "conv_pos": "conv_pos",
    "conv_pos_groups": "conv_pos_groups",
    "in_d": "in_leads",
}


class FairseqImportError(UserError):
    """A checkpoint this importer cannot map onto ``Wav2Vec2``; one line."""


def _normalise_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    for prefix in ("w2v_encoder.w2v_model.", "encoder."):
        if any(k.startswith(prefix + "feature_extractor.") for k in sd):
            sd = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}
            break
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        for pattern, repl in _RENAMES:
            k = pattern.sub(repl, k)
        out[k] = v
    return out


def _parse_conv_layers(spec: Any) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(256, 2, 2)] * 4"``, without ``eval``."""
    if not isinstance(spec, str):
        return [tuple(int(v) for v in layer) for layer in spec]  # type: ignore[misc]
    ops = {ast.Add: operator.add, ast.Mult: operator.mul}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise FairseqImportError(
            f"conv_feature_layers: cannot read {spec!r} (expected e.g. '[(256, 2, 2)] * 4')"
        )

    return [tuple(int(v) for v in layer) for layer in ev(ast.parse(spec, mode="eval").body)]  # type: ignore[misc]


def _infer_config(sd: dict[str, Tensor], model_cfg: dict[str, Any]) -> Wav2Vec2Config:
    conv_idx = sorted(
        {
            int(m.group(1))
            for k in sd
            if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight$", k))
        }
    )
    if not conv_idx or conv_idx != list(range(len(conv_idx))):
        raise FairseqImportError(
            "no feature_extractor.conv_layers.N.0.weight keys: not a wav2vec2 ECG checkpoint"
        )
    if "conv_feature_layers" in model_cfg:
        conv_layers = _parse_conv_layers(model_cfg["conv_feature_layers"])
    else:
        # Strides are not in the weights; every fairseq-signals ECG config uses stride == kernel ((256, 2, 2)).
        shapes = [sd[f"feature_extractor.conv_layers.{i}.0.weight"].shape for i in conv_idx]
        conv_layers = [(int(s[0]), int(s[2]), int(s[2])) for s in shapes]
    fields: dict[str, Any] = {"conv_layers": conv_layers}
    fields["in_leads"] = int(sd["feature_extractor.conv_layers.0.0.weight"].shape[1])
    fields["conv_bias"] = "feature_extractor.conv_layers.0.0.bias" in sd
    fields["extractor_mode"] = (
        "layer_norm" if "feature_extractor.conv_layers.0.2.1.weight" in sd else "default"
    )
    if "encoder.layer_norm.weight" not in sd:
        raise FairseqImportError("no encoder.layer_norm.weight key: not a wav2vec2 ECG checkpoint")
    dim = int(sd["encoder.layer_norm.weight"].shape[0])
    fields["dim"] = dim
    fields["heads"] = max(dim // 64, 1)  # not in the weights; fairseq's configs all use 64-wide heads
    fields["layers"] = len({m.group(1) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    if "encoder.layers.0.fc1.weight" in sd:
        fields["ffn_dim"] = int(sd["encoder.layers.0.fc1.weight"].shape[0])
    v = sd.get("encoder.pos_conv.0.parametrizations.weight.original1")
    if v is not None:
        fields["conv_pos"] = int(v.shape[2])
        fields["conv_pos_groups"] = dim // int(v.shape[1])
    for theirs, ours in _CFG_FIELDS.items():
        if theirs in model_cfg and model_cfg[theirs] is not None:
            fields[ours] = model_cfg[theirs]
    try:
        return Wav2Vec2Config(**fields)
    except ValueError as err:
        raise FairseqImportError(
            f"checkpoint config is not a valid wav2vec2 config: {err}".replace("\n", " ")
        ) from None


def convert_fairseq_wav2vec2(
    state_dict: dict[str, Tensor], cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Tensor], Wav2Vec2Config]:
    """fairseq-signals wav2vec2 ``model`` state dict -> (state dict for ``Wav2Vec2``, its config).

    ``cfg`` is the checkpoint's ``cfg`` (or just its ``model`` node) as plain dicts; without it the architecture
    is read from tensor shapes, assuming stride == kernel in the conv front end, 64-wide attention heads,
    post-norm (``layer_norm_first=False``) and Oh et al.'s dropouts. A fine-tuned checkpoint saved without
    ``mask_emb`` gets fairseq's U(0, 1) initialisation for it (it only matters for masked pretraining).
    """
    model_cfg = dict((cfg or {}).get("model", cfg or {}))
    sd = _normalise_keys(state_dict)
    dropped = sorted(k for k in sd if any(re.match(p, k) for p in UNUSED))
    sd = {k: v for k, v in sd.items() if k not in dropped}
    unknown = sorted(k for k in sd if not _OURS_RE.fullmatch(k))
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise FairseqImportError(f"unknown keys in the fairseq checkpoint: {', '.join(unknown[:5])}{more}")
    config = _infer_config(sd, model_cfg)
    if "mask_emb" not in sd:
        sd["mask_emb"] = torch.rand(config.dim)
        log.info("fairseq checkpoint has no mask_emb (fine-tuned without masking): initialised U(0, 1)")
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = {k: v.shape for k, v in Wav2Vec2(config, BuildContext()).state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise FairseqImportError(
            f"fairseq checkpoint lacks {len(missing)} encoder tensors, e.g. {missing[0]}"
        )
    for k, shape in expected.items():
        if tuple(sd[k].shape) != tuple(shape):
            raise FairseqImportError(
                f"{k}: checkpoint shape {tuple(sd[k].shape)}, config implies {tuple(shape)}"
            )
    extra = sorted(set(sd) - set(expected))
    if extra:  # e.g. post_extract_proj when C_conv == D; a config/weights disagreement
        raise FairseqImportError(
            f"fairseq tensors the configured model has no place for: {', '.join(extra[:5])}"
        )
    if dropped:
        log.info("dropped %d pretraining/head tensors: %s", len(dropped), ", ".join(dropped))
    return sd, config


class _Stub:
    """Inert stand-in for a class pickled in a checkpoint (OmegaConf nodes, enums, Namespace): it records its
    constructor arguments and state, so the config can be read without importing or running foreign code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _plain(obj: Any, depth: int = 0) -> Any:
    """Stubs, dicts and lists -> plain Python; OmegaConf containers via their ``_content``, nodes via ``_val``."""
    if depth > 50:
        return None
    if isinstance(obj, _Stub):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            for key in ("_content", "_val"):
                if key in state:
                    return _plain(state[key], depth + 1)
            return {k: _plain(v, depth + 1) for k, v in state.items() if not str(k).startswith("_")}
        return (
            _plain(obj.args[0], depth + 1) if len(obj.args) == 1 else [_plain(a, depth + 1) for a in obj.args]
        )
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - fall through to the stubbed load below
        if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
            raise FairseqImportError(
                f"{path}: needs torch >= 2.6 to read its pickled config ({err})"
            ) from None
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    stubs = []
    for name in names:
        module, _, qualname = name.rpartition(".")
        stubs.append(type(qualname, (_Stub,), {"__module__": module, "__qualname__": qualname}))
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is one line for the user
        raise FairseqImportError(
            f"{path}: cannot read as a fairseq checkpoint ({type(err).__name__}: {err})"
        ) from None


def load_fairseq_checkpoint(path: str | Path) -> Wav2Vec2:
    """Read a fairseq-signals wav2vec2 checkpoint and return the loaded ``Wav2Vec2`` (strict load).

    Always ``weights_only``: classes the checkpoint pickles (OmegaConf config, enums) are replaced by inert stubs,
    so no code from the file runs and neither fairseq nor omegaconf needs to be installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FairseqImportError(f"{path}: no such checkpoint file{resolved_against(path)}")
    ckpt = _load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise FairseqImportError(f"{path}: no 'model' entry; not a fairseq checkpoint")
    cfg = _plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    state, config = convert_fairseq_wav2vec2(ckpt["model"], cfg if isinstance(cfg, dict) else None)
    model = Wav2Vec2(config, BuildContext())
    model.load_state_dict(state, strict=True)
    return model
