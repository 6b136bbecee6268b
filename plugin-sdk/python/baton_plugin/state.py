"""Splitting a state into StateChunks and putting it back together, with the checks the
contract asks for: one schema version, chunks in order, a final chunk, a checksum.
The same rules as the Rust SDK's `state` module, so either side can read the other.

A snapshot also carries marks for incremental snapshots (docs/incremental-state.md):
`delta` and `base_cursor` on its first chunk, `cursor` on its last.
"""

import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Tuple

from ._proto import pb

#: Size of each chunk's data; well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1 << 20
#: The longest cursor a snapshot may carry: cursors are opaque, but the host keeps them
#: and sends them back, so a plugin does not get to make them large.
MAX_CURSOR_BYTES = 256


@dataclass(frozen=True)
class Marks:
    """What a snapshot says of itself beyond its data: whether it is a delta, the cursor
    it follows, and the cursor it is consistent as of (empty from a plugin without
    incremental snapshots)."""

    delta: bool = False
    base_cursor: bytes = b""
    cursor: bytes = b""


def chunks(
    schema_version: int,
    state: bytes,
    chunk_size: int = CHUNK_SIZE,
    marks: Marks = Marks(),
) -> Iterator["pb.StateChunk"]:
    """Splits `state` into chunks of at most `chunk_size` bytes; the first carries the total
    length, the last the CRC-32 (computed as the chunks go, so the first leaves at once);
    with `marks`, marked as `marked` does."""
    split = _split(schema_version, state, chunk_size)
    return marked(split, marks) if marks != Marks() else split


def _split(schema_version: int, state: bytes, chunk_size: int) -> Iterator["pb.StateChunk"]:
    count = max(1, -(-len(state) // chunk_size))
    view = memoryview(state)
    crc = 0
    for i in range(count):
        last = i + 1 == count
        data = bytes(view[i * chunk_size:(i + 1) * chunk_size])
        crc = zlib.crc32(data, crc)
        yield pb.StateChunk(
            schema_version=schema_version,
            seq=i,
            data=data,
            last=last,
            checksum=crc if last else 0,
            total_bytes=len(state) if i == 0 else 0,
        )


def marked(stream: Iterable["pb.StateChunk"], marks: Marks) -> Iterator["pb.StateChunk"]:
    """The chunks of `stream`, marked: `delta` and `base_cursor` on the first (seq 0),
    `cursor` on the last."""
    for chunk in stream:
        if chunk.seq == 0:
            chunk.delta = marks.delta
            chunk.base_cursor = marks.base_cursor
        if chunk.last:
            chunk.cursor = marks.cursor
        yield chunk


class ReassemblyError(Exception):
    """A stream of chunks that does not make a state."""


class OutOfOrder(ReassemblyError):
    """A chunk came with another seq than the next expected one."""


class SchemaChanged(ReassemblyError):
    """A chunk's schema version differs from the first chunk's."""


class AfterLast(ReassemblyError):
    """A chunk came after the one marked last."""


class Truncated(ReassemblyError):
    """The stream ended without a chunk marked last."""


class ChecksumMismatch(ReassemblyError):
    """The CRC-32 of the data does not match the last chunk's checksum."""


class TooLarge(ReassemblyError):
    """The state is larger than the receiver accepts."""


class LengthMismatch(ReassemblyError):
    """The chunks' data does not add up to the length the first chunk announced."""


class CursorTooLong(ReassemblyError):
    """A chunk carries a cursor longer than MAX_CURSOR_BYTES."""


class Reassembly:
    """Collects chunks, checking each as it comes."""

    def __init__(self, limit: int):
        self._limit = limit
        self._schema_version = None
        self._next_seq = 0
        self._data = bytearray()
        self._crc = 0
        self._done = False
        self._announced = None
        self._delta = False
        self._base_cursor = b""
        self._cursor = b""

    def push(self, chunk: "pb.StateChunk") -> None:
        """Takes the next chunk, or raises a ReassemblyError saying why it does not fit."""
        if self._done:
            raise AfterLast(f"state chunk {chunk.seq} arrived after the last chunk")
        if chunk.seq != self._next_seq:
            raise OutOfOrder(
                f"state chunk out of order: expected seq {self._next_seq}, got {chunk.seq}"
            )
        if self._schema_version is None:
            self._schema_version = chunk.schema_version
        elif chunk.schema_version != self._schema_version:
            raise SchemaChanged(
                f"state chunk {chunk.seq} has schema version {chunk.schema_version}, "
                f"but the snapshot started with {self._schema_version}"
            )
        for cursor in (chunk.base_cursor, chunk.cursor):
            if len(cursor) > MAX_CURSOR_BYTES:
                raise CursorTooLong(
                    f"state chunk {chunk.seq} carries a cursor of {len(cursor)} bytes; "
                    f"the limit is {MAX_CURSOR_BYTES}"
                )
        if chunk.seq == 0:
            self._delta = chunk.delta
            self._base_cursor = chunk.base_cursor
        if chunk.seq == 0 and chunk.total_bytes:
            if chunk.total_bytes > self._limit:
                raise TooLarge(f"state exceeds the limit of {self._limit} bytes")
            self._announced = chunk.total_bytes
        if len(self._data) + len(chunk.data) > self._limit:
            raise TooLarge(f"state exceeds the limit of {self._limit} bytes")
        self._crc = zlib.crc32(chunk.data, self._crc)
        self._data += chunk.data
        self._next_seq += 1
        got = len(self._data)
        if self._announced is not None and (
            got > self._announced or (chunk.last and got != self._announced)
        ):
            raise LengthMismatch(
                f"state length mismatch: the first chunk announced {self._announced} bytes, "
                f"the chunks carry {got}"
            )
        if chunk.last:
            self._done = True
            self._cursor = chunk.cursor
            if self._crc != chunk.checksum:
                raise ChecksumMismatch(
                    f"state checksum mismatch: the last chunk says {chunk.checksum:08x}, "
                    f"the data hashes to {self._crc:08x}"
                )

    def finish(self) -> Tuple[int, bytes]:
        """The schema version and the whole state, once the last chunk has arrived."""
        if not self._done:
            raise Truncated(
                f"state stream ended after {self._next_seq} chunks without a last chunk (truncated)"
            )
        return self._schema_version or 0, bytes(self._data)

    def finish_marked(self) -> Tuple[int, bytes, Marks]:
        """The schema version, the whole state and its marks, once the last chunk has arrived."""
        schema, state = self.finish()
        return schema, state, Marks(self._delta, self._base_cursor, self._cursor)
