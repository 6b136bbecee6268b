"""Shared by the tests: where things are, loading counter.py, and running a plugin
process the way the host does."""

import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc

from baton_plugin import server
from baton_plugin._proto import pb, pb_grpc

REPO = Path(__file__).resolve().parents[3]
COUNTER_PY = REPO / "example-plugins" / "python-counter" / "counter.py"
#: The Rust counter, for the handover tests; they are skipped when it is not built.
RUST_COUNTER = Path(os.environ.get("BATON_RUST_COUNTER", REPO / "target" / "debug" / "counter"))
HANDSHAKE_TIMEOUT = 10.0


def copy(chunk, **changes):
    """A copy of a StateChunk with some fields changed, to make bad streams from good ones."""
    c = pb.StateChunk()
    c.CopyFrom(chunk)
    for name, value in changes.items():
        setattr(c, name, value)
    return c


def load_counter():
    spec = importlib.util.spec_from_file_location("python_counter", COUNTER_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class YieldingLock:
    """A lock that lets other threads run right after each release, so that work a map
    (or its user) does outside its lock meets a writer's changes in every gap between locked steps."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()

    def __exit__(self, *_):
        self._lock.release()
        time.sleep(0)


class PluginProcess:
    """One plugin process, launched as the host launches it. Always call close()."""

    def __init__(self, command, name="plugin"):
        self.dir = tempfile.mkdtemp(prefix="baton-py-test-")
        self.socket = os.path.join(self.dir, f"{name}.sock")
        self.token = uuid.uuid4().hex
        self.stderr_path = os.path.join(self.dir, "stderr")
        env = dict(os.environ)
        env.update({
            server.ENV_SOCKET: self.socket,
            server.ENV_PROTOCOL_VERSION: str(server.PROTOCOL_VERSION),
            server.ENV_TOKEN: self.token,
            "BATON_PLUGIN_NAME": name,
        })
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        self.channel = None

    def read_handshake(self, timeout=HANDSHAKE_TIMEOUT) -> str:
        """The first stdout line, waiting for it until `timeout`."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no handshake line within {timeout}s; {self.stderr()}")
                chunk = os.read(fd, 1)
                if not chunk:
                    raise AssertionError(f"stdout closed before the handshake; {self.stderr()}")
                line += chunk
        return line.decode().rstrip("\n")

    def connect(self) -> grpc.Channel:
        if self.channel is None:
            # gRPC's default authority for a unix socket is the percent-encoded path,
            # which the Rust plugins' HTTP/2 stack rejects as malformed.
            self.channel = grpc.insecure_channel(
                f"unix:{self.socket}", options=[("grpc.default_authority", "localhost")]
            )
        return self.channel

    def stub(self):
        return pb_grpc.PluginStub(self.connect())

    def auth(self):
        return ((server.TOKEN_METADATA_KEY, self.token),)

    def stderr(self) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return "its stderr: " + f.read()

    def close(self):
        if self.channel is not None:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


def counter_process(name="pycounter"):
    return PluginProcess([sys.executable, str(COUNTER_PY)], name)
