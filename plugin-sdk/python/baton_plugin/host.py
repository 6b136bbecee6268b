"""The client side of the host services (proto/baton/host/v1/host.proto): a plugin
calling back into the host that launched it, to log through it, keep keys and values
that outlive this process, and emit events.

    from baton_plugin import host_client

    host = host_client()
    host.kv_put("greeting", b"hello")
    host.log("info", "greeting saved", key="greeting")
    host.emit_event("greeting_saved", "a new greeting")
"""

import collections
import os
import threading
from typing import List, Mapping, Optional

import grpc

from ._proto import host_pb, host_pb_grpc
from .server import ENV_TOKEN, MAX_MESSAGE_BYTES, TOKEN_METADATA_KEY

ENV_HOST_SOCKET = "BATON_HOST_SOCKET"
#: How long one call to the host may take, in seconds.
CALL_TIMEOUT_SECONDS = 10.0

_LEVELS = {
    "trace": host_pb.LOG_LEVEL_TRACE,
    "debug": host_pb.LOG_LEVEL_DEBUG,
    "info": host_pb.LOG_LEVEL_INFO,
    "warn": host_pb.LOG_LEVEL_WARN,
    "warning": host_pb.LOG_LEVEL_WARN,
    "error": host_pb.LOG_LEVEL_ERROR,
}


class HostClientError(Exception):
    """The host services cannot be reached from this process."""


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _AddToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the launch token to every call, whatever its kind."""

    def __init__(self, token: str):
        self._token = token

    def _details(self, details):
        metadata = list(details.metadata or ()) + [(TOKEN_METADATA_KEY, self._token)]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class HostClient:
    """A plugin's client of its host's services. Safe to share between threads.

    Errors from the host come as grpc.RpcError; its messages name the limit that a key,
    value or event broke.
    """

    def __init__(self, socket: str, token: str):
        raw = grpc.insecure_channel(
            f"unix:{socket}",
            options=[
                # The default authority would be the socket path, which servers may refuse.
                ("grpc.default_authority", "localhost"),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._raw = raw
        #: A channel that adds the launch token to every call: give it to the stub of a
        #: service the embedding program offers, e.g. `DbStub(host.channel)`.
        self.channel = grpc.intercept_channel(raw, _AddToken(token))
        self._stub = host_pb_grpc.HostStub(self.channel)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "HostClient":
        """The client for the host that launched this process (BATON_HOST_SOCKET and
        BATON_PLUGIN_TOKEN)."""
        socket, token = environ.get(ENV_HOST_SOCKET), environ.get(ENV_TOKEN)
        for name, value in ((ENV_HOST_SOCKET, socket), (ENV_TOKEN, token)):
            if not value:
                raise HostClientError(
                    f"{name} is not set: the host services are there only for a plugin "
                    "started by a baton host"
                )
        return cls(socket, token)

    def log(self, level: str, message: str, **fields: str) -> None:
        """Writes a line to the host's log, tagged with this plugin's name and generation.
        `level` is one of trace, debug, info, warn, error."""
        try:
            value = _LEVELS[level.lower()]
        except KeyError:
            raise ValueError(f"unknown log level {level!r} (use one of {', '.join(_LEVELS)})") from None
        request = host_pb.LogRequest(
            level=value, message=message, fields={k: str(v) for k, v in fields.items()}
        )
        self._stub.Log(request, timeout=CALL_TIMEOUT_SECONDS)

    def kv_get(self, key: str) -> Optional[bytes]:
        """The value of `key` in this plugin's key-value store, or None."""
        reply = self._stub.KvGet(host_pb.KvGetRequest(key=key), timeout=CALL_TIMEOUT_SECONDS)
        return reply.value if reply.found else None

    def kv_put(self, key: str, value: bytes) -> None:
        """Sets `key` to `value` in this plugin's key-value store."""
        self._stub.KvPut(host_pb.KvPutRequest(key=key, value=value), timeout=CALL_TIMEOUT_SECONDS)

    def kv_delete(self, key: str) -> bool:
        """Removes `key`; returns whether it was set."""
        reply = self._stub.KvDelete(host_pb.KvDeleteRequest(key=key), timeout=CALL_TIMEOUT_SECONDS)
        return reply.existed

    def kv_list(self, prefix: str = "") -> List[str]:
        """Every key starting with `prefix`, in byte order (fetched page by page)."""
        keys: List[str] = []
        while True:
            request = host_pb.KvListRequest(prefix=prefix, start_after=keys[-1] if keys else "")
            page = self._stub.KvList(request, timeout=CALL_TIMEOUT_SECONDS)
            keys.extend(page.keys)
            # An empty page that claims more would repeat forever.
            if not page.more or not page.keys:
                return keys

    def emit_event(self, kind: str, message: str = "") -> None:
        """Publishes an event of kind "plugin:<kind>" on the host's event stream."""
        self._stub.EmitEvent(
            host_pb.EmitEventRequest(kind=kind, message=message), timeout=CALL_TIMEOUT_SECONDS
        )

    def close(self) -> None:
        self._raw.close()


_shared: Optional[HostClient] = None
_shared_lock = threading.Lock()


def host_client() -> HostClient:
    """This process's client of the host services, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HostClient.from_env()
        return _shared
