"""Splitting a state into StateChunks and putting it back together, with the checks the
contract asks for: one schema version, chunks in order, a final chunk, a checksum.
The same rules as the Rust SDK's `state` module, so either side can read the other."""

import zlib
from typing import Iterator, Tuple

from ._proto import pb

#: Size of each chunk's data; well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1 << 20


def chunks(
    schema_version: int, state: bytes, chunk_size: int = CHUNK_SIZE
) -> Iterator["pb.StateChunk"]:
    """Splits `state` into chunks of at most `chunk_size` bytes; the first carries the total
    length, the last the CRC-32 (computed as the chunks go, so the first leaves at once)."""
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
