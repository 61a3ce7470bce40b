"""The placeholders of a staged config's strings: ``{workdir}`` (the run's directory) and ``{export:NAME}`` (the
inference checkpoint an earlier training stage ``NAME`` writes, ``WORKDIR/NAME/export``)."""
from __future__ import annotations

import os
import re
from typing import Any, Callable

import ml_collections

EXPORT_DIR = "export"
_PLACEHOLDER = re.compile(r"\{(workdir|export:([A-Za-z0-9_]+))\}")


def export_dir(workdir: str, stage: str) -> str:
    """The inference checkpoint a training stage writes."""
    return os.path.join(workdir, stage, EXPORT_DIR)

def _substitute(value: Any, workdir: str, earlier: tuple[str, ...], where: str) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match) -> str:
            if match.group(1) == "workdir":
                return workdir
            name = match.group(2)
            if name not in earlier:
                raise ValueError(f"config.{where}: {match.group(0)} names no earlier training stage "
                                 f"(earlier: {list(earlier)})")
            return export_dir(workdir, name)
        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, workdir, earlier, f"{where}[{i}]") for i, v in enumerate(value))
    return value

def map_leaves(config: ml_collections.ConfigDict, fn: Callable[[Any, str], Any], where: str
               ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``fn(value, field_path)`` applied to every non-group field."""
    out = ml_collections.ConfigDict(config.to_dict())

    def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
        for key in list(node.keys()):
            value = node[key]
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{prefix}.{key}")
            else:
                node[key] = fn(value, f"{prefix}.{key}")

    walk(out, where)
    return out

def resolve(config: ml_collections.ConfigDict, workdir: str, earlier: tuple[str, ...], where: str
            ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``{workdir}`` / ``{export:NAME}`` substituted in every string."""
    return map_leaves(config, lambda value, field: _substitute(value, workdir, earlier, field), where)
