"""Splitting a state into StateChunks and putting it back together, with the checks the
contract asks for: one schema version, chunks in order, a final chunk, a checksum.
The same rules as the Rust SDK's `state` module, so either side can read the other."""

import zlib
from typing import Iterator, Tuple

from ._proto import pb

#: Size of each chunk's data; well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1 << 20


def chunks(schema_version: int, state: bytes) -> Iterator["pb.StateChunk"]:
    """Splits `state` into chunks of at most CHUNK_SIZE bytes; the last carries the CRC-32."""
    checksum = zlib.crc32(state)
    count = max(1, -(-len(state) // CHUNK_SIZE))
    for i in range(count):
        last = i + 1 == count
        yield pb.StateChunk(
            schema_version=schema_version,
            seq=i,
            data=state[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE],
            last=last,
            checksum=checksum if last else 0,
        )


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


class Reassembly:
    """Collects chunks, checking each as it comes."""

    def __init__(self, limit: int):
        self._limit = limit
        self._schema_version = None
        self._next_seq = 0
        self._data = bytearray()
        self._crc = 0
        self._done = False

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
        if len(self._data) + len(chunk.data) > self._limit:
            raise TooLarge(f"state exceeds the limit of {self._limit} bytes")
        self._crc = zlib.crc32(chunk.data, self._crc)
        self._data += chunk.data
        self._next_seq += 1
        if chunk.last:
            self._done = True
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
