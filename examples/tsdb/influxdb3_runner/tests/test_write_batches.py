"""The rows `process_writes` is handed: the same dicts whether tsdb sent them as
messages, JSON or a pickle, OnWrite's answer telling tsdb that JSON and pickle are read
here, and a pickle that names anything but data refused. (tsdb's own pickles are read
with this runner's reader in tsdb's tests: src/table_batches/pickle.rs.)"""

import os
import pickle
import types
import unittest
from pathlib import Path

import grpc

from influxdb3_runner._proto import pb
from influxdb3_runner.service import TriggerService, write_batches

ROWS = [{"host": "a", "f": 2.0, "n": -3, "u": 2**64 - 1, "s": "x\n", "b": True, "time": 5}]


def as_messages() -> "pb.WriteBatch":
    batch = pb.WriteBatch(trigger="t", database="db")
    point = batch.tables.add(table="cpu").points.add(time_ns=5)
    point.tags["host"] = "a"
    point.fields["f"].float = 2.0
    point.fields["n"].integer = -3
    point.fields["u"].unsigned = 2**64 - 1
    point.fields["s"].text = "x\n"
    point.fields["b"].boolean = True
    return batch


def as_json() -> "pb.WriteBatch":
    # As tsdb's table_batches.rs writes them.
    text = '[{"table_name":"cpu","rows":[{"host":"a","f":2.0,"n":-3,"u":18446744073709551615,"s":"x\\n","b":true,"time":5}]}]'
    return pb.WriteBatch(trigger="t", database="db", table_batches_json=text.encode())


def as_pickle(rows=None) -> "pb.WriteBatch":
    data = pickle.dumps([{"table_name": "cpu", "rows": rows or ROWS}], protocol=4)
    return pb.WriteBatch(trigger="t", database="db", table_batches_pickle=data)


def types_of(batches):
    return [[{k: type(v) for k, v in row.items()} for row in t["rows"]] for t in batches]


class Rows(unittest.TestCase):
    def test_every_form_gives_the_same_dicts_of_the_same_types(self):
        want = [{"table_name": "cpu", "rows": ROWS}]
        for batch in (as_messages(), as_json(), as_pickle()):
            got, _form = write_batches(batch)
            self.assertEqual(got, want)
            self.assertEqual(types_of(got), types_of(want))

    def test_on_write_says_it_reads_json_and_pickle_and_which_form_came(self):
        seen = []
        module = types.SimpleNamespace(process_writes=lambda local, batches, args: seen.append(batches))
        host = types.SimpleNamespace(channel=grpc.insecure_channel("localhost:1"))
        service = TriggerService(module, Path("sink.py"), lambda: host)
        forms = (
            (as_messages(), "1 row(s) in 1 table(s)"),
            (as_json(), "1 row(s) in 1 table(s) (JSON)"),
            (as_pickle(), "1 row(s) in 1 table(s) (pickle)"),
        )
        for batch, says in forms:
            answer = service.OnWrite(batch, context=None)
            self.assertTrue(answer.reads_table_batches_json)
            self.assertTrue(answer.reads_table_batches_pickle)
            self.assertEqual(answer.message, f"process_writes: {says}")
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[0], seen[2])
        host.channel.close()

    def test_a_pickle_naming_a_callable_is_refused_before_anything_is_built(self):
        # os.system pickles as a global and a call would need it: neither is data.
        for evil in ([os.system], types.SimpleNamespace(x=1)):
            batch = pb.WriteBatch(trigger="t", table_batches_pickle=pickle.dumps(evil, protocol=4))
            with self.assertRaisesRegex(pickle.UnpicklingError, "data only"):
                write_batches(batch)


if __name__ == "__main__":
    unittest.main()
