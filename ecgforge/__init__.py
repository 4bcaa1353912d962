"""ecgforge: self-supervised pretraining of ECG encoders, driven by TOML recipes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecgforge.version import __version__

if TYPE_CHECKING:
    from ecgforge.encoder_files import load_encoder
    from ecgforge.factory import create_encoder

__all__ = ["__version__", "create_encoder", "load_encoder"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `import ecgforge` and `ecgforge list` stay cheap; torch loads on first use.
    if name == "load_encoder":
        from ecgforge.encoder_files import load_encoder

        return load_encoder
    if name == "create_encoder":
        from ecgforge.factory import create_encoder

        return create_encoder
    raise AttributeError(f"module 'ecgforge' has no attribute {name!r}")
