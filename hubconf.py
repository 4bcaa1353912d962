"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "resnet1d", source="local", depth=18)``.

One entry per registered encoder kind (``ecgforge.encoders.ENCODERS``), each a thin call of
``ecgforge.create_encoder(kind, pretrained=None, **config)``: fresh weights, or ``pretrained=`` a run
directory, an export, ``hf://ORG/NAME[@REVISION]`` (needs ``ecgforge[hub]``) or a fairseq-signals ``.pt``.
``torch.hub.list("OWNER/ecgforge")`` names them for a GitHub copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# torch.hub checks these are importable before loading an entry (the rest of ecgforge's requirements are
# imported by ecgforge itself and named in pyproject.toml).
dependencies = ["torch", "numpy", "pydantic", "safetensors"]

from ecgforge.encoders import ENCODERS  # noqa: E402 - after `dependencies`, as torch.hub's convention has it


def _entry(kind: str) -> Callable[..., Any]:
    def entry(pretrained: str | None = None, **config: Any) -> Any:
        from ecgforge.factory import create_encoder

        return create_encoder(kind, pretrained=pretrained, **config)

    entry.__name__ = entry.__qualname__ = kind
    entry.__doc__ = (f"The {kind!r} ECG encoder (``ecgforge.encoders.ENCODERS``): ``pretrained`` None (fresh) or "
                     f"a path / hf:// export; keyword arguments are {ENCODERS.entries[kind].split(':')[1]}Config's "
                     "fields. Returns an nn.Module mapping x (B, leads, T) to (B, embed_dim).")
    return entry


for _kind in ENCODERS:
    globals()[_kind] = _entry(_kind)
