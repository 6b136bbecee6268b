"""`influxdb3_local.query` in a plugin test: the query line the runner says, each
Python type rebuilt from tsdb's answer line, tsdb's error as QueryError, bad
arguments refused before anything is said; and, through `python -m influxdb3_runner
--test`, a conversation that the plugin's prints and stdin reads cannot break into."""

import io
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
from pathlib import Path

from influxdb3_runner.local import QueryError
from influxdb3_runner.plugin_test import run
from influxdb3_runner.plugin_test_queries import Channel

RUNNER = Path(__file__).resolve().parent.parent

PLUGIN = textwrap.dedent(
    """
    import os, sys

    def process_writes(influxdb3_local, table_batches, args=None):
        if args and args.get("misbehave"):
            print("a print")
            os.write(1, b"written on fd 1\\n")
            influxdb3_local.info("stdin holds", repr(sys.stdin.read()))
        rows = influxdb3_local.query(
            "SELECT * FROM cpu WHERE host = $host AND v > $v",
            {"$host": "a", "v": float("nan"), "big": 2**63 - 1, "no": None, "yes": True},
        )
        for row in rows:
            influxdb3_local.info(" ".join(f"{k}={v!r}:{type(v).__name__}" for k, v in row.items()))
        influxdb3_local.write(LineBuilder("seen").int64_field("rows", len(rows)))
        influxdb3_local.query("SELECT 1", database="other")
    """
)

ROWS = {
    "rows": {
        "names": ["time", "host", "big", "f", "inf", "ok", "note"],
        "rows": [[1700000000000000000, "a", 18446744073709551615, 2.0, {"float": "-inf"}, False, None]],
    }
}


class QueryLines(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.plugin = Path(self.dir.name) / "p.py"
        self.plugin.write_text(PLUGIN)

    def tearDown(self):
        self.dir.cleanup()

    def request(self):
        return {"protocol": 2, "plugin": str(self.plugin), "entry": "process_writes", "database": "db", "trigger": "t", "table_batches": []}

    def test_a_request_of_another_protocol_is_answered_with_an_error_naming_both(self):
        old = {key: value for key, value in self.request().items() if key != "protocol"}
        done = subprocess.run(
            [sys.executable, "-m", "influxdb3_runner", "--test"],
            cwd=RUNNER,
            input=json.dumps(old).encode() + b"\n",
            capture_output=True,
            timeout=30,
        )
        answer = json.loads(done.stdout)["answer"]
        self.assertEqual(answer["log_lines"], [])
        self.assertTrue(
            answer["errors"][0].startswith("this runner speaks plugin-test protocol 2, tsdb asked for 1: "),
            answer,
        )

    def test_the_query_goes_out_typed_and_the_rows_come_back_typed(self):
        to_tsdb = io.BytesIO()
        replies = json.dumps(ROWS) + "\n" + json.dumps({"error": "database \"other\" not found"}) + "\n"
        answer = run(self.request(), Channel(to_tsdb, io.BytesIO(replies.encode())))
        said = [json.loads(line) for line in to_tsdb.getvalue().splitlines()]
        self.assertEqual(
            said,
            [
                {
                    "query": {
                        "sql": "SELECT * FROM cpu WHERE host = $host AND v > $v",
                        "database": "db",
                        "args": {"host": "a", "v": {"float": "nan"}, "big": 2**63 - 1, "no": None, "yes": True},
                    }
                },
                {"query": {"sql": "SELECT 1", "database": "other", "args": {}}},
            ],
        )
        self.assertEqual(
            answer["log_lines"][0],
            "INFO: time=1700000000000000000:int host='a':str big=18446744073709551615:int f=2.0:float "
            "inf=-inf:float ok=False:bool note=None:NoneType",
        )
        # tsdb's refusal is the plugin's QueryError; what came before it is kept.
        self.assertEqual(len(answer["errors"]), 1, answer)
        self.assertTrue(
            answer["errors"][0].startswith('process_writes raised QueryError: database "other" not found (p.py:'),
            answer["errors"],
        )

    def test_without_tsdb_a_query_raises(self):
        answer = run(self.request())
        self.assertTrue(answer["errors"][0].startswith("process_writes raised QueryError: query: this plugin test"), answer)

    def test_bad_arguments_are_refused_before_anything_is_said(self):
        from influxdb3_runner.cache import CacheStore, PluginCache
        from influxdb3_runner.plugin_test import TestLocal

        to_tsdb = io.BytesIO()
        answer = {"log_lines": [], "database_writes": {}, "errors": []}
        local = TestLocal("db", "t", PluginCache(CacheStore(), "t"), answer, Channel(to_tsdb, io.BytesIO()))
        with self.assertRaisesRegex(TypeError, r"\$x is a list"):
            local.query("SELECT $x", {"x": [1]})
        with self.assertRaisesRegex(ValueError, r"\$x = 9223372036854775808 does not fit"):
            local.query("SELECT $x", {"x": 2**63})
        with self.assertRaisesRegex(TypeError, "not a str"):
            local.query(b"SELECT 1")
        self.assertEqual(to_tsdb.getvalue(), b"")
        # No answer (tsdb gone): an error, not a hang.
        with self.assertRaisesRegex(QueryError, "tsdb gave no answer"):
            local.query("SELECT 1")

    def test_the_runner_keeps_the_conversation_to_itself(self):
        """The plugin prints, writes on fd 1 and reads stdin; tsdb's side sees only
        the query and the answer, and the plugin reads nothing of tsdb's lines."""
        with subprocess.Popen(
            [sys.executable, "-m", "influxdb3_runner", "--test"],
            cwd=RUNNER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as child:
            # A conversation gone wrong must fail the test, not hang it.
            watchdog = threading.Timer(30, child.kill)
            watchdog.start()
            try:
                request = {**self.request(), "args": {"misbehave": "yes"}}
                child.stdin.write(json.dumps(request).encode() + b"\n")
                child.stdin.flush()
                first = json.loads(child.stdout.readline())
                self.assertEqual(first["query"]["sql"], "SELECT * FROM cpu WHERE host = $host AND v > $v")
                child.stdin.write(json.dumps(ROWS).encode() + b"\n")
                child.stdin.flush()
                second = json.loads(child.stdout.readline())
                self.assertEqual(second["query"]["database"], "other")
                child.stdin.write(b'{"rows": {"names": ["1"], "rows": [[1]]}}\n')
                child.stdin.close()
                last = json.loads(child.stdout.readline())
                self.assertEqual(child.stdout.read(), b"")
                stderr = child.stderr.read().decode()
            finally:
                watchdog.cancel()
                child.kill()
        self.assertEqual(
            last["answer"]["log_lines"][:2],
            [
                "INFO: stdin holds ''",
                "INFO: time=1700000000000000000:int host='a':str big=18446744073709551615:int f=2.0:float "
                "inf=-inf:float ok=False:bool note=None:NoneType",
            ],
        )
        self.assertEqual(last["answer"]["database_writes"], {"db": ["seen rows=1i"]})
        self.assertEqual(last["answer"]["errors"], [])
        self.assertIn("a print", stderr)
        self.assertIn("written on fd 1", stderr)


if __name__ == "__main__":
    unittest.main()
