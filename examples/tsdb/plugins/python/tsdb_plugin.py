"""What the tsdb Python plugins share: the generated API on the path, and the
database's client (tsdb.engine.v1.Database over the host-services socket)."""

import sys
from pathlib import Path

_STUBS = Path(__file__).resolve().parent / "tsdb_api"
if not (_STUBS / "tsdb" / "engine" / "v1" / "engine_pb2.py").exists():
    sys.exit(f"error: the tsdb stubs are missing in {_STUBS}; run gen_stubs.py beside this file")
sys.path.insert(0, str(_STUBS))

import baton_plugin  # noqa: E402
from tsdb.engine.v1 import engine_pb2 as pb  # noqa: E402,F401
from tsdb.engine.v1 import engine_pb2_grpc as rpc  # noqa: E402,F401

_host = None


def host() -> "baton_plugin.HostClient":
    """The host-services client, made on first use."""
    global _host
    if _host is None:
        _host = baton_plugin.HostClient.from_env()
    return _host


def database() -> "rpc.DatabaseStub":
    return rpc.DatabaseStub(host().channel)


def number(value) -> "float | None":
    """A field's value as a number, if it is one."""
    kind = value.WhichOneof("kind")
    if kind in ("float", "integer", "unsigned"):
        return float(getattr(value, kind))
    return None


def escape(text: str) -> str:
    """A tag key or value as line protocol needs it."""
    for c in ("\\", ",", "=", " "):
        text = text.replace(c, "\\" + c)
    return text
