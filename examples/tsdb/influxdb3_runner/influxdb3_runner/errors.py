"""How a plugin's error is told: its type, message and the plugin's file and line, and
for a module that is missing, the request that installs it."""

import json
import traceback
from pathlib import Path
from typing import Optional

INSTALL_PACKAGES = "POST /api/v3/configure/plugin_environment/install_packages"


def install_hint(error: BaseException) -> str:
    """For a missing module, the request that installs it (the module's top-level name
    is the package's on the index as often as not); else nothing."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return ""
    top = error.name.split(".")[0]
    return f" — install it with {INSTALL_PACKAGES} {json.dumps({'packages': [top]})}"


def describe(error: BaseException, plugin_root: Optional[str] = None) -> str:
    """`Type: message (file:line)`, the line the deepest of the plugin's own (under
    `plugin_root`, when given), then the install hint."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({Path(error.filename).name}:{error.lineno})"
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if plugin_root is not None:
        frames = [f for f in frames if f.filename.startswith(plugin_root)]
    if frames:
        text += f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text + install_hint(error)
