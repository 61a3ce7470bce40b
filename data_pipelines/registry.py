"""Source kinds by name and construction of a source from its config entry ``{name, kind, weight, params}``."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from data_pipelines import base, transforms
from data_pipelines.array_record_source import ArrayRecordSource
from data_pipelines.builtin import PhotosSource, ShapesSource
from data_pipelines.sources import ImageIndexSource, VideoIndexSource
from data_pipelines.tfds_source import TfdsSource

SOURCE_KINDS: dict[str, type[base.Source]] = {
    cls.kind: cls for cls in (VideoIndexSource, ImageIndexSource, ShapesSource, PhotosSource, ArrayRecordSource,
                              TfdsSource)
}


def kind_params(kind: str) -> dict[str, Any]:
    """Accepted ``params`` of a source kind and their defaults (``inspect.Parameter.empty`` = required)."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(SOURCE_KINDS)}")
    signature = inspect.signature(SOURCE_KINDS[kind].__init__)
    return {p.name: p.default for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY}


def check_params(kind: str, params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Params as plain Python values (lists -> tuples); unknown or missing ones raise naming ``where.params.X``."""
    accepted = kind_params(kind)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{where}.params.{unknown[0]}: unknown parameter for kind {kind!r} "
                         f"(accepted: {sorted(accepted)})")
    missing = [k for k, default in accepted.items() if default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"{where}.params.{missing[0]}: required for kind {kind!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def plain_params(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec["params"]`` as a plain dict (ConfigDict or mapping; missing -> {})."""
    params = spec.get("params")
    if params is None:
        return {}
    return params.to_dict() if hasattr(params, "to_dict") else dict(params)


def make_source(spec: Mapping[str, Any], sampling: transforms.Sampling, where: str = "source") -> base.Source:
    """Builds ``SOURCE_KINDS[spec["kind"]](spec["name"], sampling, **spec["params"])``; errors name ``where``."""
    name, kind = spec.get("name"), spec.get("kind")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}.kind: {kind!r} is not one of {sorted(SOURCE_KINDS)}")
    params = check_params(kind, plain_params(spec), where)
    try:
        return SOURCE_KINDS[kind](name, sampling, **params)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise type(e)(f"{where} ({name!r}): {e}") from e
