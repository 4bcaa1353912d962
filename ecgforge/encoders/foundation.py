"""The public ECG foundation models as ecgforge encoders: their input contracts as data, and strict loading of
their released checkpoint files.

Each model (``ecgfounder.py``, ``merl.py``, ``st_mem.py``, ``ecg_jepa.py``) is our own code written from the
architecture its authors publish, named so that the released state dict maps onto it key for key. Two things
are shared and live here:

* `InputContract`: what the network must be fed, read from the model's own inference code (sampling rate,
  window and stride, the leads and their order, filters, normalisation). The encoders take ecgforge's input
  (``x (B, 12, T)``, canonical lead order, mV, at ``contract.fs_hz``) and do the window-level steps themselves
  (`select_leads`, `normalise`), so every ecgforge protocol feeds each model its own input; the filters are
  data plus `apply_filters`, which runs exactly the reference's scipy calls on ``(leads, T)`` arrays.
* `strict_state`: the released state dict is accepted only when every tensor is accounted for. A key the
  model has no place for, a key it lacks, or a shape that differs is one line naming the key; keys a model does
  not need (a classification head, a decoder) are dropped only by an explicit, named `KeyRule`. This is the
  failure the ECG foundation-model benchmark's ``strict=False`` loaders leave silent (weights left random).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.errors import UserError, resolved_against

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    """A released checkpoint that does not fit the encoder; one line naming the file and the key."""


# ------------------------------------------------------------------------------------------ filters as data


class Notch(BaseModel, extra="forbid", frozen=True):
    """``scipy.signal.iirnotch(hz, q, fs)`` applied forward and backward with ``filtfilt(b, a)``."""

    kind: Literal["notch"] = "notch"
    hz: float = Field(gt=0)
    q: float = Field(gt=0)

    def describe(self) -> str:
        return f"notch {self.hz:g} Hz (Q {self.q:g})"


class Butterworth(BaseModel, extra="forbid", frozen=True):
    """``scipy.signal.butter(order, ...)``, zero phase: ``filtfilt(b, a)`` (``form = "ba"``) or
    ``sosfiltfilt(sos)`` (``form = "sos"``); a band-pass when both edges are given."""

    kind: Literal["butterworth"] = "butterworth"
    order: int = Field(ge=1)
    low_hz: float | None = Field(None, gt=0, description="high-pass edge")
    high_hz: float | None = Field(None, gt=0, description="low-pass edge")
    form: Literal["ba", "sos"]

    def describe(self) -> str:
        band = ("band-pass" if self.low_hz and self.high_hz else "high-pass" if self.low_hz else "low-pass")
        edges = "-".join(f"{e:g}" for e in (self.low_hz, self.high_hz) if e)
        return f"Butterworth {band} {edges} Hz (order {self.order}, zero phase)"


class MedianBaseline(BaseModel, extra="forbid", frozen=True):
    """Subtract ``scipy.signal.medfilt(x, k)`` with ``k = int(window_s * fs) + 1``, made odd (baseline wander)."""

    kind: Literal["median_baseline"] = "median_baseline"
    window_s: float = Field(gt=0)

    def describe(self) -> str:
        return f"median baseline removal ({self.window_s:g} s)"


class FIR(BaseModel, extra="forbid", frozen=True):
    """``scipy.signal.firwin(n, [low_hz, high_hz], pass_zero=False, fs=fs)`` with ``n = int(taps_s * fs)`` made
    odd, applied with ``filtfilt(b, [1])`` (biosppy's ``filter_signal(ftype="FIR", band="bandpass")``)."""

    kind: Literal["fir"] = "fir"
    taps_s: float = Field(gt=0, description="filter length in seconds (biosppy's order = int(0.3 * fs))")
    low_hz: float = Field(gt=0)
    high_hz: float = Field(gt=0)

    def describe(self) -> str:
        return f"FIR band-pass {self.low_hz:g}-{self.high_hz:g} Hz ({self.taps_s:g} s taps, zero phase)"


FilterStep = Annotated[Union[Notch, Butterworth, MedianBaseline, FIR], Field(discriminator="kind")]  # noqa: UP007


def apply_filters(x: np.ndarray, fs_hz: float, steps: Sequence[FilterStep]) -> np.ndarray:
    """Run ``steps`` in order on ``x (leads, T)`` (float64 inside, as scipy does), each lead independently.

    Each step is the reference's own scipy call (named on the step's class), so the result equals the
    reference preprocessing on the same array.
    """
    from scipy import signal as sps  # deferred: half a second to import, and only preprocessing needs it

    y = np.asarray(x, dtype=np.float64)
    for step in steps:
        if isinstance(step, Notch):
            b, a = sps.iirnotch(step.hz, step.q, fs_hz)
            y = sps.filtfilt(b, a, y, axis=-1)
        elif isinstance(step, Butterworth):
            if step.low_hz and step.high_hz:
                btype, wn = "bandpass", [step.low_hz, step.high_hz]
            elif step.low_hz:
                btype, wn = "highpass", step.low_hz
            elif step.high_hz:
                btype, wn = "lowpass", step.high_hz
            else:
                continue
            if step.form == "sos":
                y = sps.sosfiltfilt(sps.butter(step.order, wn, btype=btype, fs=fs_hz, output="sos"), y, axis=-1)
            else:
                b, a = sps.butter(step.order, wn, btype=btype, fs=fs_hz)
                y = sps.filtfilt(b, a, y, axis=-1)
        elif isinstance(step, FIR):
            n = int(step.taps_s * fs_hz)
            n += 1 - n % 2
            b = sps.firwin(n, [step.low_hz, step.high_hz], pass_zero=False, fs=fs_hz)
            y = sps.filtfilt(b, np.array([1.0]), y, axis=-1)
        elif isinstance(step, MedianBaseline):
            k = int(step.window_s * fs_hz) + 1
            k += 1 - k % 2
            y = y - np.stack([sps.medfilt(lead, kernel_size=k) for lead in y.reshape(-1, y.shape[-1])]).reshape(y.shape)
    return np.ascontiguousarray(y)


# ------------------------------------------------------------------------------------ normalisation as data


class Normalisation(BaseModel, extra="forbid", frozen=True):
    """Scaling of one window, statistics over the whole ``(leads, T)`` window (``over = "window"``) or per lead.

    * ``zscore``: ``(x - mean) / (std + eps)`` (population std); with ``zero_if_flat`` the result is 0 where
      ``std == 0`` (and ``eps`` is not added), as ST-MEM's ``Standardize``;
    * ``minmax``: ``low + (high - low) * (x - min) / (max - min + eps)``;
    * ``none``: the signal as it is (mV).
    """

    kind: Literal["none", "zscore", "minmax"]
    over: Literal["window", "lead"] = "window"
    eps: float = Field(0.0, ge=0)
    zero_if_flat: bool = False
    low: float = 0.0
    high: float = 1.0

    def describe(self) -> str:
        where = "the whole window (all leads together)" if self.over == "window" else "each lead"
        if self.kind == "none":
            return "none (mV as recorded)"
        if self.kind == "zscore":
            den = "std (0 where std = 0)" if self.zero_if_flat else f"(std + {self.eps:g})"
            return f"z-score over {where}: (x - mean) / {den}"
        return f"min-max over {where} to [{self.low:g}, {self.high:g}]: (x - min) / (max - min + {self.eps:g})"


def normalise(x: Tensor, norm: Normalisation) -> Tensor:
    """``x (B, L, T)`` -> same shape, scaled as ``norm`` says (in the input's dtype)."""
    if norm.kind == "none":
        return x
    dims = (-2, -1) if norm.over == "window" else (-1,)
    if norm.kind == "zscore":
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, correction=0)
        if norm.zero_if_flat:
            flat = std == 0
            return torch.where(flat, torch.zeros_like(x), (x - mean) / torch.where(flat, torch.ones_like(std), std))
        return (x - mean) / (std + norm.eps)
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return norm.low + (norm.high - norm.low) * (x - lo) / (hi - lo + norm.eps)


# ------------------------------------------------------------------------------------------ the contract


class InputContract(BaseModel, extra="forbid", frozen=True):
    """What a foundation model's network must be fed, from its own inference code (``reference``).

    The encoder's ``forward`` takes ecgforge's canonical input (all 12 leads, mV, ``fs_hz``, ``window_s``) and
    applies `leads` and a window-scope `normalisation` itself; `filters` run on whole records
    (``filter_scope = "record"``) or on each window (``"window"``) before that, and a record-scope
    normalisation on whole records: `prepare_record` does both for a record.
    """

    model: str
    fs_hz: float = Field(gt=0)
    window_s: float = Field(gt=0, description="the network's input length")
    stride_s: float = Field(gt=0, description="step between windows of a longer record")
    leads: tuple[str, ...] = Field(description="the network's input leads, in its order")
    units: str = "mV"
    resampling: str = Field(description="how the reference code brings other rates to fs_hz")
    filters: tuple[FilterStep, ...] = ()
    filter_scope: Literal["record", "window"] = "record"
    normalisation: Normalisation
    normalisation_scope: Literal["record", "window"] = Field(
        "window", description="window: inside the encoder, per window; record: by prepare_record, per record")
    aggregation: Literal["mean"] = Field("mean", description="how window embeddings of a record are combined")
    reference: str = Field(description="repository@commit and the files the contract is read from")
    notes: str = ""

    @property
    def window(self) -> int:
        """The network's input length in samples."""
        return round(self.window_s * self.fs_hz)

    def prepare_record(self, x: np.ndarray) -> np.ndarray:
        """The record-scope steps on one record ``x (12, T)`` (canonical leads, mV, ``fs_hz``): the filters when
        ``filter_scope = "record"``, then the normalisation when ``normalisation_scope = "record"``; float32."""
        y = np.asarray(x, dtype=np.float64)
        if self.filter_scope == "record" and self.filters:
            y = apply_filters(y, self.fs_hz, self.filters)
        if self.normalisation_scope == "record":
            y = normalise(torch.from_numpy(y)[None], self.normalisation)[0].numpy()
        return y.astype(np.float32)

    def prepare_window(self, x: np.ndarray) -> np.ndarray:
        """The window-scope filters on ``x (..., 12, window)`` (the encoder applies the rest); float32."""
        if self.filter_scope != "window" or not self.filters:
            return np.asarray(x, dtype=np.float32)
        return apply_filters(x, self.fs_hz, self.filters).astype(np.float32)

    @property
    def record_steps(self) -> bool:
        """Whether `prepare_record` changes a record (filters or normalisation at record scope)."""
        return (self.filter_scope == "record" and bool(self.filters)) or self.normalisation_scope == "record"

    @property
    def window_steps(self) -> bool:
        """Whether `prepare_window` changes a window (filters at window scope)."""
        return self.filter_scope == "window" and bool(self.filters)

    def describe_steps(self) -> str:
        """The filters and scaling, in order and by scope, in a few words: ``"per record: notch 50 Hz (Q 30),
        ...; per window: z-score ..."``."""
        scoped: dict[str, list[str]] = {"record": [], "window": []}
        scoped[self.filter_scope] += [f.describe() for f in self.filters]
        scoped[self.normalisation_scope].append(self.normalisation.describe())
        return "; ".join(f"per {scope}: {', '.join(steps)}" for scope, steps in scoped.items() if steps)

    def encoder_json(self) -> dict[str, Any]:
        """The ``encoder.json`` contract fields: what ``forward`` takes (canonical 12 leads in mV at ``fs_hz``),
        and the model's own contract in full under ``input_contract``."""
        return {
            "fs_hz": self.fs_hz,
            "window_s": self.window_s,
            "stride_s": self.stride_s,
            "leads": list(CANONICAL_LEADS),
            "units": "mV",
            "normalisation": (f"leads {' '.join(self.leads)} selected inside the encoder; "
                              f"{self.normalisation.describe()} ({'per record' if self.normalisation_scope == 'record' else 'inside the encoder'})"),
            "filters": [f.model_dump() for f in self.filters],
            "filter_scope": self.filter_scope,
            "input_contract": self.model_dump(mode="json"),
        }


def select_leads(x: Tensor, leads: Sequence[str]) -> Tensor:
    """``x (B, 12, T)`` in canonical order -> ``(B, len(leads), T)`` in the order ``leads`` names."""
    if x.shape[-2] != len(CANONICAL_LEADS):
        raise ValueError(f"expected the 12 canonical leads on axis -2, got shape {tuple(x.shape)}")
    if tuple(leads) == CANONICAL_LEADS:
        return x
    index = torch.tensor([CANONICAL_LEADS.index(lead) for lead in leads], device=x.device)
    return x.index_select(-2, index)


class FoundationEncoder(nn.Module):
    """Base of the foundation-model encoders: ecgforge's input in, the model's own input to its network.

    Subclasses pass their config to ``__init__`` (``cfg.contract`` is their input contract) and implement
    ``network_features`` (the reference network on its own input) and ``pool``. ``forward_features(x)`` /
    ``forward(x)`` take ``x (B, 12, T)`` canonical, mV. Loading a released file (`from_checkpoint`, `convert`)
    is shared too: a subclass states where its file keeps the state dict (``STATE_ENTRIES``), what it drops
    (``DROP``), how its sizes are read (``infer_config``) and, where its names differ from ours, ``rename``.
    """

    contract: InputContract
    Config: ClassVar[type[BaseModel]]
    licence: ClassVar[str]
    weights_url: ClassVar[str]
    input_differentiable: ClassVar[bool] = True  # False where preprocessing inside forward runs outside autograd
    #: entries of a released file that may hold the state dict, tried in order (`unwrap`)
    STATE_ENTRIES: ClassVar[tuple[str, ...]] = ("state_dict", "model")
    #: keys of a released state dict that are not part of the encoder (dropped and logged by `strict_state`)
    DROP: ClassVar[tuple[KeyRule, ...]] = ()
    #: what `infer_config` raises on tensors too damaged to read: ``Config()`` is then assumed, so that the
    #: strict check names the keys that differ from the released default
    UNREADABLE: ClassVar[tuple[type[Exception], ...]] = (KeyError, ValueError)

    def __init__(self, cfg: Any) -> None:
        """``cfg``: the model's config, whose ``contract`` property is its input contract."""
        super().__init__()
        self.cfg = cfg
        self.contract = cfg.contract
        # What forward reads: `encoder_files.load_encoder` replaces ``.contract`` by the encoder.json dict.
        self.input_contract: InputContract = cfg.contract

    def prepare(self, x: Tensor) -> Tensor:
        """``x (B, 12, T)`` canonical, mV -> the network's input ``(B, len(contract.leads), T)``."""
        c = self.input_contract
        x = select_leads(x, c.leads)
        if c.normalisation_scope == "window":
            x = normalise(x, c.normalisation)
        return x

    def network_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def pool(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """``x (B, 12, T)`` -> ``(B, embed_dim, T')``."""
        return self.network_features(self.prepare(x))

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, 12, T)`` -> ``(B, embed_dim)``, pooled as the reference's linear-probe features."""
        return self.pool(self.forward_features(x))

    # ------------------------------------------------------------------------------------- loading

    @staticmethod
    def rename(key: str) -> str:
        """A released key (its ``module.`` prefix removed) -> ours. Default: the same."""
        return key

    @staticmethod
    def infer_config(sd: dict[str, Tensor]) -> Any:
        """The config whose state dict ``sd`` is; raises one of ``UNREADABLE`` where it cannot be read."""
        raise NotImplementedError

    @classmethod
    def convert(cls, state: dict[str, Tensor], source: str = "checkpoint", cfg: Any = None,
                **infer_args: Any) -> tuple[dict[str, Tensor], Any]:
        """A released state dict -> (our state dict, its config), strictly (`strict_state`). Without ``cfg`` the
        config is ``infer_config(sd, **infer_args)``'s, or ``Config()`` where the tensors are too damaged to
        read it."""
        sd = {cls.rename(k.removeprefix("module.")): v for k, v in state.items()}
        if cfg is None:
            try:
                cfg = cls.infer_config(sd, **infer_args)
            except cls.UNREADABLE:
                cfg = cls.Config()
        return strict_state(sd, expected_shapes(lambda: cls(cfg)), source=source, drop=cls.DROP), cfg

    @classmethod
    def from_state(cls, sd: dict[str, Tensor], cfg: Any) -> Self:
        """The model of ``cfg`` with our state dict ``sd`` (from `convert`) loaded strictly."""
        model = cls(cfg)
        model.load_state_dict(sd, strict=True)
        return model

    @staticmethod
    def files_beside(filename: str) -> tuple[str, ...]:
        """Names of the files next to released file ``filename`` that `from_checkpoint` reads when present (a
        download from the Hub fetches them too). Default: none."""
        return ()

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: Any = None) -> Self:
        """A released file (its state dict under one of ``STATE_ENTRIES``, or the state dict itself), loaded
        strictly."""
        state = unwrap(read_checkpoint(path), cls.STATE_ENTRIES, str(path))
        return cls.from_state(*cls.convert(state, str(path), cfg))


# ----------------------------------------------------------------------------------------- strict loading


@dataclass(frozen=True)
class KeyRule:
    """Keys matching ``pattern`` (``re.search``) are not part of the encoder; ``why`` says what they are."""

    pattern: str
    why: str


def read_checkpoint(path: str | Path, *, stub_classes: bool = False) -> Any:
    """The object stored in ``path``: a ``.safetensors`` file's tensors, or a torch pickle read with
    ``weights_only=True`` (plain containers and tensors; no code from the file runs).

    With ``stub_classes``, a pickle that also holds objects of other classes (a pickled Hugging Face config) is
    read with each such class replaced by an inert stub, and the stubs turned into plain dicts of their state.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file{resolved_against(p)}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line for the user
        error = exc
    if stub_classes and p.suffix != ".safetensors":
        from ecgforge.encoders.fairseq_import import (  # the same inert stubs as the fairseq importer
            _plain,
            _Stub,
        )

        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(p)
            stubs = [type(n.rpartition(".")[2], (_Stub,), {"__module__": n.rpartition(".")[0],
                                                         "__qualname__": n.rpartition(".")[2]}) for n in names]
            with torch.serialization.safe_globals(stubs):
                return _plain(torch.load(p, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001
            error = exc
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    raise CheckpointError(f"{p}: cannot read as a checkpoint ({type(error).__name__}: {first[:200]})") from None


def unwrap(obj: Any, entries: Sequence[str], source: str) -> dict[str, Tensor]:
    """The state dict inside a checkpoint: ``obj`` itself when it maps names to tensors, else the first of
    ``entries`` (``"state_dict"``, ``"model"``, ...) it holds. Other top-level entries (epoch, optimiser,
    config) are training records, not weights, and are ignored."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for name in entries:
            inner = obj.get(name)
            if isinstance(inner, Mapping) and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        found = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{source}: no state dict under {' / '.join(map(repr, entries))} (top-level keys: {found})")
    raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")


def strict_state(
    state: Mapping[str, Tensor],
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    *,
    source: str,
    drop: Sequence[KeyRule] = (),
    rename: Callable[[str], str] | None = None,
) -> dict[str, Tensor]:
    """``state`` with exactly the keys and shapes of ``expected``, or `CheckpointError` naming the first key
    that differs.

    A ``module.`` prefix on every key (a DistributedDataParallel save) is removed first, then ``rename`` maps
    the remaining names, then keys matching a ``drop`` rule are removed (logged with the rule's reason).
    """
    sd = dict(state)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if rename is not None:
        sd = {rename(k): v for k, v in sd.items()}
    dropped: dict[str, list[str]] = {}
    for k in list(sd):
        rule = next((r for r in drop if re.search(r.pattern, k)), None)
        if rule is not None:
            dropped.setdefault(rule.why, []).append(k)
            del sd[k]
    unexpected = [k for k in sd if k not in expected]
    missing = [k for k in expected if k not in sd]
    if unexpected or missing:
        parts = []
        if unexpected:
            more = f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            parts.append(f"unexpected key {unexpected[0]!r}{more}")
        if missing:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            parts.append(f"missing key {missing[0]!r}{more}")
        raise CheckpointError(f"{source}: {'; '.join(parts)}")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != tuple(shape):
            raise CheckpointError(f"{source}: {k} has shape {tuple(sd[k].shape)}, the model needs {tuple(shape)}")
    for why, keys in dropped.items():
        log.info("%s: dropped %d tensors (%s): %s", source, len(keys), why, ", ".join(keys[:4]))
    return sd


def count_indexed(state: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest index ``pattern``'s group captures in a key of ``state`` (0 if none): the number of
    blocks of a ``ModuleList`` / ``Sequential``, read from any of their keys."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


#: Transformer blocks the ECG foundation-model benchmark fine-tunes at its early (lowest) rate for ST-MEM and
#: ECG-JEPA: blocks 0-2 of 12 (AI4HealthUOL/ecg-fm-benchmarking ``fm_ecg.py``, their wrappers' ``get_params``).
BENCHMARK_EARLY_BLOCKS = 3


def split_parameters(module: nn.Module, early: Callable[[str], bool]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``module``'s parameters as (those whose name ``early`` accepts, the rest), each in registration order:
    the ``layerwise_groups`` of an encoder (`evaluation.finetune.layer_halves`)."""
    named = list(module.named_parameters())
    return [p for n, p in named if early(n)], [p for n, p in named if not early(n)]


def expected_shapes(build: Callable[[], nn.Module]) -> dict[str, torch.Size]:
    """Key -> shape of the module ``build`` makes, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in build().state_dict().items()}


__all__ = [
    "FIR",
    "Butterworth",
    "CheckpointError",
    "FilterStep",
    "FoundationEncoder",
    "InputContract",
    "KeyRule",
    "MedianBaseline",
    "Normalisation",
    "Notch",
    "BENCHMARK_EARLY_BLOCKS",
    "apply_filters",
    "count_indexed",
    "expected_shapes",
    "normalise",
    "read_checkpoint",
    "select_leads",
    "split_parameters",
    "strict_state",
    "unwrap",
]
