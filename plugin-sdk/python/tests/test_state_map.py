"""StateMap: change tracking, cursors, consistency under a writer, and its byte format
(docs/incremental-state.md)."""

import json
import sys
import threading
import unittest

import grpc

from baton_plugin import PluginError, StateImage, StateMap
from baton_plugin.state_map import (
    DecodeError,
    decode_delta,
    decode_full,
    encode_delta,
    encode_full,
)

from support import REPO, YieldingLock


def restored(images):
    """A new map with `images` (a whole state, then deltas) applied in order."""
    copy = StateMap()
    for image in images:
        if image.delta:
            copy.restore_delta(image.data)
        else:
            copy.restore(image.data)
    return copy


class FastSwitching:
    """Makes the interpreter switch threads as often as it can, so that a race shows."""

    def __enter__(self):
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)

    def __exit__(self, *_):
        sys.setswitchinterval(self._interval)


class StateMapTest(unittest.TestCase):
    def test_a_snapshot_since_the_latest_cursor_is_a_delta_of_what_changed(self):
        m = StateMap()
        m[b"a"] = b"1"
        m.insert(b"b", b"2")
        m[b"gone"] = b"x"
        m[b"d"] = b"4"
        full = m.snapshot_since(None)
        self.assertIsInstance(full, StateImage)
        self.assertFalse(full.delta)
        self.assertEqual(full.base_cursor, b"")
        self.assertEqual(len(full.cursor), 16)
        self.assertEqual(
            decode_full(full.data), {b"a": b"1", b"b": b"2", b"gone": b"x", b"d": b"4"}
        )

        m[b"c"] = b"3"
        self.assertEqual(m.remove(b"a"), b"1")
        self.assertIsNone(m.remove(b"never"), "removing a missing key changes nothing")
        self.assertEqual(m.update(b"b", lambda v: v + b"2"), b"22")
        del m[b"gone"]
        m[b"gone"] = b"back"
        del m[b"d"]
        delta = m.snapshot_since(full.cursor)
        self.assertTrue(delta.delta)
        self.assertEqual(delta.base_cursor, full.cursor)
        self.assertNotEqual(delta.cursor, full.cursor)
        self.assertEqual(
            decode_delta(delta.data),
            [(b"a", None), (b"b", b"22"), (b"c", b"3"), (b"d", None), (b"gone", b"back")],
        )

        # Nothing changed since: an empty delta.
        empty = m.snapshot_since(delta.cursor)
        self.assertTrue(empty.delta)
        self.assertEqual(decode_delta(empty.data), [])

        self.assertEqual(restored([full, delta, empty]).read(), m.read())
        self.assertEqual(m.items(), [(b"b", b"22"), (b"c", b"3"), (b"gone", b"back")])
        self.assertEqual(len(m), 3)

    def test_nothing_is_tracked_before_the_first_cursor(self):
        m = StateMap({b"k": b"v"})
        m[b"x"] = b"1"
        first = m.snapshot_since(None)
        self.assertEqual(decode_full(first.data), {b"k": b"v", b"x": b"1"})
        self.assertEqual(decode_delta(m.snapshot_since(first.cursor).data), [])

    def test_any_other_cursor_gets_the_whole_map(self):
        m = StateMap()
        m[b"k"] = b"v"
        first = m.snapshot_since(None)
        second = m.snapshot_since(first.cursor)
        self.assertTrue(second.delta)
        # `first` is no longer the latest cursor.
        self.assertFalse(m.snapshot_since(first.cursor).delta)
        # An empty cursor, or one of another map, even at the same count, never follows.
        self.assertFalse(m.snapshot_since(b"").delta)
        one, other = StateMap(), StateMap()
        mine, foreign = one.snapshot_since(None).cursor, other.snapshot_since(None).cursor
        self.assertEqual(foreign[8:], mine[8:])
        self.assertFalse(one.snapshot_since(foreign).delta)
        # A restore starts the chain again.
        latest = m.snapshot_since(None).cursor
        m.restore(encode_full({}))
        again = m.snapshot_since(latest)
        self.assertFalse(again.delta)
        self.assertEqual(again.base_cursor, b"")
        # ... and so does replace().
        m.replace({b"r": b"1"})
        self.assertFalse(m.snapshot_since(again.cursor).delta)

    def test_a_whole_image_holds_every_change_made_before_it(self):
        m = StateMap()
        first = m.snapshot_since(None)
        m[b"a"] = b"1"
        # A whole image (asked since no cursor) takes the changes along: the delta after
        # it holds only what changed after it.
        whole = m.snapshot_since(None)
        self.assertEqual(decode_full(whole.data), {b"a": b"1"})
        self.assertEqual(decode_delta(m.snapshot_since(whole.cursor).data), [])
        self.assertFalse(m.snapshot_since(first.cursor).delta)

    def test_applied_changes_are_tracked_for_the_next_delta(self):
        m = StateMap()
        cursor = m.snapshot_since(None).cursor
        m.restore_delta(encode_delta([(b"x", b"1"), (b"y", None)]))
        delta = m.snapshot_since(cursor)
        self.assertEqual(decode_delta(delta.data), [(b"x", b"1"), (b"y", None)])

    def test_a_snapshot_is_consistent_while_a_writer_carries_on(self):
        m = StateMap()
        m._lock = YieldingLock()
        images = [m.snapshot_since(None)]
        # The writer waits for the first snapshot to be taken, and the snapshots go on
        # until it is done: at least one is taken while it runs.
        started = threading.Event()

        def write():
            started.set()
            for i in range(12000):
                m[b"k%05d" % (i % 1500)] = str(i).encode()
                if i % 7 == 0:
                    m.remove(b"k%05d" % ((i // 7) % 1500))
                if i % 11 == 0:
                    m.update(b"n", lambda v: str(int(v or b"0") + 1).encode())

        writer = threading.Thread(target=write)
        with FastSwitching():
            writer.start()
            started.wait()
            while writer.is_alive():
                images.append(m.snapshot_since(images[-1].cursor))
            writer.join()
        images.append(m.snapshot_since(images[-1].cursor))
        self.assertGreater(len(images), 3, "snapshots were taken while the writer ran")
        self.assertTrue(all(i.delta for i in images[1:]))
        self.assertEqual(m.get(b"n"), b"1091")
        # Replayed image by image, the copy goes through states the map was in (the
        # counter only grows) and ends as the map is.
        copy, counts = StateMap(), []
        for image in images:
            (copy.restore_delta if image.delta else copy.restore)(image.data)
            counts.append(int(copy.get(b"n", b"0")))
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(copy.read(), m.read())

    def test_update_is_atomic(self):
        m = StateMap()

        def bump():
            for _ in range(5000):
                m.update("n", lambda v: (v or 0) + 1)

        with FastSwitching():
            threads = [threading.Thread(target=bump) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(m["n"], 20000)

    def test_a_failed_update_and_none_values_change_nothing(self):
        m = StateMap()
        m["k"] = 1
        cursor = m.image_since(None).cursor

        def refuse(_value):
            raise PluginError(grpc.StatusCode.OUT_OF_RANGE, "no")

        with self.assertRaises(PluginError):
            m.update("k", refuse)
        with self.assertRaises(TypeError):
            m["k"] = None
        with self.assertRaises(TypeError):
            m.update("j", lambda v: None)
        self.assertEqual(m.read(), {"k": 1})
        image = m.image_since(cursor)
        self.assertTrue(image.delta)
        self.assertEqual(image.changes, [])

    def test_images_of_other_types_are_encoded_by_the_plugin(self):
        m = StateMap()
        m["b"] = 2
        m["a"] = 1
        full = m.image_since(None).encode(
            lambda entries: repr(sorted(entries.items())).encode(),
            lambda changes: self.fail("not a delta"),
        )
        self.assertEqual(full.data, b"[('a', 1), ('b', 2)]")
        self.assertFalse(full.delta)
        m["c"] = 3
        m.remove("a")
        image = m.image_since(full.cursor)
        self.assertEqual(image.changes, [("a", None), ("c", 3)])
        delta = image.encode(lambda entries: self.fail("not whole"), lambda c: repr(c).encode())
        self.assertEqual(delta, StateImage(b"[('a', None), ('c', 3)]", True, full.cursor, image.cursor))
        # In key order, whatever order they changed in.
        for i in reversed(range(12)):
            m[f"k{i:02}"] = i
        image = m.image_since(delta.cursor)
        self.assertEqual(image.changes, [(f"k{i:02}", i) for i in range(12)])


class FormatTest(unittest.TestCase):
    def test_round_trips(self):
        entries = {b"": b"", b"b": b"2", b"a": b"\x00" * 300, b"\xff\xfe": b"x"}
        data = encode_full(entries)
        self.assertEqual(data[:4], b"BTKV")
        self.assertEqual(decode_full(data), entries)
        self.assertEqual(list(decode_full(data)), sorted(entries))
        self.assertEqual(encode_full({}), b"BTKV" + bytes(8))
        changes = [(b"b", None), (b"a", b""), (b"c", b"3")]
        data = encode_delta(changes)
        self.assertEqual(decode_delta(data), sorted(changes))
        self.assertEqual(encode_delta([]), b"BTKD" + bytes(8))

    def test_writes_the_shared_vectors(self):
        # The same bytes the Rust SDK's codec writes (plugin-sdk/src/state_map/tests.rs).
        doc = json.loads((REPO / "proto" / "testdata" / "state-vectors.json").read_text())
        v = doc["state_map"]
        entries = {bytes.fromhex(e["key_hex"]): bytes.fromhex(e["value_hex"]) for e in v["entries"]}
        changes = [
            (bytes.fromhex(c["key_hex"]), None if c["value_hex"] is None else bytes.fromhex(c["value_hex"]))
            for c in v["changes"]
        ]
        self.assertIn(None, [value for _, value in changes], "the vector has a removal")
        self.assertEqual(encode_full(entries).hex(), v["full_hex"])
        self.assertEqual(decode_full(bytes.fromhex(v["full_hex"])), entries)
        self.assertEqual(encode_delta(changes).hex(), v["delta_hex"])
        self.assertEqual(decode_delta(bytes.fromhex(v["delta_hex"])), sorted(changes))
        # Through a map: its whole image, and the delta of the same changes.
        m = StateMap(entries)
        full = m.snapshot_since(None)
        self.assertEqual(full.data.hex(), v["full_hex"])
        m.apply(changes)
        self.assertEqual(m.snapshot_since(full.cursor).data.hex(), v["delta_hex"])

    def test_refuses_malformed_bytes_and_leaves_the_map_as_it_was(self):
        good = encode_full({b"x": b"1", b"y": b"22"})
        good_delta = encode_delta([(b"x", None), (b"y", b"2")])
        refused_full = [
            (b"NOPE" + good[4:], "magic"),
            (b"BT", "magic"),
            (good_delta, "magic"),
            (good + b"\x00", "1 unexpected bytes"),
            # The same key twice, and keys out of order.
            (good[:12] + good[12:22] * 2, "not greater"),
            (good[:12] + good[22:] + good[12:22], "not greater"),
        ]
        refused_full += [(good[:cut], "truncated") for cut in range(4, len(good))]
        bad_tag = bytearray(encode_delta([(b"x", None)]))
        bad_tag[-1] = 7
        refused_delta = [
            (good, "magic"),
            (bytes(bad_tag), "has tag 7"),
            (b"BTKD" + (2).to_bytes(8, "little") + b"\x01\0\0\0b\0" b"\x01\0\0\0a\0", "not greater"),
            (good_delta + b"\x00\x00", "2 unexpected bytes"),
        ]
        refused_delta += [(good_delta[:cut], "truncated") for cut in range(4, len(good_delta))]

        m = StateMap()
        m[b"keep"] = b"me"
        cursor = m.snapshot_since(None).cursor
        m[b"changed"] = b"1"
        for restore, cases in ((m.restore, refused_full), (m.restore_delta, refused_delta)):
            for bad, want in cases:
                with self.subTest(restore.__name__, bad=bad.hex()):
                    with self.assertRaises(PluginError) as caught:
                        restore(bad)
                    self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                    self.assertIn(want, caught.exception.message)
                    with self.assertRaises(DecodeError):
                        (decode_full if restore == m.restore else decode_delta)(bad)
        self.assertEqual(m.read(), {b"keep": b"me", b"changed": b"1"})
        # The chain goes on: the refusals did not reset or touch the tracking.
        delta = m.snapshot_since(cursor)
        self.assertTrue(delta.delta)
        self.assertEqual(decode_delta(delta.data), [(b"changed", b"1")])


if __name__ == "__main__":
    unittest.main()
