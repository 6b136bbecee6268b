"""Incremental snapshots through the SDK's gRPC server, in real plugin processes
(map_plugin.py): the marks on the chunks, the chain of restores, and the refusals
(docs/incremental-state.md)."""

import sys
import threading
import time
from pathlib import Path

import grpc

from baton_plugin._proto import pb
from baton_plugin.state import CHUNK_SIZE, Marks, chunks
from baton_plugin.state_map import decode_delta, decode_full, encode_delta, encode_full

from support import REPO, PluginProcess, copy
from test_e2e import CALL_TIMEOUT, PluginTestCase

MAP_PLUGIN = Path(__file__).with_name("map_plugin.py")
SCHEMA = 3


def joined(cs):
    return b"".join(c.data for c in cs)


class IncrementalTest(PluginTestCase):
    def start_map(self, name, mode="incremental"):
        p = PluginProcess([sys.executable, str(MAP_PLUGIN), mode], name)
        self.addCleanup(p.close)
        self.assertEqual(p.read_handshake(), f"baton|1|unix|{p.socket}")
        return p

    def snapshot_since(self, p, since):
        request = pb.SnapshotRequest(since=since)
        return list(p.stub().Snapshot(request, metadata=p.auth(), timeout=CALL_TIMEOUT))

    def dump(self, p):
        return decode_full(self.invoke(p, "dump", b""))

    def assertMarked(self, cs, delta, base_cursor, cursor):
        """Checks the marks are where the contract puts them: delta and base_cursor on the
        first chunk only, cursor on the last only."""
        self.assertEqual((cs[0].delta, cs[0].base_cursor), (delta, base_cursor))
        self.assertEqual(cs[-1].cursor, cursor)
        for c in cs[1:]:
            self.assertEqual((c.delta, c.base_cursor), (False, b""), f"chunk {c.seq}")
        for c in cs[:-1]:
            self.assertEqual(c.cursor, b"", f"chunk {c.seq}")

    def test_describe_declares_it(self):
        for mode, want in (("incremental", True), ("undeclared", False), ("plain", False)):
            with self.subTest(mode):
                p = self.start_map(mode, mode)
                d = p.stub().Describe(pb.DescribeRequest(), metadata=p.auth(), timeout=CALL_TIMEOUT)
                self.assertEqual(d.incremental_snapshots, want)

    def test_a_snapshot_since_the_latest_cursor_is_a_marked_delta(self):
        p = self.start_map("old")
        self.invoke(p, "set", b"a=1")
        self.invoke(p, "set", b"b=2")
        full = self.snapshot_since(p, b"")
        cursor = full[-1].cursor
        self.assertEqual(len(cursor), 16)
        self.assertMarked(full, False, b"", cursor)
        self.assertEqual(decode_full(joined(full)), {b"a": b"1", b"b": b"2"})

        self.invoke(p, "set", b"c=3")
        self.invoke(p, "del", b"a")
        delta = self.snapshot_since(p, cursor)
        self.assertEqual(delta[0].schema_version, SCHEMA)
        self.assertMarked(delta, True, cursor, delta[-1].cursor)
        self.assertNotIn(delta[-1].cursor, (b"", cursor))
        self.assertEqual(decode_delta(joined(delta)), [(b"a", None), (b"c", b"3")])

        # Any other cursor (an older one here) gets a whole state.
        again = self.snapshot_since(p, cursor)
        self.assertMarked(again, False, b"", again[-1].cursor)
        self.assertEqual(decode_full(joined(again)), {b"b": b"2", b"c": b"3"})

    def test_the_marks_of_a_delta_in_several_chunks(self):
        p = self.start_map("big")
        cursor = self.snapshot_since(p, b"")[-1].cursor
        value = b"v" * (CHUNK_SIZE // 2)
        for i in range(5):
            self.invoke(p, "set", b"k%d=" % i + value)
        delta = self.snapshot_since(p, cursor)
        self.assertEqual(len(delta), 3)
        self.assertMarked(delta, True, cursor, delta[-1].cursor)
        self.assertEqual(len(decode_delta(joined(delta))), 5)

    def test_a_full_state_then_deltas_restore_in_order(self):
        old, new = self.start_map("old"), self.start_map("new")
        self.invoke(old, "set", b"a=1")
        self.invoke(old, "set", b"gone=x")
        full = self.snapshot_since(old, b"")
        self.assertEqual(self.restore(new, full).bytes_restored, len(joined(full)))
        self.assertEqual(self.dump(new), {b"a": b"1", b"gone": b"x"})

        cursor = full[-1].cursor
        for step in (b"b=2", b"a=11", None):
            if step:
                self.invoke(old, "set", step)
            else:
                self.invoke(old, "del", b"gone")
            delta = self.snapshot_since(old, cursor)
            self.assertTrue(delta[0].delta)
            self.assertEqual(self.restore(new, delta).bytes_restored, len(joined(delta)))
            self.assertEqual(self.dump(new), self.dump(old))
            cursor = delta[-1].cursor
        self.assertEqual(self.dump(new), {b"a": b"11", b"b": b"2"})

    def test_a_delta_that_does_not_follow_is_refused_and_changes_nothing(self):
        old, new = self.start_map("old"), self.start_map("new")
        self.invoke(old, "set", b"a=1")
        full = self.snapshot_since(old, b"")
        self.invoke(old, "set", b"b=2")
        first = self.snapshot_since(old, full[-1].cursor)
        self.invoke(old, "set", b"c=3")
        second = self.snapshot_since(old, first[-1].cursor)

        # Nothing applied yet: no delta follows.
        details = self.assertCode(grpc.StatusCode.DATA_LOSS, lambda: self.restore(new, first))
        self.assertIn(f"follows cursor {full[-1].cursor.hex()}", details)
        self.assertIn("(cursor (none))", details)
        self.restore(new, full)
        before = self.dump(new)

        # A delta out of order (one lost before it), and one whose base is made up.
        for name, stream, base in [
            ("one lost before it", second, first[-1].cursor),
            ("another base", [copy(first[0], base_cursor=b"\x01" * 16)], b"\x01" * 16),
        ]:
            with self.subTest(name):
                details = self.assertCode(grpc.StatusCode.DATA_LOSS, lambda: self.restore(new, stream))
                self.assertEqual(
                    details,
                    f"a delta that follows cursor {base.hex()} does not follow the state "
                    f"restored here (cursor {full[-1].cursor.hex()}): a delta out of order, "
                    "or one lost before it",
                )
                self.assertEqual(self.dump(new), before)

        # The chain goes on from where it was.
        self.restore(new, first)
        self.restore(new, second)
        self.assertEqual(self.dump(new), {b"a": b"1", b"b": b"2", b"c": b"3"})
        # A delta applied twice does not follow either.
        self.assertCode(grpc.StatusCode.DATA_LOSS, lambda: self.restore(new, second))
        self.assertEqual(self.dump(new), {b"a": b"1", b"b": b"2", b"c": b"3"})

    def test_a_refused_restore_keeps_the_cursor_and_a_refused_delta_applies_nothing(self):
        p = self.start_map("p")
        base = b"\x07" * 16
        self.restore(p, chunks(SCHEMA, encode_full({b"a": b"1"}), marks=Marks(cursor=base)))
        # A whole state the plugin refuses, a malformed delta (the plugin's
        # INVALID_ARGUMENT), and a delta in a schema the plugin cannot read.
        bad_delta = encode_delta([(b"b", b"2")]) + b"\x00"
        for stream, code in [
            (chunks(SCHEMA, b"nonsense", marks=Marks(cursor=b"\x08" * 16)), grpc.StatusCode.INVALID_ARGUMENT),
            (chunks(SCHEMA, bad_delta, marks=Marks(True, base, b"\x09" * 16)), grpc.StatusCode.INVALID_ARGUMENT),
            (chunks(SCHEMA + 1, encode_delta([]), marks=Marks(True, base, b"\x09" * 16)), grpc.StatusCode.FAILED_PRECONDITION),
        ]:
            self.assertCode(code, lambda: self.restore(p, list(stream)))
        self.assertEqual(self.dump(p), {b"a": b"1"})
        good = encode_delta([(b"a", None), (b"b", b"2")])
        self.restore(p, chunks(SCHEMA, good, marks=Marks(True, base, b"\x0a" * 16)))
        self.assertEqual(self.dump(p), {b"b": b"2"})

    def test_cursors_over_256_bytes(self):
        p = self.start_map("p")
        (full,) = chunks(SCHEMA, encode_full({b"a": b"1"}), marks=Marks(cursor=b"c" * 256))
        self.restore(p, [full])
        for field in ("cursor", "base_cursor"):
            with self.subTest(field):
                stream = [copy(full, **{field: b"c" * 257})]
                details = self.assertCode(grpc.StatusCode.DATA_LOSS, lambda: self.restore(p, stream))
                self.assertIn("cursor of 257 bytes; the limit is 256", details)
        # The 256-byte cursor is still the one applied.
        delta = chunks(SCHEMA, encode_delta([(b"b", b"2")]), marks=Marks(True, b"c" * 256))
        self.restore(p, delta)
        self.assertEqual(self.dump(p), {b"a": b"1", b"b": b"2"})

        liar = self.start_map("liar", "long-cursor")
        details = self.assertCode(grpc.StatusCode.INTERNAL, lambda: self.snapshot_since(liar, b""))
        self.assertIn("cursor is 257 bytes", details)
        odd = self.start_map("odd", "not-an-image")
        details = self.assertCode(grpc.StatusCode.INTERNAL, lambda: self.snapshot_since(odd, b""))
        self.assertIn("returned bytes, not a StateImage", details)

    def test_a_plugin_without_incremental_ignores_since(self):
        # Its snapshot_since is never called, though it has one.
        p = self.start_map("undeclared", "undeclared")
        self.invoke(p, "set", b"a=1")
        whole = self.snapshot_since(p, b"")
        self.assertMarked(whole, False, b"", b"")
        self.invoke(p, "set", b"b=2")
        for since in (b"", b"\x00" * 16, whole[-1].cursor):
            taken = self.snapshot_since(p, since)
            self.assertMarked(taken, False, b"", b"")
            self.assertEqual(decode_full(joined(taken)), {b"a": b"1", b"b": b"2"})

        # Given a delta that follows what it restored, the SDK's default restore_delta
        # refuses it, and the state stays as it was.
        p = self.start_map("plain", "plain")
        self.restore(p, chunks(SCHEMA, encode_full({b"x": b"1"}), marks=Marks(cursor=b"\x01")))
        delta = list(chunks(SCHEMA, encode_delta([(b"y", b"2")]), marks=Marks(True, b"\x01", b"\x02")))
        details = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, lambda: self.restore(p, delta))
        self.assertIn("this plugin takes no deltas", details)
        self.assertEqual(self.dump(p), {b"x": b"1"})

    def test_the_marks_survive_a_chunker_replaced_as_the_e2e_plugins_do(self):
        # tests/plugins/*.py replace baton_plugin.server.chunks with a function of
        # (schema_version, state): the SDK marks what that function makes.
        script = REPO / "tests" / "plugins" / "unannounced.py"
        p = PluginProcess([sys.executable, str(script)], "unannounced")
        self.addCleanup(p.close)
        p.read_handshake()
        self.invoke(p, "incr", b"a")
        (full,) = self.snapshot_since(p, b"")
        self.assertEqual((full.total_bytes, len(full.cursor)), (0, 16))
        self.invoke(p, "incr", b"b")
        delta = self.snapshot_since(p, full.cursor)
        self.assertMarked(delta, True, full.cursor, delta[-1].cursor)
        self.assertEqual(delta[0].total_bytes, 0)

    def test_restores_apply_one_at_a_time(self):
        p = self.start_map("p")
        full = list(chunks(SCHEMA, encode_full({b"a": b"1"}) , chunk_size=8, marks=Marks(cursor=b"\x01")))
        delta = list(chunks(SCHEMA, encode_delta([(b"b", b"2")]), marks=Marks(True, b"\x01", b"\x02")))
        go_on = threading.Event()

        def slow_full():
            yield full[0]
            go_on.wait(CALL_TIMEOUT)
            yield from full[1:]

        first = p.stub().Restore.future(slow_full(), metadata=p.auth(), timeout=CALL_TIMEOUT)
        time.sleep(0.3)
        # The delta comes while the whole state is still arriving: it waits for it.
        second = p.stub().Restore.future(iter(delta), metadata=p.auth(), timeout=CALL_TIMEOUT)
        time.sleep(0.3)
        self.assertFalse(second.done(), "the delta waits for the restore before it")
        go_on.set()
        self.assertEqual(first.result().bytes_restored, len(joined(full)))
        self.assertEqual(second.result().bytes_restored, len(joined(delta)))
        self.assertEqual(self.dump(p), {b"a": b"1", b"b": b"2"})


if __name__ == "__main__":
    import unittest

    unittest.main()
