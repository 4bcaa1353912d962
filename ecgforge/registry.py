"""Turn a validated component config into an object: the one place where configs meet constructors.

Each category (encoders, maskers, augment, ssl, eval) is a subpackage whose ``__init__`` holds two things:
a pydantic tagged union of its config classes (``Field(discriminator="kind")``) and a dict from ``kind`` to
the component class. Adding a component is one file (config class + module) and one line in each of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel
from torch import nn


def categories() -> dict[str, tuple[Any, Mapping[str, type]]]:
    """Category name -> (config union, kind -> class). Imported lazily so that `ecgforge list` stays cheap."""
    from ecgforge import augment, encoders, evaluation, maskers, objectives
    from ecgforge.data import sources

    return {
        "sources": (sources.SourceConfig, sources.SOURCES),
        "encoders": (encoders.EncoderConfig, encoders.ENCODERS),
        "maskers": (maskers.MaskerConfig, maskers.MASKERS),
        "augment": (augment.AugmentConfig, augment.AUGMENTS),
        "ssl": (objectives.SSLConfig, objectives.OBJECTIVES),
        "eval": (evaluation.EvalConfig, evaluation.PROTOCOLS),
    }


def config_classes(union: Any) -> tuple[type[BaseModel], ...]:
    """The config classes in a ``Annotated[Union[...], Field(discriminator=...)]`` union."""
    inner = get_args(union)[0] if get_args(union) and not isinstance(get_args(union)[0], type) else union
    return tuple(c for c in get_args(inner) if isinstance(c, type) and issubclass(c, BaseModel)) or (inner,)


def _class_for(cfg: BaseModel) -> type:
    for union, table in categories().values():
        if type(cfg) in config_classes(union):
            return table[cfg.kind]  # type: ignore[attr-defined]
    raise KeyError(f"{type(cfg).__name__} is not a registered component config")


def is_component(value: Any) -> bool:
    return isinstance(value, BaseModel) and "kind" in type(value).model_fields


def build(cfg: BaseModel, **context: Any) -> Any:
    """Construct the component that ``cfg`` describes.

    The constructor receives the config's fields (minus ``kind``) as keyword arguments. Fields that are
    themselves component configs are built first (a list of them becomes an ``nn.Sequential``). ``context``
    carries run facts such as ``fs_hz``, ``window`` (samples), ``n_leads`` or ``encoder``; each constructor
    receives only the context keys its signature names.
    """
    cls = _class_for(cfg)
    kwargs: dict[str, Any] = {}
    for name in type(cfg).model_fields:
        if name == "kind":
            continue
        value = getattr(cfg, name)
        if is_component(value):
            value = build(value, **context)
        elif isinstance(value, (list, tuple)) and value and all(is_component(v) for v in value):
            value = nn.Sequential(*(build(v, **context) for v in value))
        kwargs[name] = value
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs.update({k: v for k, v in context.items() if (takes_any or k in params) and k not in kwargs})
    return cls(**kwargs)


def kinds() -> dict[str, list[str]]:
    """Category -> registered kinds, for `ecgforge list`."""
    return {name: sorted(table) for name, (_, table) in categories().items()}
