"""Loading config files by path (``configs/`` is not a package): one config building on another, and staged runs.

    generate_default = load_module(Path(__file__).with_name("generate_default.py"))  # inside a config file
    config = load_config("configs/demo.py:test")  # that file's get_config("test")
"""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections


def load_module(path: str | os.PathLike[str]) -> ModuleType:
    """The Python file ``path`` executed as a fresh module (not added to ``sys.modules``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    spec = importlib.util.spec_from_file_location(f"_config_{os.path.splitext(os.path.basename(path))[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str | os.PathLike[str]) -> ml_collections.ConfigDict:
    """``"configs/X.py[:arg]"`` -> that file's ``get_config(arg)`` (``get_config()`` without an argument)."""
    path, _, arg = os.fspath(spec).partition(":")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()
