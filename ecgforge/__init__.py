"""ecgforge: self-supervised pretraining of ECG encoders, driven by TOML recipes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ecgforge.pretrained import load_encoder

__all__ = ["__version__", "load_encoder"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `import ecgforge` and `ecgforge list` stay cheap; torch loads on first use.
    if name == "load_encoder":
        from ecgforge.pretrained import load_encoder

        return load_encoder
    raise AttributeError(f"module 'ecgforge' has no attribute {name!r}")
