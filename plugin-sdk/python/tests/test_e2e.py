"""Runs counter.py as real processes, the way a baton host does."""

import os
import signal
import stat
import unittest
import zlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from baton_plugin import server
from baton_plugin._proto import pb
from baton_plugin.state import CHUNK_SIZE, chunks

from support import RUST_COUNTER, PluginProcess, copy, counter_process, load_counter

counter = load_counter()
EXIT_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0


class PluginTestCase(unittest.TestCase):
    """Starts plugin processes (killed at the end of each test) and calls them."""

    def start(self, name, rust=False):
        p = PluginProcess([str(RUST_COUNTER)], name) if rust else counter_process(name)
        self.addCleanup(p.close)
        self.assertEqual(p.read_handshake(), f"baton|1|unix|{p.socket}")
        return p

    def assertCode(self, code, call):
        """Runs `call` (a whole RPC, streams consumed) and checks it fails with `code`."""
        with self.assertRaises(grpc.RpcError) as caught:
            call()
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        return caught.exception.details()

    def invoke(self, p, method, payload, metadata=None):
        request = pb.InvokeRequest(method=method, payload=payload)
        return p.stub().Invoke(request, metadata=metadata or p.auth(), timeout=CALL_TIMEOUT).payload

    def snapshot(self, p, metadata=None, since=b""):
        request = pb.SnapshotRequest(since=since)
        stream = p.stub().Snapshot(request, metadata=metadata or p.auth(), timeout=CALL_TIMEOUT)
        return list(stream)

    def restore(self, p, cs, metadata=None):
        return p.stub().Restore(iter(cs), metadata=metadata or p.auth(), timeout=CALL_TIMEOUT)

    @staticmethod
    def state(cs):
        """The schema version and the data of a snapshot: what two snapshots of equal
        states share (a counter's cursors are its own, different in each snapshot)."""
        return cs[0].schema_version, b"".join(c.data for c in cs)


class CounterProcessTest(PluginTestCase):
    def test_handshake_token_snapshot_restore_and_shutdown(self):
        old = self.start("old")
        self.assertEqual(stat.S_IMODE(os.stat(old.socket).st_mode), 0o600)

        health = health_pb2_grpc.HealthStub(old.connect())
        answer = health.Check(
            health_pb2.HealthCheckRequest(service=server.SERVICE_NAME), timeout=CALL_TIMEOUT
        )
        self.assertEqual(answer.status, health_pb2.HealthCheckResponse.SERVING)

        no_token = (("x-other", "1"),)
        wrong_token = ((server.TOKEN_METADATA_KEY, old.token[:-1] + "!"),)
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        details = self.assertCode(unauthenticated, lambda: self.invoke(old, "incr", b"a", no_token))
        self.assertIn("missing x-baton-token", details)
        details = self.assertCode(unauthenticated, lambda: self.invoke(old, "incr", b"a", wrong_token))
        self.assertIn("wrong x-baton-token", details)
        two_tokens = ((server.TOKEN_METADATA_KEY, old.token[:-1] + "!"), *old.auth())
        details = self.assertCode(unauthenticated, lambda: self.invoke(old, "incr", b"a", two_tokens))
        self.assertIn("more than one x-baton-token", details)
        both_right = (*old.auth(), *old.auth())
        self.assertCode(unauthenticated, lambda: self.invoke(old, "incr", b"a", both_right))
        self.assertCode(unauthenticated, lambda: self.snapshot(old, no_token))
        self.assertCode(unauthenticated, lambda: self.restore(old, chunks(1, b""), no_token))
        self.assertEqual(self.invoke(old, "get", b"a"), b"0", "a refused call changed nothing")

        d = old.stub().Describe(pb.DescribeRequest(), metadata=old.auth(), timeout=CALL_TIMEOUT)
        self.assertEqual((d.protocol_version, d.state_schema_version), (1, 1))
        self.assertTrue(d.incremental_snapshots)
        self.assertEqual([m.name for m in d.methods], ["incr", "get"])

        self.assertEqual([self.invoke(old, "incr", b"a") for _ in range(2)], [b"1", b"2"])
        self.assertEqual(self.invoke(old, "incr", b"b"), b"1")
        details = self.assertCode(
            grpc.StatusCode.INVALID_ARGUMENT, lambda: self.invoke(old, "incr", b"")
        )
        self.assertEqual(details, "the payload must be a counter name, got nothing")
        details = self.assertCode(grpc.StatusCode.UNIMPLEMENTED, lambda: self.invoke(old, "nope", b"a"))
        self.assertIn("nope", details)

        taken = self.snapshot(old)
        self.assertEqual(len(taken), 1)
        (c,) = taken
        self.assertEqual((c.schema_version, c.seq, c.last), (1, 0, True))
        self.assertEqual(c.data, counter.encode({"a": 2, "b": 1}))
        self.assertEqual(c.checksum, zlib.crc32(c.data))
        self.assertEqual((c.delta, c.base_cursor, len(c.cursor)), (False, b"", 16))

        new = self.start("new")
        self.assertEqual(self.restore(new, taken).bytes_restored, len(c.data))
        self.assertEqual(self.state(self.snapshot(new)), self.state(taken))
        self.assertEqual(self.invoke(new, "incr", b"a"), b"3")

        reply = old.stub().Shutdown(pb.ShutdownRequest(), metadata=old.auth(), timeout=CALL_TIMEOUT)
        self.assertIsInstance(reply, pb.ShutdownResponse)
        self.assertEqual(old.proc.wait(timeout=EXIT_TIMEOUT), 0, old.stderr())
        self.assertFalse(os.path.exists(old.socket))
        self.assertEqual(old.proc.stdout.read(), b"", "stdout carries the handshake line only")

    def test_refused_restores_leave_the_state_alone(self):
        p = self.start("refusals")
        self.invoke(p, "incr", b"kept")
        before = self.snapshot(p)
        state = counter.encode({"x": 1})
        (good,) = chunks(1, state)

        for name, stream, code in [
            ("bad checksum", [copy(good, checksum=good.checksum ^ 1)], grpc.StatusCode.DATA_LOSS),
            ("no last chunk", [copy(good, last=False)], grpc.StatusCode.DATA_LOSS),
            ("out of order", [copy(good, seq=1)], grpc.StatusCode.DATA_LOSS),
            ("after last", [good, copy(good, seq=1)], grpc.StatusCode.DATA_LOSS),
            ("other schema", list(chunks(2, state)), grpc.StatusCode.FAILED_PRECONDITION),
            ("malformed state", list(chunks(1, b"BTNC")), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with self.subTest(name):
                self.assertCode(code, lambda: self.restore(p, stream))
        self.assertEqual(self.state(self.snapshot(p)), self.state(before))

    def test_deltas_move_the_counts_between_processes(self):
        old, new = self.start("old"), self.start("new")
        self.invoke(old, "incr", b"a")
        self.invoke(old, "incr", b"kept")
        full = self.snapshot(old)
        self.restore(new, full)
        for key in (b"b", b"a", b"a"):
            self.invoke(old, "incr", key)
        delta = self.snapshot(old, since=full[-1].cursor)
        (c,) = delta
        self.assertEqual((c.delta, c.base_cursor, len(c.cursor)), (True, full[-1].cursor, 16))
        self.assertEqual(c.data, counter.encode({"a": 3, "b": 1}))

        # A delta whose base is not what `new` restored: refused, nothing applied.
        stray = [copy(c, base_cursor=c.cursor)]
        details = self.assertCode(grpc.StatusCode.DATA_LOSS, lambda: self.restore(new, stray))
        self.assertIn("a delta out of order, or one lost before it", details)
        self.assertEqual(self.invoke(new, "get", b"a"), b"1")

        self.assertEqual(self.restore(new, delta).bytes_restored, len(c.data))
        self.assertEqual(self.state(self.snapshot(new)), self.state(self.snapshot(old)))
        self.assertEqual(self.invoke(new, "get", b"kept"), b"1")
        self.assertEqual(self.invoke(new, "incr", b"b"), b"2")

    def test_multi_chunk_state_round_trips_and_sigterm_stops_cleanly(self):
        p = self.start("big")
        counts = {f"counter-{i:06d}": i - 50000 for i in range(100000)}
        state = counter.encode(counts)
        self.assertGreater(len(state), 2 * CHUNK_SIZE)
        self.assertEqual(self.restore(p, chunks(1, state)).bytes_restored, len(state))
        taken = self.snapshot(p)
        self.assertEqual([(c.seq, c.last) for c in taken], [(0, False), (1, False), (2, True)])
        self.assertEqual(b"".join(c.data for c in taken), state)

        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.proc.wait(timeout=EXIT_TIMEOUT), 0, p.stderr())
        self.assertFalse(os.path.exists(p.socket))


@unittest.skipUnless(RUST_COUNTER.is_file(), f"the Rust counter is not built at {RUST_COUNTER}")
class HandoverWithRustCounterTest(PluginTestCase):
    """State moves between the Rust and the Python counter, both ways, unchanged."""

    def test_state_moves_both_ways(self):
        rust, python = self.start("rust", rust=True), self.start("python")
        for key in [b"b", b"a", "é".encode(), b"b", b"Z"]:
            self.assertEqual(self.invoke(rust, "incr", key), self.invoke(python, "incr", key))
        from_rust, from_python = self.snapshot(rust), self.snapshot(python)
        self.assertEqual(self.state(from_python), self.state(from_rust), "equal counts, equal snapshot bytes")

        rust2, python2 = self.start("rust2", rust=True), self.start("python2")
        self.restore(python2, from_rust)
        self.restore(rust2, from_python)
        self.assertEqual(self.state(self.snapshot(python2)), self.state(from_rust))
        self.assertEqual(self.state(self.snapshot(rust2)), self.state(from_python))
        self.assertEqual(self.invoke(python2, "incr", b"b"), b"3")
        self.assertEqual(self.invoke(rust2, "get", "é".encode()), b"1")

    def test_deltas_move_both_ways(self):
        rust, python = self.start("rust", rust=True), self.start("python")
        d = rust.stub().Describe(pb.DescribeRequest(), metadata=rust.auth(), timeout=CALL_TIMEOUT)
        if not d.incremental_snapshots:
            self.skipTest("this build of the Rust counter does not declare incremental snapshots")
        for source, target in ((rust, python), (python, rust)):
            with self.subTest(source="rust" if source is rust else "python"):
                self.invoke(source, "incr", b"a")
                full = self.snapshot(source)
                self.restore(target, full)
                for key in (b"b", b"a", "é".encode()):
                    self.invoke(source, "incr", key)
                delta = self.snapshot(source, since=full[-1].cursor)
                self.assertTrue(delta[0].delta)
                self.restore(target, delta)
                self.assertEqual(self.state(self.snapshot(target)), self.state(self.snapshot(source)))


if __name__ == "__main__":
    unittest.main()
