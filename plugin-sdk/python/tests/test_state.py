import unittest
import zlib

from baton_plugin.state import (
    CHUNK_SIZE,
    AfterLast,
    MAX_CURSOR_BYTES,
    ChecksumMismatch,
    CursorTooLong,
    LengthMismatch,
    Marks,
    OutOfOrder,
    Reassembly,
    SchemaChanged,
    TooLarge,
    Truncated,
    chunks,
)
from support import copy


def reassemble(cs, limit=1 << 40):
    r = Reassembly(limit)
    for c in cs:
        r.push(c)
    return r.finish()


class ChunkingTest(unittest.TestCase):
    def test_round_trips_empty_small_and_multi_chunk_states(self):
        for size in (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 17):
            with self.subTest(size=size):
                state = bytes(i % 251 for i in range(size))
                cs = list(chunks(7, state))
                self.assertEqual(len(cs), max(1, -(-size // CHUNK_SIZE)))
                self.assertEqual([c.seq for c in cs], list(range(len(cs))))
                self.assertEqual([c.last for c in cs], [False] * (len(cs) - 1) + [True])
                self.assertTrue(all(len(c.data) <= CHUNK_SIZE for c in cs))
                self.assertTrue(all(c.checksum == 0 for c in cs[:-1]))
                self.assertEqual(cs[-1].checksum, zlib.crc32(state))
                self.assertEqual(reassemble(cs), (7, state))

    def test_empty_state_is_one_empty_last_chunk(self):
        (c,) = chunks(3, b"")
        self.assertEqual((c.schema_version, c.seq, c.data, c.last, c.checksum), (3, 0, b"", True, 0))

    def test_the_announced_length_is_kept_to(self):
        state = bytes([3]) * (CHUNK_SIZE * 2 + 5)
        good = list(chunks(1, state))
        self.assertEqual([c.total_bytes for c in good], [len(state), 0, 0])
        for announced in (CHUNK_SIZE, len(state) + 1):
            with self.subTest(announced=announced):
                with self.assertRaisesRegex(LengthMismatch, f"announced {announced} bytes"):
                    reassemble([copy(good[0], total_bytes=announced)] + good[1:])
        # Over the limit: refused on the first chunk, before the data adds up.
        with self.assertRaises(TooLarge):
            Reassembly(CHUNK_SIZE).push(good[0])
        # Senders that do not announce the length are still read.
        self.assertEqual(reassemble([copy(good[0], total_bytes=0)] + good[1:]), (1, state))

    def test_refuses_reordered_truncated_corrupted_and_schema_changing_streams(self):
        state = bytes([5]) * (CHUNK_SIZE * 3)
        good = list(chunks(1, state))

        with self.assertRaisesRegex(OutOfOrder, "expected seq 0, got 1"):
            reassemble([good[1], good[0], good[2]])
        with self.assertRaisesRegex(Truncated, "after 2 chunks"):
            reassemble(good[:2])
        corrupted = bytearray(good[1].data)
        corrupted[3] ^= 1
        with self.assertRaises(ChecksumMismatch):
            reassemble([good[0], copy(good[1], data=bytes(corrupted)), good[2]])
        with self.assertRaises(ChecksumMismatch):
            reassemble(good[:2] + [copy(good[2], checksum=good[2].checksum ^ 1)])
        with self.assertRaises(SchemaChanged):
            reassemble(good[:2] + [copy(good[2], schema_version=2)])
        with self.assertRaises(AfterLast):
            reassemble(good + [copy(good[2], seq=3)])

    def test_marks_go_on_the_first_and_last_chunks_and_come_back(self):
        state = bytes([9]) * (2 * CHUNK_SIZE + 1)
        marks = Marks(delta=True, base_cursor=b"base", cursor=b"cursor")
        cs = list(chunks(1, state, marks=marks))
        self.assertEqual([(c.delta, c.base_cursor) for c in cs], [(True, b"base"), (False, b""), (False, b"")])
        self.assertEqual([c.cursor for c in cs], [b"", b"", b"cursor"])
        r = Reassembly(1 << 40)
        for c in cs:
            r.push(c)
        self.assertEqual(r.finish_marked(), (1, state, marks))
        (one,) = chunks(1, b"x", marks=marks)
        self.assertEqual((one.delta, one.base_cursor, one.cursor), (True, b"base", b"cursor"))
        r = Reassembly(10)
        r.push(one)
        self.assertEqual(r.finish_marked(), (1, b"x", marks))
        # Unmarked chunks, as from a plugin without incremental snapshots.
        r = Reassembly(10)
        for c in chunks(1, b"x"):
            r.push(c)
        self.assertEqual(r.finish_marked(), (1, b"x", Marks()))

    def test_refuses_a_cursor_over_the_limit(self):
        (c,) = chunks(1, b"x", marks=Marks(True, b"b" * MAX_CURSOR_BYTES, b"c" * MAX_CURSOR_BYTES))
        Reassembly(10).push(c)
        for field in ("base_cursor", "cursor"):
            with self.subTest(field), self.assertRaisesRegex(CursorTooLong, "257 bytes; the limit is 256"):
                Reassembly(10).push(copy(c, **{field: b"x" * 257}))

    def test_enforces_the_size_limit(self):
        (c,) = chunks(1, bytes(11))
        with self.assertRaises(TooLarge):
            Reassembly(10).push(c)


if __name__ == "__main__":
    unittest.main()
