"""The notes example plugin in Python: named notes kept in the host's key-value store
(through the host services), not in the process, so a reload or a crash loses nothing.
Each saved note is logged through the host and announced as a `plugin:note_saved`
event. It answers like the Rust notes plugin (../notes). Run it with the repository's
venv (plugin-sdk/python/setup-python.sh makes it), which has the SDK installed.
"""

import sys

try:
    import grpc

    import baton_plugin
    from baton_plugin import Description, Plugin, PluginError, host_client
except ImportError as e:
    print(
        f"error: {e}\nRun this plugin with the repository's venv python "
        "(.venv/bin/python, made by plugin-sdk/python/setup-python.sh).",
        file=sys.stderr,
    )
    sys.exit(2)


def _text(payload: bytes, what: str) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is not UTF-8") from None


def _passed_on(error: grpc.RpcError) -> PluginError:
    """The host's refusal (a limit, say), as this call's answer."""
    return PluginError(error.code(), error.details())


class Notes(Plugin):
    def describe(self):
        return Description(
            "notes",
            "0.1.0",
            methods=[
                ("put", "KEY=VALUE: saves a note in the host's store"),
                ("get", "KEY: the note's text"),
                ("delete", "KEY: removes the note"),
                ("list", "PREFIX: the keys starting with it, one a line"),
            ],
        )

    def invoke(self, method, payload):
        handler = {"put": self.put, "get": self.get, "delete": self.delete, "list": self.list}.get(method)
        if handler is None:
            raise PluginError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"notes has no method {method!r} (it has put, get, delete, list)",
            )
        try:
            return handler(payload)
        except grpc.RpcError as e:
            raise _passed_on(e) from None

    def put(self, payload):
        key, sep, value = _text(payload, "put's KEY=VALUE").partition("=")
        if not sep:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, f"put takes KEY=VALUE, got {payload!r}")
        host = host_client()
        host.kv_put(key, value.encode())
        size = len(value.encode())
        host.log("info", "note saved", key=key, bytes=str(size))
        host.emit_event("note_saved", f"note {key!r} saved ({size} bytes)")
        return b"ok"

    def get(self, payload):
        key = _text(payload, "the key")
        value = host_client().kv_get(key)
        if value is None:
            raise PluginError(grpc.StatusCode.NOT_FOUND, f"no note {key!r}")
        return value

    def delete(self, payload):
        key = _text(payload, "the key")
        if not host_client().kv_delete(key):
            raise PluginError(grpc.StatusCode.NOT_FOUND, f"no note {key!r}")
        return b"deleted"

    def list(self, payload):
        return "\n".join(host_client().kv_list(_text(payload, "the prefix"))).encode()


if __name__ == "__main__":
    baton_plugin.serve(Notes())
