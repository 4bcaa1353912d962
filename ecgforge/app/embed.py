"""``ecgforge embed``: one embedding per record of a cache, written to HDF5 with the metadata to join it back.

Each record is cut into windows of the encoder's own ``window_s`` (from ``encoder.json``) at a stride of one
window, the last window flush with the record's end (as the evaluation protocols tile records); the window
embeddings are averaged per record. An ecgforge encoder's contract (sampling rate, lead order) is checked
against the cache first: nothing is resampled or reordered on the way.

An encoder with a foundation model's input contract (``encoder.json`` ``input_contract``; a ``KIND:PATH``
checkpoint) reads the cache as a run reads it: a cache at another rate is replaced by the cache of its own spec
at the model's rate, derived beside it from the source as a run derives one (`app.run.derive_cache`; refused in
one line where the source is not here), then read through the contract's filters and scaling in its windows
and at its stride (`rundir.contract_input`), the same file and the same tiles a run evaluates.

Output layout (``FORMAT`` ``ecgforge-embeddings`` v1)::

    attrs: format, format_version, ecgforge_version, encoder (path), encoder_json (the contract, JSON),
           cache (path), cache_spec_hash, fs_hz, window (samples), stride (samples), embed_dim, splits (JSON)
    embedding     (N, D) float32, mean over the record's windows
    cache_index   (N,) int64: the record's row in the cache
    n_windows     (N,) int64
    record_id, patient_id, source, sex, split   (N,) strings  (split: "" when no --split is given)
    fold (N,) int64, age (N,) float64 (NaN unknown), meta/<column>, labels/<set> (N, C) uint8 + attrs names
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from ecgforge.data.cache import Cache, str_array, strings
from ecgforge.data.dataset import TiledWindows
from ecgforge.data.splits import select
from ecgforge.errors import UserError
from ecgforge.evaluation.features import embed as embed_windows
from ecgforge.evaluation.features import per_record
from ecgforge.fsio import atomic_file
from ecgforge.layers.device import default_device
from ecgforge.progress import Reporter
from ecgforge.version import __version__

FORMAT = "ecgforge-embeddings"
FORMAT_VERSION = 1


def parse_split(item: str) -> tuple[str, dict[str, Any]]:
    """``"test={fold=[10]}"`` -> ``("test", {"fold": [10]})``: a name and a TOML inline-table selector.

    The selector has the form of a recipe's ``[data.splits]`` entries (``column = value or [values]``).
    """
    name, sep, raw = item.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise UserError(f"--split {item!r}: expected NAME={{column = [values]}}, e.g. test={{fold = [10]}}")
    try:
        selector = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--split {item!r}: the selector is not a TOML inline table ({exc})") from None
    if not isinstance(selector, dict) or not selector:
        raise UserError(f"--split {item!r}: the selector must be a non-empty inline table, e.g. {{fold = [10]}}")
    return name, selector


def assign_splits(cache: Cache, splits: Mapping[str, Mapping[str, Any]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Records to embed and their split names, in cache order.

    Without ``splits`` every record is embedded (split ""). With them, a record gets the first split (in
    the order given) whose selector it matches; records matching none are left out.
    """
    if not splits:
        return np.arange(len(cache), dtype=np.int64), np.full(len(cache), "", dtype=object)
    names = np.full(len(cache), None, dtype=object)
    for name, selector in splits.items():
        idx = select(cache, selector)
        free = idx[names[idx] == None]  # noqa: E711 - elementwise on an object array
        names[free] = name
    keep = np.flatnonzero(names != None)  # noqa: E711
    return keep.astype(np.int64), names[keep]


def embed_records(
    encoder: nn.Module,
    cache: Cache,
    indices: np.ndarray,
    window: int,
    *,
    stride: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    advance: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-record embeddings: the mean of the encoder's window embeddings over each record.

    Args:
        indices: ``(N,)`` cache rows; window, stride: samples at ``cache.fs_hz``.
        advance: called with the number of windows of each finished batch (progress bars).
    Returns:
        ``z (N, D)`` float32 and ``n_windows (N,)`` int64.
    """
    tiles = TiledWindows(cache, indices, window, stride or window)
    z = embed_windows(encoder, tiles, torch.device(device), batch_size, num_workers, advance=advance)
    n_windows = np.bincount(tiles.record_of, minlength=len(indices)).astype(np.int64)
    return per_record(z, tiles.record_of, len(indices)), n_windows


def write_embeddings(
    out: str | Path,
    cache: Cache,
    indices: np.ndarray,
    z: np.ndarray,
    *,
    split: np.ndarray,
    n_windows: np.ndarray,
    attrs: Mapping[str, Any],
) -> Path:
    """Write the embeddings file (see the module docstring) atomically: temporary file, fsync, rename."""
    out = Path(out)
    with atomic_file(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
            h5["embedding"] = z.astype(np.float32)
            h5["cache_index"] = indices.astype(np.int64)
            h5["n_windows"] = n_windows.astype(np.int64)
            for col in ("record_id", "patient_id", "source", "sex"):
                h5[col] = str_array([str(v) for v in getattr(cache, col)[indices]])
            h5["split"] = str_array([str(s) for s in split])
            h5["fold"] = cache.fold[indices].astype(np.int64)
            h5["age"] = cache.age[indices].astype(np.float64)
            meta = h5.create_group("meta")
            for col, values in cache.meta.items():
                v = values[indices]
                meta[col] = str_array([str(s) for s in v]) if v.dtype == object else v
            labels = h5.create_group("labels")
            for name, mat in cache.labels.items():
                labels[name] = mat[indices].astype(np.uint8)
                labels[name].attrs["names"] = json.dumps(cache.label_names[name])
    return out


def read_embeddings(path: str | Path) -> dict[str, Any]:
    """An embeddings file as a dict of arrays (strings decoded), ``labels``/``label_names``/``meta`` as dicts,
    and ``attrs`` (JSON attributes parsed)."""
    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != FORMAT:
            raise UserError(f"{path}: not an ecgforge embeddings file")
        d: dict[str, Any] = {
            "embedding": h5["embedding"][()], "cache_index": h5["cache_index"][()], "n_windows": h5["n_windows"][()],
            "fold": h5["fold"][()], "age": h5["age"][()],
        }
        for col in ("record_id", "patient_id", "source", "sex", "split"):
            d[col] = strings(h5[col])
        d["meta"] = {k: strings(v) if v.dtype.kind in "OS" else v[()] for k, v in h5["meta"].items()}
        d["labels"] = {k: v[()] for k, v in h5["labels"].items()}
        d["label_names"] = {k: json.loads(v.attrs["names"]) for k, v in h5["labels"].items()}
        attrs = {}
        for k, v in h5.attrs.items():
            if k in ("encoder_json", "splits"):
                v = json.loads(v)
            attrs[k] = v.item() if hasattr(v, "item") else v
        d["attrs"] = attrs
    return d


def embed_cache(
    encoder_path: str | Path,
    cache_path: str | Path,
    out: str | Path,
    *,
    splits: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 256,
    device: str | None = None,
    num_workers: int = 0,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Load an encoder, check it against the cache (a foundation model's: the cache derived at its rate, see the
    module docstring), embed the chosen records, write ``out``.

    Args:
        progress: ``total_windows -> advance(n)`` factory (the CLI's rich bar), or None.
        reporter: where the derivation of a cache says what it builds (and its progress), or None.
    Returns:
        a summary: ``out``, ``n_records``, ``n_windows``, ``embed_dim``, ``device``, ``splits`` (counts),
        ``cache`` (the cache embedded: the derived one where there is one).
    """
    from ecgforge.app.run import derive_cache
    from ecgforge.encoder_files import check_contract, input_contract, load_encoder
    from ecgforge.rundir import contract_input, samples

    encoder = load_encoder(encoder_path)
    meta = encoder.contract
    cache = Cache(cache_path)
    contract = input_contract(meta)
    if contract is not None:  # a foundation model's input, as a run feeds it
        cache = derive_cache(cache, contract, reporter or Reporter())
    check_contract(meta, fs_hz=cache.fs_hz, leads=cache.leads, source=str(cache.path))
    read: Cache = cache
    if contract is None:
        window = stride = samples(float(meta["window_s"]), cache.fs_hz)
    else:
        read, window, stride = contract_input(cache, contract)
    indices, split = assign_splits(cache, splits)
    if len(indices) == 0:
        raise UserError(f"{cache.path}: no record matches the --split selectors {dict(splits or {})}")
    dev = torch.device(device) if device else default_device()
    tiles_total = len(TiledWindows(read, indices, window, stride))
    advance = progress(tiles_total) if progress is not None else None
    z, n_windows = embed_records(encoder, read, indices, window, stride=stride, device=dev, batch_size=batch_size,
                                 num_workers=num_workers, advance=advance)
    attrs = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ecgforge_version": __version__,
        "encoder": str(encoder_path), "encoder_json": meta, "cache": str(cache.path),
        "cache_spec_hash": cache.spec_hash, "fs_hz": cache.fs_hz, "window": window, "stride": stride,
        "embed_dim": int(z.shape[1]), "splits": {k: dict(v) for k, v in (splits or {}).items()},
    }
    write_embeddings(out, cache, indices, z, split=split, n_windows=n_windows, attrs=attrs)
    counts = {str(k): int(v) for k, v in zip(*np.unique(split.astype(str), return_counts=True), strict=True)}
    return {"out": str(out), "n_records": int(len(indices)), "n_windows": int(n_windows.sum()),
            "embed_dim": int(z.shape[1]), "device": str(dev), "splits": counts, "cache": str(cache.path)}
