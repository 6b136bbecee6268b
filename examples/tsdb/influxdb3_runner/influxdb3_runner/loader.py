"""Loads an InfluxDB 3 plugin as InfluxDB does: `LineBuilder` in `builtins` first (some
plugins read it at import), then a single file run as a fresh module, or a package
directory imported with its entry points in `__init__.py`."""

import builtins
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .line_builder import LineBuilder

ENTRY_POINTS = ("process_writes", "process_scheduled_call", "process_request")


class LoadError(Exception):
    """The plugin cannot be loaded; the message names the file (and line)."""


def load(path: Path) -> ModuleType:
    """The plugin at `path`, loaded; its helper modules import from its directory."""
    builtins.LineBuilder = LineBuilder
    path = path.resolve()
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise LoadError(f"{path} is a directory without __init__.py, so not a plugin package")
        sys.path.insert(0, str(path.parent))
        module = importlib.import_module(path.name)
    elif path.is_file():
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path} cannot be loaded as Python")
        module = importlib.util.module_from_spec(spec)
        # Registered, so that pickle and dataclasses find the module's classes.
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        raise LoadError(f"{path}: no such plugin file or directory")
    if not any(callable(getattr(module, name, None)) for name in ENTRY_POINTS):
        raise LoadError(f"{path} defines none of {', '.join(ENTRY_POINTS)}, so it is not an InfluxDB 3 plugin")
    return module
