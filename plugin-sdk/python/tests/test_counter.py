import json
import sys
import threading
import unittest

import grpc

from baton_plugin import PluginError

from support import REPO, YieldingLock, load_counter

counter = load_counter()

# {"a": 1, "b": -2} by hand from example-plugins/counter/STATE.md: magic, count (u32 LE),
# then per entry sorted by key bytes: key length (u32 LE), key, value (i64 LE).
A1_BMINUS2 = (
    b"BTNC" b"\x02\x00\x00\x00"
    b"\x01\x00\x00\x00" b"a" b"\x01\x00\x00\x00\x00\x00\x00\x00"
    b"\x01\x00\x00\x00" b"b" b"\xfe\xff\xff\xff\xff\xff\xff\xff"
)


class StateFormatTest(unittest.TestCase):
    def test_encodes_exactly_as_state_md_says(self):
        self.assertEqual(counter.encode({"b": -2, "a": 1}), A1_BMINUS2)
        self.assertEqual(counter.encode({}), b"BTNC\x00\x00\x00\x00")

    def test_writes_the_shared_counter_state(self):
        # The same bytes the Rust, Go and TypeScript counters' tests check.
        doc = json.loads((REPO / "proto" / "testdata" / "state-vectors.json").read_text())
        (entry,) = [s for s in doc["states"] if s["name"] == "counter: apples=3, pears=2"]
        self.assertEqual(counter.encode({"pears": 2, "apples": 3}), bytes.fromhex(entry["state"]["hex"]))

    def test_sorts_by_key_bytes(self):
        # "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9), whatever order they came in.
        encoded = counter.encode({"é": 3, "a": 2, "Z": 1})
        self.assertLess(encoded.index(b"Z"), encoded.index(b"a"))
        self.assertLess(encoded.index(b"a"), encoded.index("é".encode()))

    def test_round_trips(self):
        counts = {"a": 1, "ünïcode": -7, "": (1 << 63) - 1, "min": -(1 << 63)}
        data = counter.encode(counts)
        self.assertEqual(counter.decode(data), counts)
        self.assertEqual(counter.encode(counter.decode(data)), data)
        self.assertEqual(counter.decode(A1_BMINUS2), {"a": 1, "b": -2})

    def test_refuses_malformed_states(self):
        good = counter.encode({"key": 3})
        with self.assertRaisesRegex(counter.DecodeError, "magic"):
            counter.decode(b"XXXX\0\0\0\0")
        for cut in range(len(good)):
            with self.subTest(cut=cut), self.assertRaisesRegex(counter.DecodeError, "truncated"):
                counter.decode(good[:cut])
        with self.assertRaisesRegex(counter.DecodeError, "1 unexpected bytes"):
            counter.decode(good + b"\0")
        twice = good[:4] + b"\x02\x00\x00\x00" + good[8:] + good[8:]
        with self.assertRaisesRegex(counter.DecodeError, "twice"):
            counter.decode(twice)
        bad_utf8 = bytearray(good)
        bad_utf8[12] = 0xFF
        with self.assertRaisesRegex(counter.DecodeError, "at byte 12 is not UTF-8"):
            counter.decode(bytes(bad_utf8))


class CounterPluginTest(unittest.TestCase):
    def setUp(self):
        self.c = counter.Counter()

    def assertStatus(self, code, fn, *args):
        with self.assertRaises(PluginError) as caught:
            fn(*args)
        self.assertEqual(caught.exception.code, code)
        return caught.exception.message

    def test_incr_and_get(self):
        self.assertEqual(self.c.invoke("get", b"x"), b"0")
        self.assertEqual(self.c.invoke("incr", b"x"), b"1")
        self.assertEqual(self.c.invoke("incr", b"x"), b"2")
        self.assertEqual(self.c.invoke("get", b"x"), b"2")

    def test_refuses_bad_calls(self):
        message = self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, self.c.invoke, "incr", b"")
        self.assertEqual(message, "the payload must be a counter name, got nothing")
        self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, self.c.invoke, "get", b"\xff")
        message = self.assertStatus(grpc.StatusCode.UNIMPLEMENTED, self.c.invoke, "decr", b"x")
        self.assertIn("decr", message)

    def test_refused_restores_leave_the_state_alone(self):
        self.c.invoke("incr", b"kept")
        before = self.c.snapshot()
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, self.c.restore, 2, A1_BMINUS2)
        self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, self.c.restore, 1, b"BTNC")
        self.assertEqual(self.c.snapshot(), before)
        self.c.restore(1, A1_BMINUS2)
        self.assertEqual(self.c.snapshot(), A1_BMINUS2)
        self.assertEqual(self.c.invoke("incr", b"b"), b"-1")

    def test_refuses_to_overflow_i64(self):
        self.c.restore(1, counter.encode({"big": (1 << 63) - 1}))
        cursor = self.c.snapshot_since(None).cursor
        self.assertStatus(grpc.StatusCode.OUT_OF_RANGE, self.c.invoke, "incr", b"big")
        self.assertEqual(self.c.invoke("get", b"big"), str((1 << 63) - 1).encode())
        self.assertEqual(self.c.snapshot_since(cursor).data, counter.encode({}), "nothing changed")


class CounterDeltaTest(unittest.TestCase):
    """Incremental snapshots: a delta is a counter state of the counters changed since the
    cursor (STATE.md, "Deltas")."""

    def setUp(self):
        self.c = counter.Counter()

    def replay(self, images):
        copy = counter.Counter()
        for image in images:
            if image.delta:
                copy.restore_delta(1, image.data)
            else:
                copy.restore(1, image.data)
        return copy

    def test_declares_incremental_snapshots(self):
        self.assertTrue(self.c.describe().incremental)

    def test_a_delta_lists_the_counters_changed_since_the_cursor(self):
        for key in (b"a", b"b", b"b"):
            self.c.invoke("incr", key)
        full = self.c.snapshot_since(None)
        self.assertFalse(full.delta)
        self.assertEqual(full.data, counter.encode({"a": 1, "b": 2}))
        self.assertEqual(len(full.cursor), 16)
        for key in (b"z", b"b", "é".encode(), b"c"):
            self.c.invoke("incr", key)
        self.c.invoke("get", b"a")
        delta = self.c.snapshot_since(full.cursor)
        self.assertTrue(delta.delta)
        self.assertEqual(delta.base_cursor, full.cursor)
        self.assertEqual(delta.data, counter.encode({"b": 3, "c": 1, "z": 1, "é": 1}))
        empty = self.c.snapshot_since(delta.cursor)
        self.assertEqual((empty.delta, empty.data), (True, counter.encode({})))
        # Not the latest cursor: the whole state.
        again = self.c.snapshot_since(delta.cursor)
        self.assertEqual((again.delta, again.data), (False, self.c.snapshot()))
        self.assertEqual(self.replay([full, delta, empty]).snapshot(), self.c.snapshot())

    def test_writes_and_applies_the_shared_counter_delta(self):
        # The same bytes the Rust counter's tests check.
        doc = json.loads((REPO / "proto" / "testdata" / "state-vectors.json").read_text())
        v = doc["counter_delta"]
        self.c.restore(1, bytes.fromhex(v["base_hex"]))
        cursor = self.c.snapshot_since(None).cursor
        for key, count in v["changes"].items():
            for _ in range(count - int(self.c.invoke("get", key.encode()))):
                self.c.invoke("incr", key.encode())
        delta = self.c.snapshot_since(cursor)
        self.assertEqual(delta.data.hex(), v["delta_hex"])
        self.assertEqual(counter.encode_delta(sorted(v["changes"].items())).hex(), v["delta_hex"])
        self.assertEqual(self.c.snapshot().hex(), v["result_hex"])

        other = counter.Counter()
        other.restore(1, bytes.fromhex(v["base_hex"]))
        other.restore_delta(1, bytes.fromhex(v["delta_hex"]))
        self.assertEqual(other.snapshot().hex(), v["result_hex"])

    def test_refused_deltas_change_nothing(self):
        self.c.restore(1, A1_BMINUS2)
        cursor = self.c.snapshot_since(None).cursor
        good = counter.encode({"a": 5})
        for schema, delta, code in [
            (2, good, grpc.StatusCode.FAILED_PRECONDITION),
            (1, good[:-1], grpc.StatusCode.INVALID_ARGUMENT),
            (1, good + good[8:], grpc.StatusCode.INVALID_ARGUMENT),
            (1, b"BTKD" + bytes(8), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with self.subTest(delta=delta.hex()), self.assertRaises(PluginError) as caught:
                self.c.restore_delta(schema, delta)
            self.assertEqual(caught.exception.code, code)
        self.assertEqual(self.c.snapshot(), A1_BMINUS2)
        self.assertEqual(self.c.snapshot_since(cursor).data, counter.encode({}))
        self.c.restore_delta(1, good)
        self.assertEqual(self.c.snapshot(), counter.encode({"a": 5, "b": -2}))

    def test_snapshots_while_counters_go_up_replay_to_the_same_counts(self):
        images = [self.c.snapshot_since(None)]

        def count():
            for i in range(3000):
                self.c.invoke("incr", f"k{i % 50}".encode())

        # Threads switch as often as they can, and at every release of the map's lock,
        # so that an increment that is not atomic loses counts.
        self.c._counts._lock = YieldingLock()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=count) for _ in range(2)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                images.append(self.c.snapshot_since(images[-1].cursor))
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        images.append(self.c.snapshot_since(images[-1].cursor))
        self.assertTrue(all(i.delta for i in images[1:]))
        self.assertEqual(self.replay(images).snapshot(), self.c.snapshot())
        self.assertEqual(counter.decode(self.c.snapshot()), {f"k{i}": 120 for i in range(50)})


if __name__ == "__main__":
    unittest.main()
