"""The counter example plugin in Python: named counters you can `incr` and `get`.

Its state format is the Rust counter's (../counter/STATE.md), byte for byte, so a
snapshot of either restores into the other. It keeps its counts in a StateMap and
declares incremental snapshots: a snapshot asked since its latest cursor is a delta,
the counters changed since, in the same format (STATE.md, "Deltas"). Run it with the
repository's venv (plugin-sdk/python/setup-python.sh makes it), which has the SDK
installed.
"""

import struct
import sys
from typing import Dict, List, Optional, Tuple

try:
    import grpc

    import baton_plugin
    from baton_plugin import Description, Plugin, PluginError, StateImage, StateMap
except ImportError as e:
    print(
        f"error: {e}\nRun this plugin with the repository's venv python "
        "(.venv/bin/python, made by plugin-sdk/python/setup-python.sh).",
        file=sys.stderr,
    )
    sys.exit(2)

#: The state format version this build writes and reads.
STATE_SCHEMA = 1
MAGIC = b"BTNC"
I64_MAX = (1 << 63) - 1
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


def encode(counts: Dict[str, int]) -> bytes:
    """Encodes counts in state format 1 (see STATE.md)."""
    # Sorted by key bytes, as the Rust BTreeMap<String, _> iterates, so equal counts
    # give equal bytes in both implementations.
    entries = sorted((key.encode(), value) for key, value in counts.items())
    out = [MAGIC, _U32.pack(len(entries))]
    for key, value in entries:
        out += [_U32.pack(len(key)), key, _I64.pack(value)]
    return b"".join(out)


def encode_delta(changes: List[Tuple[str, Optional[int]]]) -> bytes:
    """Encodes the counters changed since a cursor as a schema-1 delta (STATE.md,
    "Deltas"): the layout of a whole state, listing only them."""
    counts = {}
    for key, value in changes:
        # Counters are never removed, so a delta has no tombstones to write.
        if value is None:
            raise ValueError(f"the counter {key!r} was removed, which counters never are")
        counts[key] = value
    return encode(counts)


class DecodeError(ValueError):
    """Bytes that are not a valid format-1 state."""


def decode(data: bytes) -> Dict[str, int]:
    """Decodes a format-1 state, refusing anything malformed."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise DecodeError(f"counter state is truncated at byte {pos}")
        pos += n
        return data[pos - n:pos]

    if take(4) != MAGIC:
        raise DecodeError('counter state does not start with the magic bytes "BTNC"')
    counts: Dict[str, int] = {}
    for _ in range(_U32.unpack(take(4))[0]):
        (key_len,) = _U32.unpack(take(4))
        key_at = pos
        try:
            key = take(key_len).decode()
        except UnicodeDecodeError:
            raise DecodeError(f"counter state key at byte {key_at} is not UTF-8") from None
        (value,) = _I64.unpack(take(8))
        if key in counts:
            raise DecodeError(f"counter state has the key {key!r} twice")
        counts[key] = value
    if pos != len(data):
        raise DecodeError(f"counter state has {len(data) - pos} unexpected bytes after the last entry")
    return counts


def key_of(payload: bytes) -> str:
    try:
        key = payload.decode()
    except UnicodeDecodeError:
        raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, "the counter name must be UTF-8") from None
    if not key:
        raise PluginError(
            grpc.StatusCode.INVALID_ARGUMENT, "the payload must be a counter name, got nothing"
        )
    return key


def incremented(key: str):
    """The step of `incr` for `key`: its next count."""

    def step(value: Optional[int]) -> int:
        value = value or 0
        # The state format holds an i64; Python's ints would silently outgrow it.
        if value == I64_MAX:
            raise PluginError(
                grpc.StatusCode.OUT_OF_RANGE, f"the counter {key!r} is at its maximum"
            )
        return value + 1

    return step


class Counter(Plugin):
    def __init__(self) -> None:
        self._counts: "StateMap[str, int]" = StateMap()

    def describe(self) -> Description:
        return Description(
            name="python-counter",
            version="0.1.0",
            state_schema_version=STATE_SCHEMA,
            methods=[
                ("incr", "adds one to the counter named by the payload; returns the new value"),
                ("get", "returns the value of the counter named by the payload (0 if unset)"),
            ],
            incremental=True,
        )

    def invoke(self, method: str, payload: bytes) -> bytes:
        if method == "incr":
            key = key_of(payload)
            value = self._counts.update(key, incremented(key))
        elif method == "get":
            value = self._counts.get(key_of(payload), 0)
        else:
            raise PluginError(
                grpc.StatusCode.UNIMPLEMENTED, f"counter has no method {method!r} (it has incr, get)"
            )
        return str(value).encode()

    def snapshot(self) -> bytes:
        return encode(self._counts.read())

    def snapshot_since(self, since: Optional[bytes]) -> StateImage:
        return self._counts.image_since(since).encode(encode, encode_delta)

    def restore(self, schema_version: int, state: bytes) -> None:
        self._counts.replace(self._decode(schema_version, state))

    def restore_delta(self, schema_version: int, delta: bytes) -> None:
        # Sets the counters it lists, and leaves the others as they are.
        self._counts.apply(self._decode(schema_version, delta).items())

    @staticmethod
    def _decode(schema_version: int, data: bytes) -> Dict[str, int]:
        if schema_version != STATE_SCHEMA:
            raise PluginError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"counter reads state schema {STATE_SCHEMA}, was given schema {schema_version}",
            )
        try:
            return decode(data)
        except DecodeError as e:
            # INVALID_ARGUMENT, as the Rust counter answers a malformed state.
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None


if __name__ == "__main__":
    baton_plugin.serve(Counter())
