import json
import unittest

import grpc

from baton_plugin import PluginError

from support import REPO, load_counter

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
        self.assertStatus(grpc.StatusCode.OUT_OF_RANGE, self.c.invoke, "incr", b"big")


if __name__ == "__main__":
    unittest.main()
