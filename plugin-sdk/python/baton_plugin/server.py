"""The plugin side of the launch handshake and the baton.plugin.v1.Plugin gRPC service."""

import hmac
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, NoReturn, Optional, Sequence, Tuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import socket_path
from .stdout import redirect_stdout, write_handshake
from ._proto import pb, pb_grpc
from .image import StateImage
from .state import MAX_CURSOR_BYTES, Marks, Reassembly, ReassemblyError, chunks, marked

#: The protocol version of proto/baton/plugin/v1/plugin.proto.
PROTOCOL_VERSION = 1
TOKEN_METADATA_KEY = "x-baton-token"
SERVICE_NAME = "baton.plugin.v1.Plugin"
ENV_SOCKET = "BATON_PLUGIN_SOCKET"
ENV_PROTOCOL_VERSION = "BATON_PROTOCOL_VERSION"
ENV_TOKEN = "BATON_PLUGIN_TOKEN"

#: Largest message the SDK accepts or sends (payloads of Invoke).
MAX_MESSAGE_BYTES = 64 << 20
#: Largest state Restore accepts.
MAX_STATE_BYTES = 16 << 30
#: How long calls in flight may go on once the plugin is told to stop. The host waits
#: its own grace period after Shutdown and then sends SIGTERM, later SIGKILL.
STOP_GRACE_SECONDS = 5.0
WORKER_THREADS = 8

log = logging.getLogger("baton_plugin")


class PluginError(Exception):
    """An error for the caller, sent as a gRPC status. Raise it from invoke, snapshot,
    restore, snapshot_since or restore_delta, e.g.
    `PluginError(grpc.StatusCode.INVALID_ARGUMENT, "bad payload")`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Description:
    """What a plugin tells the host about itself in Describe."""

    name: str
    version: str
    #: The state format version written by snapshot and read by restore; 0 if stateless.
    state_schema_version: int = 0
    #: (name, one-line description) of each method.
    methods: Sequence[Tuple[str, str]] = ()
    #: Incremental snapshots (docs/incremental-state.md): the plugin implements
    #: snapshot_since and restore_delta (a StateMap does both), so the host can copy its
    #: state while it keeps serving and hold calls only for the last, small delta.
    #: Snapshots then come while calls run, and must be consistent as of their cursor.
    incremental: bool = False


class Plugin:
    """A baton plugin. One instance serves every call, from several threads at once, so
    keep state behind your own lock. Subclass it, or pass any object with these methods."""

    def describe(self) -> Description:
        raise NotImplementedError

    def invoke(self, method: str, payload: bytes) -> bytes:
        """Runs one call. Raise PluginError(UNIMPLEMENTED) for an unknown method and
        PluginError(INVALID_ARGUMENT) for a bad payload."""
        raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"this plugin has no method {method!r}")

    def snapshot(self) -> bytes:
        """A consistent copy of the whole state, in the format of describe().state_schema_version.
        The host sends no calls while it takes a snapshot."""
        return b""

    def restore(self, schema_version: int, state: bytes) -> None:
        """Replaces the state with `state`, written by some build in format `schema_version`.
        Refuse a format you cannot read with PluginError(FAILED_PRECONDITION), leaving the
        current state untouched."""
        if state:
            raise PluginError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this plugin keeps no state, but was given {len(state)} bytes "
                f"in schema version {schema_version}",
            )

    def snapshot_since(self, since: Optional[bytes]) -> StateImage:
        """For a plugin whose description says `incremental=True`: its state as of a new
        cursor, either whole or, when `since` is the cursor that ended its latest
        snapshot, only the changes after it (StateImage(delta=True, base_cursor=since)).
        Called while calls run. Answering with a whole state is always allowed; a
        StateMap's image_since or snapshot_since is one. The default is snapshot(), whole
        and without a cursor."""
        return StateImage(self.snapshot())

    def restore_delta(self, schema_version: int, delta: bytes) -> None:
        """Applies a delta written by snapshot_since (of some build, in format
        `schema_version`) on top of the state restored so far. The SDK has checked that
        it follows the last state applied here; apply all of it or, refusing, none."""
        raise PluginError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this plugin takes no deltas, but was given {len(delta)} bytes of one "
            f"in schema version {schema_version}",
        )


class LaunchError(Exception):
    """The process was not started the way a baton host starts plugins."""


@dataclass(frozen=True)
class Launch:
    """What the host passed in the environment."""

    socket: str
    host_protocol_version: str
    token: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Launch":
        def var(name: str) -> str:
            value = environ.get(name)
            if not value:
                raise LaunchError(
                    f"{name} is not set: this program is a baton plugin and must be "
                    "started by a baton host"
                )
            return value

        return cls(var(ENV_SOCKET), var(ENV_PROTOCOL_VERSION), var(ENV_TOKEN))


# An application service to serve beside the plugin: the generated
# `add_<Service>Servicer_to_server` function and your servicer, for example
# `(trigger_pb2_grpc.add_TriggerServicer_to_server, MyTrigger())`.
Service = Tuple[Callable[[Any, grpc.Server], None], Any]


def serve(plugin: Plugin, services: Sequence[Service] = ()) -> NoReturn:
    """Runs `plugin`, and the application `services` beside it, until the host asks it to
    stop (or SIGTERM/SIGINT), then exits the process: 0 after a clean stop, 2 when not
    started by a host, 1 on other failures.

    stdout carries the handshake line alone: serve() first points it (file descriptor
    1, so print() and child processes too) at stderr, which the host logs."""
    _init_logging()
    try:
        launch = Launch.from_env()
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        redirect_stdout()
    except OSError as e:
        log.error("cannot keep stdout for the handshake line: %s", e)
        sys.exit(1)
    sys.exit(run(plugin, launch, services))


def run(plugin: Plugin, launch: Launch, services: Sequence[Service] = ()) -> int:
    """Binds the socket, prints the handshake line and serves until told to stop; returns
    the exit code. Must be called from the main thread (it handles SIGTERM and SIGINT).
    Every service, the application's included, refuses calls without the launch token."""
    if launch.host_protocol_version != str(PROTOCOL_VERSION):
        log.warning(
            "the host speaks protocol version %s, this plugin %s; "
            "the host will refuse this plugin's handshake",
            launch.host_protocol_version, PROTOCOL_VERSION,
        )
    stopper = _Stopper()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _frame: stopper.stop(f"{signal.Signals(n).name} received"))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="baton-rpc"),
        interceptors=[_TokenCheck(launch.token)],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    names = _add_services(server, services)
    pb_grpc.add_PluginServicer_to_server(_PluginService(plugin, stopper, names), server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    if not launch.token:
        log.error("the launch token (%s) is empty: refusing to serve calls anyone could make", ENV_TOKEN)
        return 1
    ours = None
    try:
        ours = _bind(server, launch.socket)
        if ours is None:
            return 1
        server.start()
        try:
            write_handshake(f"baton|{PROTOCOL_VERSION}|unix|{launch.socket}")
        except OSError as e:
            log.error("cannot write the handshake line to stdout: %s", e)
            server.stop(None)
            return 1
        log.info("serving on %s", launch.socket)

        log.info("%s, shutting down", stopper.wait())
        health_servicer.enter_graceful_shutdown()
        server.stop(STOP_GRACE_SECONDS).wait()
        log.info("stopped")
        return 0
    finally:
        _remove(launch.socket, ours)


def _bind(server: grpc.Server, socket: str) -> Optional[Tuple[int, int]]:
    """Binds the socket; returns the identity of its file, or None (said in the log)."""
    # A socket left by a killed predecessor at the same path would make bind fail;
    # anything else there is not ours to delete.
    try:
        socket_path.claim(socket)
    except socket_path.SocketPathError as e:
        log.error("%s", e)
        return None
    # Only this user may connect: the socket is created with mode 0600, not chmod-ed
    # after, so there is no moment when others could.
    umask = os.umask(0o177)
    try:
        # Raises on failure in current grpcio; older versions returned 0.
        if server.add_insecure_port(f"unix:{socket}"):
            return socket_path.bound(socket)
        error = "no address bound"
    except RuntimeError as e:
        error = str(e)
    finally:
        os.umask(umask)
    log.error("cannot bind the plugin socket %s: %s", socket, error)
    return None


def _remove(path: str, ours: Optional[Tuple[int, int]]) -> None:
    try:
        socket_path.remove_if_ours(path, ours)
    except OSError as e:
        log.warning("cannot remove %s: %s", path, e)


def _init_logging() -> None:
    # BATON_LOG is shared with the Rust SDK, where it may be a filter such as
    # "baton=debug"; anything that is not a plain level means INFO here.
    level = logging.getLevelName(os.environ.get("BATON_LOG", "info").upper())
    # The host timestamps every captured line, so the plugin's own clock is left out.
    logging.basicConfig(
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
        level=level if isinstance(level, int) else logging.INFO,
    )


class _Stopper:
    """Wakes the main thread to stop, from an RPC thread or a signal handler.

    A pipe rather than a threading.Event: a signal handler runs on the main thread
    between bytecodes, possibly while the main thread holds the Event's inner lock,
    and setting the Event there would deadlock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._reason: Optional[str] = None

    def stop(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        try:
            os.write(self._write, b".")
        except BlockingIOError:
            pass  # the pipe is full of earlier wake-ups, so the main thread wakes anyway

    def wait(self) -> str:
        os.read(self._read, 1)
        return self._reason or "stop requested"


class _NamingServer:
    """Passes a generated `add_*_to_server` function's registrations on to the server,
    noting the services' names for Describe."""

    def __init__(self, server: grpc.Server):
        self._server = server
        self.names: List[str] = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if callable(name) and name() not in self.names:
                self.names.append(name())
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers) -> None:
        if service_name not in self.names:
            self.names.append(service_name)
        self._server.add_registered_method_handlers(service_name, handlers)


def _add_services(server: grpc.Server, services: Sequence[Service]) -> List[str]:
    naming = _NamingServer(server)
    for add, servicer in services:
        add(servicer, naming)
    if naming.names:
        # Reflection (grpc.reflection.v1alpha, behind the token like the rest) lets the
        # host check the services' types against the application's, and `baton ctl
        # call` call them by name. The descriptors are the generated modules' own.
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection(naming.names, server)
    return naming.names


class _TokenCheck(grpc.ServerInterceptor):
    """Refuses calls without the launch token, except health checks."""

    def __init__(self, token: str):
        self._token = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        # Unknown methods are refused without the token too: a caller without it learns
        # nothing, not even which methods exist.
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return handler
        # Every header of the key, not the last one a dict keeps: exactly one is taken,
        # so a second one, right or wrong, is refused.
        tokens = [
            value
            for key, value in handler_call_details.invocation_metadata or ()
            if key == TOKEN_METADATA_KEY
        ]
        if not tokens:
            return _refusal(
                handler,
                f"missing {TOKEN_METADATA_KEY} metadata: only the baton host that launched "
                "this plugin may call it",
            )
        if len(tokens) > 1:
            return _refusal(
                handler, f"more than one {TOKEN_METADATA_KEY} header: a call carries exactly one"
            )
        got = tokens[0]
        if isinstance(got, str):
            got = got.encode()
        # Constant time, so the time taken says nothing about the token.
        if not self._token or not hmac.compare_digest(got, self._token):
            return _refusal(handler, f"wrong {TOKEN_METADATA_KEY}")
        return handler


_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _refusal(handler: Optional[grpc.RpcMethodHandler], message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary for an unknown method) that
    answers UNAUTHENTICATED."""

    def refuse(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    factory = _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return factory(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _call(context: grpc.ServicerContext, what: str, fn, *args):
    """Runs one of the plugin's methods, turning its errors into gRPC statuses."""
    try:
        return fn(*args)
    except PluginError as e:
        context.abort(e.code, e.message)
    except Exception as e:
        log.exception("the plugin's %s failed", what)
        context.abort(grpc.StatusCode.INTERNAL, f"the plugin's {what} failed: {type(e).__name__}: {e}")


def _bytes(context: grpc.ServicerContext, what: str, value) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"the plugin's {what} returned {type(value).__name__}, not bytes",
        )
    return bytes(value)


def _hex(cursor: bytes) -> str:
    """A cursor as people read it in a message."""
    return cursor.hex() if cursor else "(none)"


class _PluginService(pb_grpc.PluginServicer):
    def __init__(self, plugin: Plugin, stopper: _Stopper, services: List[str]):
        self._plugin = plugin
        self._stopper = stopper
        self._services = services
        # The cursor of the last state restored here, which a delta must follow. The
        # lock is held through each restore, so restores apply one at a time.
        self._restore_lock = threading.Lock()
        self._applied = b""

    def Describe(self, request, context):
        d = _call(context, "describe", self._plugin.describe)
        return pb.DescribeResponse(
            name=d.name,
            plugin_version=d.version,
            protocol_version=PROTOCOL_VERSION,
            state_schema_version=d.state_schema_version,
            methods=[pb.MethodInfo(name=n, description=text) for n, text in d.methods],
            services=self._services,
            incremental_snapshots=bool(getattr(d, "incremental", False)),
        )

    def Invoke(self, request, context):
        out = _call(context, "invoke", self._plugin.invoke, request.method, request.payload)
        return pb.InvokeResponse(payload=_bytes(context, "invoke", out))

    def Snapshot(self, request, context):
        d = _call(context, "describe", self._plugin.describe)
        schema = d.state_schema_version
        if getattr(d, "incremental", False):
            image = _call(
                context, "snapshot_since", self._plugin.snapshot_since, request.since or None
            )
            if not isinstance(image, StateImage):
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"the plugin's snapshot_since returned {type(image).__name__}, "
                    "not a StateImage",
                )
            marks = Marks(
                delta=bool(image.delta),
                base_cursor=_bytes(context, "snapshot_since base_cursor", image.base_cursor),
                cursor=_bytes(context, "snapshot_since cursor", image.cursor),
            )
            state = _bytes(context, "snapshot_since", image.data)
        else:
            marks = Marks()
            state = _bytes(context, "snapshot", _call(context, "snapshot", self._plugin.snapshot))
        for cursor in (marks.base_cursor, marks.cursor):
            if len(cursor) > MAX_CURSOR_BYTES:
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"the plugin's cursor is {len(cursor)} bytes; "
                    f"the contract allows {MAX_CURSOR_BYTES}",
                )
        log.debug(
            "snapshot taken: %d bytes in schema %d%s",
            len(state), schema, " (a delta)" if marks.delta else "",
        )
        yield from marked(chunks(schema, state), marks)

    def Restore(self, request_iterator, context):
        with self._restore_lock:
            reassembly = Reassembly(MAX_STATE_BYTES)
            try:
                for chunk in request_iterator:
                    reassembly.push(chunk)
                schema, state, marks = reassembly.finish_marked()
            except ReassemblyError as e:
                context.abort(grpc.StatusCode.DATA_LOSS, str(e))
            if marks.delta:
                if not self._applied or marks.base_cursor != self._applied:
                    context.abort(
                        grpc.StatusCode.DATA_LOSS,
                        f"a delta that follows cursor {_hex(marks.base_cursor)} does not "
                        f"follow the state restored here (cursor {_hex(self._applied)}): "
                        "a delta out of order, or one lost before it",
                    )
                _call(context, "restore_delta", self._plugin.restore_delta, schema, state)
                log.debug("delta applied: %d bytes in schema %d", len(state), schema)
            else:
                _call(context, "restore", self._plugin.restore, schema, state)
                log.info("state restored: %d bytes in schema %d", len(state), schema)
            self._applied = marks.cursor
            return pb.RestoreResponse(bytes_restored=len(state))

    def Shutdown(self, request, context):
        # The main thread stops the server gracefully, which lets this answer go out.
        self._stopper.stop("shutdown requested by the host")
        return pb.ShutdownResponse()
