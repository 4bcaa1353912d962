"""Peak memory while streaming a cache vs streaming one four times larger.

Usage: ``python benchmarks/bench_cache_memory.py [--data ../shared/data/ptb-xl] [--factor 4]``.

Builds the PTB-XL records100 cache (6,548 records, 157 MB of samples) in a temporary folder, then writes a
cache ``--factor`` times larger with the same layout by replicating every record (samples, offsets,
checksums, labels and metadata; record and patient ids get a ``/copy<j>`` suffix, so ``cache verify``
passes on it). Each cache is then streamed in a fresh Python process, the same code for both: one epoch of
training batches exactly as the runner reads them (``RandomWindows`` + ``collate_windows``, 2.5 s crops,
batch 256, superdiagnostic labels), then every record read in full once. Reported: the process's peak
resident set (``VmHWM``) and its resident set just before streaming (imports, the cache's metadata).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def replicate(src: Path, dst: Path, factor: int) -> None:
    """Write ``dst``: the cache ``src`` with every record repeated ``factor`` times (copy j after copy j-1)."""
    from ecgforge.data.cache import INTEGRITY_ATTR, seal_metadata

    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        b.attrs.update(dict(a.attrs))
        b.attrs["n_records"] = int(a.attrs["n_records"]) * factor
        sig = a["signals"]
        total = sig.shape[0]
        out = b.create_dataset("signals", shape=(total * factor, sig.shape[1]), dtype=sig.dtype)
        block = 1 << 22
        for j in range(factor):
            for start in range(0, total, block):
                stop = min(total, start + block)
                out[j * total + start : j * total + stop] = sig[start:stop]
        b["offsets"] = np.concatenate([a["offsets"][()] + j * total for j in range(factor)])

        def tiled(ds: h5py.Dataset) -> np.ndarray:
            return np.concatenate([ds[()]] * factor)

        def suffixed(ds: h5py.Dataset) -> np.ndarray:
            names = [v.decode() for v in ds[()]]
            return np.array([f"{n}/copy{j}".encode() for j in range(factor) for n in names],
                            dtype=h5py.string_dtype("utf-8"))

        for name in ("lengths", "present", "checksum", "source", "sex", "fold", "age"):
            b[name] = tiled(a[name])
        b["record_id"], b["patient_id"] = suffixed(a["record_id"]), suffixed(a["patient_id"])
        for group in ("meta", "labels"):
            g = b.create_group(group)
            for name, ds in a[group].items():
                g[name] = tiled(ds)
                g[name].attrs.update(dict(ds.attrs))
        a.copy(a["skipped"], b, "skipped")
        if INTEGRITY_ATTR in b.attrs:  # the metadata changed: its checksums too (layout 2)
            seal_metadata(b)


def stream(path: Path) -> dict[str, float]:
    """Stream the cache at ``path`` in this process; returns RSS figures in MB (run in a fresh process)."""
    from torch.utils.data import DataLoader

    from ecgforge.data.cache import Cache
    from ecgforge.data.dataset import RandomWindows, collate_windows
    from ecgforge.data.splits import select, task_targets

    def status_mb(field: str) -> float:
        """VmRSS (now) or VmHWM (peak) of this process: /proc's per-process figures, which unlike
        ``ru_maxrss`` do not carry over the parent's peak across fork + exec."""
        with open("/proc/self/status") as f:
            kb = next(line.split()[1] for line in f if line.startswith(field + ":"))
        return int(kb) / 1e3

    cache = Cache(path)
    targets = task_targets(cache, "superdiagnostic", select(cache, {}), task_type="multilabel")
    ds = RandomWindows(cache, targets.indices, int(2.5 * cache.fs_hz), targets=targets)
    before = status_mb("VmRSS")
    windows = sum(len(b["x"]) for b in DataLoader(ds, batch_size=256, shuffle=True, collate_fn=collate_windows))
    samples = sum(cache.read(i).shape[1] for i in range(len(cache)))
    return {"records": len(cache), "windows": windows, "samples": samples, "rss_before_mb": before,
            "peak_rss_mb": status_mb("VmHWM")}


def main(
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "ptb-xl", help="PTB-XL root"),
    factor: int = typer.Option(4, min=2, help="how many times larger the second cache is"),
    stream_path: Path | None = typer.Option(None, "--stream", help="internal: stream this cache, print JSON"),
) -> None:
    if stream_path is not None:
        print(json.dumps(stream(stream_path)))
        return
    from ecgforge.data.cache_build import build_cache
    from ecgforge.data.cache_inspect import verify
    from ecgforge.data.cache_spec import CacheRecipe

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        small, large = Path(tmp) / "small.h5", Path(tmp) / f"x{factor}.h5"
        build_cache(CacheRecipe.model_validate({
            "name": "bench-ptbxl", "out": str(small),
            "source": {"kind": "ptbxl", "path": str(data), "label_sets": ["superdiagnostic"]},
            "signal": {"fs_hz": 100}}))
        replicate(small, large, factor)
        if problems := verify(large):
            raise SystemExit(f"replicated cache does not verify: {problems[:3]}")
        runs = {}
        for name, path in (("small", small), (f"x{factor}", large)):
            res = subprocess.run([sys.executable, __file__, "--stream", str(path)], capture_output=True, text=True,
                                 check=True)
            runs[name] = json.loads(res.stdout.strip().splitlines()[-1]) | {"file_mb": path.stat().st_size / 1e6}

    table = Table(title="Streaming a cache (fresh process each): one training epoch + every record in full")
    for col in ("cache", "file MB", "records", "windows", "RSS before MB", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "cache" else "right")
    for name, r in runs.items():
        table.add_row(name, f"{r['file_mb']:,.0f}", f"{r['records']:,}", f"{r['windows']:,}",
                      f"{r['rss_before_mb']:,.0f}", f"{r['peak_rss_mb']:,.0f}")
    ratio = runs[f"x{factor}"]["peak_rss_mb"] / runs["small"]["peak_rss_mb"]
    table.caption = f"peak RSS x{factor} / small: {ratio:.3f} (target <= 1.10)"
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
