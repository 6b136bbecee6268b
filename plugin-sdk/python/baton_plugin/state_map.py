"""A key-value map that keeps track of what changed since each snapshot, so that a
plugin gets incremental snapshots (and the short handover pause they buy) without
writing any change tracking of its own (docs/incremental-state.md).

Python has no persistent map, so a StateMap is a dict, a lock and the set of keys
changed since the latest cursor. A snapshot takes, under the lock, a shallow copy of
the dict (a whole image) or the changed keys' current values (a delta), together with
the new cursor; it is encoded after the lock is released, while writers carry on.
Writers wait only for that copy. Only the latest cursor is followed: a snapshot asked
since any other one is whole.

A map of bytes to bytes has a byte format of its own, the same as the Rust SDK's
(`BTKV` whole, `BTKD` delta): StateMap.snapshot_since, restore and restore_delta use it,
so such a plugin needs no encoding either. A plugin with other keys or values encodes
the image itself: `map.image_since(since).encode(full_fn, delta_fn)`.
"""

import os
import struct
import threading
from dataclasses import dataclass, field
from typing import (
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

import grpc

from .image import StateImage
from .server import PluginError

K = TypeVar("K")
V = TypeVar("V")

FULL_MAGIC = b"BTKV"
DELTA_MAGIC = b"BTKD"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MISSING = object()


@dataclass
class Image(Generic[K, V]):
    """What StateMap.image_since took: the whole map or the entries that changed, with
    the cursors a StateImage carries."""

    #: True if this image holds the changes since `base_cursor`, not the whole map.
    delta: bool
    #: A whole image: every entry, as of the cursor (a copy; empty for a delta).
    entries: Dict[K, V] = field(default_factory=dict)
    #: A delta: every key changed since the base cursor, in key order, with its value
    #: as of the cursor (None: removed).
    changes: List[Tuple[K, Optional[V]]] = field(default_factory=list)
    #: For a delta: the cursor it follows.
    base_cursor: bytes = b""
    #: The cursor the image is consistent as of.
    cursor: bytes = b""

    def encode(
        self,
        full: Callable[[Dict[K, V]], bytes],
        delta: Callable[[List[Tuple[K, Optional[V]]]], bytes],
    ) -> StateImage:
        """Encodes the image in the plugin's own format: `full(entries)` for a whole map,
        `delta(changes)` for the changes."""
        if self.delta:
            return StateImage(
                bytes(delta(self.changes)), True, self.base_cursor, self.cursor
            )
        return StateImage(bytes(full(self.entries)), False, b"", self.cursor)


class StateMap(Generic[K, V]):
    """A map whose snapshots can be deltas. One value serves every call: its methods
    lock for as long as one map operation, so threads may share it.

    Keys must be hashable and ordered (a delta lists them in key order); values must not
    be None, which a delta uses for a removed key. Treat values as immutable: a value
    changed in place, rather than set again, is not seen as a change, and a snapshot
    copies the map shallowly.
    """

    def __init__(self, entries: Optional[Mapping[K, V]] = None):
        self._lock = threading.Lock()
        self._map: Dict[K, V] = {}
        # Keys written or removed since the latest cursor, while one is out.
        self._changed: set = set()
        # How many cursors this map has handed out; 0: none yet, so nothing is tracked.
        self._issued = 0
        # Makes this map's cursors its own: a cursor from another process (or another
        # map in this one) never matches, so it gets a whole state back.
        self._epoch = os.urandom(8)
        if entries is not None:
            for key, value in entries.items():
                self._map[key] = _value(value)

    def _cursor(self, n: int) -> bytes:
        return self._epoch + _U64.pack(n)

    def _touch(self, key: K) -> None:
        # Called with the lock held.
        if self._issued:
            self._changed.add(key)

    def get(self, key: K, default=None):
        """The value of `key`, or `default`."""
        with self._lock:
            return self._map.get(key, default)

    def __getitem__(self, key: K) -> V:
        with self._lock:
            return self._map[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._map

    def insert(self, key: K, value: V) -> Optional[V]:
        """Sets `key` to `value`; returns the value it had (None if none)."""
        value = _value(value)
        with self._lock:
            self._touch(key)
            old = self._map.get(key)
            self._map[key] = value
            return old

    def __setitem__(self, key: K, value: V) -> None:
        self.insert(key, value)

    def remove(self, key: K) -> Optional[V]:
        """Removes `key`; returns the value it had (None if none)."""
        with self._lock:
            old = self._map.pop(key, _MISSING)
            if old is _MISSING:
                return None
            self._touch(key)
            return old

    def __delitem__(self, key: K) -> None:
        with self._lock:
            if key not in self._map:
                raise KeyError(key)
            del self._map[key]
            self._touch(key)

    def update(self, key: K, fn: Callable[[Optional[V]], V]) -> V:
        """Sets `key` to `fn(current value or None)`, in one step no other writer can come
        between; returns the new value. A counter's increment, say. If `fn` raises, the
        map is left as it was."""
        with self._lock:
            value = _value(fn(self._map.get(key)))
            self._touch(key)
            self._map[key] = value
            return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._map)

    def read(self) -> Dict[K, V]:
        """A consistent copy of the whole map, to read at leisure."""
        with self._lock:
            return dict(self._map)

    def items(self) -> List[Tuple[K, V]]:
        """A consistent copy of the entries, in key order."""
        return sorted(self.read().items(), key=lambda kv: kv[0])

    def __iter__(self) -> Iterator[K]:
        """The keys of a copy, in key order."""
        return iter([k for k, _ in self.items()])

    def image_since(self, since: Optional[bytes]) -> Image[K, V]:
        """The map as of a new cursor: the changes since `since` if that is the latest
        cursor this map gave, else the whole map. Writers wait only while the copy (or
        the changed keys' values) and the cursor are taken."""
        with self._lock:
            latest = self._cursor(self._issued) if self._issued else b""
            follows = bool(latest) and since is not None and bytes(since) == latest
            self._issued += 1
            cursor = self._cursor(self._issued)
            changed, self._changed = self._changed, set()
            if follows:
                taken = [(k, self._map.get(k)) for k in changed]
            else:
                entries = dict(self._map)
        if follows:
            taken.sort(key=lambda kv: kv[0])
            return Image(True, changes=taken, base_cursor=latest, cursor=cursor)
        return Image(False, entries=entries, cursor=cursor)

    def replace(self, entries: Mapping[K, V]) -> None:
        """Replaces the whole map (a restore). Cursors given before no longer follow:
        the next snapshot is whole, whatever cursor it is asked since."""
        new = {k: _value(v) for k, v in entries.items()}
        with self._lock:
            self._map = new
            self._changed = set()
            self._issued = 0

    def apply(self, changes: Iterable[Tuple[K, Optional[V]]]) -> None:
        """Applies changes (a delta's) in one step: None removes the key."""
        changes = list(changes)
        with self._lock:
            for key, value in changes:
                self._touch(key)
                if value is None:
                    self._map.pop(key, None)
                else:
                    self._map[key] = value

    # A map of bytes to bytes, in the SDK's own format.

    def snapshot_since(self, since: Optional[bytes]) -> StateImage:
        """Plugin.snapshot_since for a map of bytes to bytes, in the BTKV/BTKD format."""
        return self.image_since(since).encode(encode_full, encode_delta)

    def restore(self, state: bytes) -> None:
        """Plugin.restore for a map of bytes to bytes: refuses bytes that are not a
        whole state in this format with PluginError(INVALID_ARGUMENT), leaving the map
        as it was."""
        try:
            entries = decode_full(state)
        except DecodeError as e:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        self.replace(entries)

    def restore_delta(self, delta: bytes) -> None:
        """Plugin.restore_delta for a map of bytes to bytes: refuses bytes that are not a
        delta in this format with PluginError(INVALID_ARGUMENT), leaving the map as it
        was."""
        try:
            changes = decode_delta(delta)
        except DecodeError as e:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        self.apply(changes)


def _value(value):
    if value is None:
        raise TypeError(
            "a StateMap value cannot be None (a delta's mark of a removed key); use remove()"
        )
    return value


# The byte format (docs/incremental-state.md), byte for byte the Rust SDK's
# (plugin-sdk/src/state_map/codec.rs). All integers little-endian.


class DecodeError(ValueError):
    """Bytes that are not a state map or a delta of one."""


def _put(out: List[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(bytes(data))


def encode_full(entries: Mapping[bytes, bytes]) -> bytes:
    """The whole map: `BTKV`, the entry count (u64), then each entry in key order as a
    length-prefixed (u32) key and value."""
    out = [FULL_MAGIC, _U64.pack(len(entries))]
    for key, value in sorted(entries.items(), key=lambda kv: bytes(kv[0])):
        _put(out, key)
        _put(out, value)
    return b"".join(out)


def encode_delta(changes: Sequence[Tuple[bytes, Optional[bytes]]]) -> bytes:
    """The changes: `BTKD`, the entry count (u64), then each entry in key order as a
    length-prefixed key, a tag (1: set, 0: removed) and, if set, a length-prefixed
    value."""
    out = [DELTA_MAGIC, _U64.pack(len(changes))]
    for key, value in sorted(changes, key=lambda kv: bytes(kv[0])):
        _put(out, key)
        if value is None:
            out.append(b"\x00")
        else:
            out.append(b"\x01")
            _put(out, value)
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(bytes(data))
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"state map bytes are truncated at byte {self.pos}")
        out = bytes(self.data[self.pos:end])
        self.pos = end
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def field(self) -> bytes:
        return self.take(self.u32())

    def magic(self, magic: bytes, what: str) -> None:
        if bytes(self.data[:4]) != magic:
            raise DecodeError(
                f'state map {what} does not start with the magic bytes "{magic.decode()}"'
            )
        self.pos = 4

    def key(self, previous: Optional[bytes]) -> bytes:
        """The next key, which must sort after `previous`."""
        at = self.pos
        key = self.field()
        if previous is not None and previous >= key:
            raise DecodeError(f"state map key at byte {at} is not greater than the key before it")
        return key

    def end(self) -> None:
        rest = len(self.data) - self.pos
        if rest:
            raise DecodeError(f"state map has {rest} unexpected bytes after the last entry")


def decode_full(data: bytes) -> Dict[bytes, bytes]:
    """Reads a whole map written by encode_full, refusing anything malformed."""
    r = _Reader(data)
    r.magic(FULL_MAGIC, "state")
    entries: Dict[bytes, bytes] = {}
    previous = None
    for _ in range(r.u64()):
        key = r.key(previous)
        entries[key] = r.field()
        previous = key
    r.end()
    return entries


def decode_delta(data: bytes) -> List[Tuple[bytes, Optional[bytes]]]:
    """Reads changes written by encode_delta, refusing anything malformed."""
    r = _Reader(data)
    r.magic(DELTA_MAGIC, "delta")
    changes: List[Tuple[bytes, Optional[bytes]]] = []
    previous = None
    for _ in range(r.u64()):
        key = r.key(previous)
        at = r.pos
        (tag,) = r.take(1)
        if tag == 1:
            changes.append((key, r.field()))
        elif tag == 0:
            changes.append((key, None))
        else:
            raise DecodeError(
                f"state map delta entry at byte {at} has tag {tag} (0: removed, 1: set)"
            )
        previous = key
    r.end()
    return changes
