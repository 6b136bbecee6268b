"""`python -m influxdb3_runner PLUGIN`: loads the plugin, then serves it as a baton
plugin until the host stops it. A plugin that does not load exits 1 before the
handshake, its error (file and line) on stderr, which baton shows as the start's error."""

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

import baton_plugin
import grpc

from . import __version__, cache_state
from ._proto import rpc
from .errors import install_hint
from .loader import LoadError, load
from .service import TriggerService


class Runner(baton_plugin.Plugin):
    """The plugin as baton sees it: its state is the trigger's cache, so that a reload
    hands it to the new process and a checkpoint keeps it through a crash."""

    def __init__(self, name: str, service: TriggerService):
        self._name = name
        self._service = service

    def describe(self):
        return baton_plugin.Description(
            f"influxdb3-plugin:{self._name}",
            f"runner-{__version__}",
            state_schema_version=cache_state.SCHEMA_VERSION,
        )

    def snapshot(self) -> bytes:
        return cache_state.dump(self._service.cache, self._service.warn)

    def restore(self, schema_version: int, state: bytes) -> None:
        if not state:
            return
        try:
            cache_state.load(self._service.cache, schema_version, state, self._service.warn)
        except cache_state.StateError as e:
            raise baton_plugin.PluginError(grpc.StatusCode.FAILED_PRECONDITION, f"{self._name}: {e}") from None


def _where(error: BaseException) -> str:
    """The error and the plugin's file and line it came from."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({Path(error.filename).name}:{error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        return f"{text} ({Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text


def main(argv) -> int:
    if argv == ["--test"]:
        from .plugin_test import main as test_main

        return test_main()
    if len(argv) != 1:
        print("usage: python -m influxdb3_runner PLUGIN.py (or a plugin package directory), or --test (a plugin test on stdin)", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        # The first stdout line must be baton's handshake; a plugin printing as it
        # loads would take its place.
        with contextlib.redirect_stdout(sys.stderr):
            module = load(path)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc()
        print(f"error: plugin {path.name} failed to load: {_where(e)}{install_hint(e)}", file=sys.stderr)
        return 1
    # InfluxDB 3 keeps a plugin's Python `logging` out of its logs; here the process's
    # stderr is the trigger's log, so a library's INFO chatter (httpx logs each request)
    # would fill it. Warnings and errors stay; BATON_LOG=info brings the rest back.
    logging.basicConfig(
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
        level=logging.INFO if os.environ.get("BATON_LOG", "").lower() in ("info", "debug") else logging.WARNING,
    )
    service = TriggerService(module, path, baton_plugin.host_client)
    baton_plugin.serve(Runner(path.name, service), services=[(rpc.add_TriggerServicer_to_server, service)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
