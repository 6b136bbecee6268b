"""The shared wire vectors (proto/testdata/state-vectors.json): the Rust, Go and
TypeScript SDKs read the same file, so what one sends every other accepts."""

import json
import unittest
import zlib

from baton_plugin._proto import pb
from baton_plugin.state import (
    AfterLast,
    ChecksumMismatch,
    LengthMismatch,
    OutOfOrder,
    Reassembly,
    SchemaChanged,
    TooLarge,
    Truncated,
    chunks,
)
from support import REPO

VECTORS = REPO / "proto" / "testdata" / "state-vectors.json"
ERRORS = {
    "out_of_order": OutOfOrder,
    "schema_changed": SchemaChanged,
    "after_last": AfterLast,
    "truncated": Truncated,
    "checksum": ChecksumMismatch,
    "length": LengthMismatch,
    "too_large": TooLarge,
}


def state_of(entry) -> bytes:
    source = entry["state"]
    if "hex" in source:
        return bytes.fromhex(source["hex"])
    return bytes(i % 251 for i in range(source["fill"]))


class VectorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = json.loads(VECTORS.read_text())

    def test_states_split_into_the_published_chunks_and_back(self):
        # This SDK's own chunks are larger (CHUNK_SIZE); any size is valid on the wire,
        # and at the published size the chunks must match byte for byte.
        size = self.doc["chunk_size"]
        for entry in self.doc["states"]:
            with self.subTest(entry["name"]):
                state = state_of(entry)
                self.assertEqual(len(state), entry["length"])
                self.assertEqual(zlib.crc32(state), entry["crc32"])
                made = list(chunks(entry["schema_version"], state, chunk_size=size))
                self.assertEqual(len(made), len(entry["chunks"]))
                for got, want in zip(made, entry["chunks"]):
                    start = want["offset"]
                    self.assertEqual(got.schema_version, entry["schema_version"])
                    self.assertEqual(got.seq, want["seq"])
                    self.assertEqual(got.data, state[start:start + want["length"]])
                    self.assertEqual(got.last, want["last"])
                    self.assertEqual(got.checksum, want["checksum"])
                    self.assertEqual(got.total_bytes, want["total_bytes"])
                r = Reassembly(1 << 40)
                for c in made:
                    r.push(c)
                self.assertEqual(r.finish(), (entry["schema_version"], state))

    def test_streams_are_accepted_or_refused_as_published(self):
        for stream in self.doc["streams"]:
            with self.subTest(stream["name"]):
                r = Reassembly(stream.get("limit", 1 << 40))
                cs = [
                    pb.StateChunk(
                        schema_version=c["schema_version"],
                        seq=c["seq"],
                        data=bytes.fromhex(c["data_hex"]),
                        last=c["last"],
                        checksum=c["checksum"],
                        total_bytes=c["total_bytes"],
                    )
                    for c in stream["chunks"]
                ]
                expect = stream["expect"]
                if "error" in expect:
                    with self.assertRaises(ERRORS[expect["error"]]):
                        for c in cs:
                            r.push(c)
                        r.finish()
                else:
                    for c in cs:
                        r.push(c)
                    self.assertEqual(
                        r.finish(), (expect["schema_version"], bytes.fromhex(expect["state_hex"]))
                    )


if __name__ == "__main__":
    unittest.main()
