"""The plugin test's answer: log lines, writes collected and not sent, errors with the
plugin's line, a missing module with the request that installs it, the cache carried."""

import tempfile
import textwrap
import unittest
from pathlib import Path

from influxdb3_runner.errors import install_hint
from influxdb3_runner.plugin_test import run

PLUGIN = textwrap.dedent(
    """
    def process_writes(influxdb3_local, table_batches, args=None):
        n = influxdb3_local.cache.get("n", default=0) + 1
        influxdb3_local.cache.put("n", n)
        influxdb3_local.info("call", n, args)
        influxdb3_local.write(LineBuilder("out").int64_field("n", n))
        if args and args.get("raise"):
            raise ValueError("no")
    """
)


class PluginTestAnswer(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.plugin = Path(self.dir.name) / "p.py"
        self.plugin.write_text(PLUGIN)

    def tearDown(self):
        self.dir.cleanup()

    def request(self, **extra):
        base = {"plugin": str(self.plugin), "entry": "process_writes", "database": "db", "trigger": "t", "table_batches": []}
        base.update(extra)
        return base

    def test_writes_are_answered_and_the_cache_goes_out_and_back(self):
        first = run(self.request())
        self.assertEqual(first["log_lines"], ["INFO: call 1 None"])
        self.assertEqual(first["database_writes"], {"db": ["out n=1i"]})
        self.assertEqual(first["errors"], [])
        second = run(self.request(cache=first["cache"]))
        self.assertEqual(second["database_writes"], {"db": ["out n=2i"]})

    def test_a_raise_drops_the_held_writes_and_names_the_line(self):
        answer = run(self.request(args={"raise": "1"}))
        self.assertEqual(answer["database_writes"], {})
        self.assertEqual(answer["errors"], ["process_writes raised ValueError: no (p.py:8)"])

    def test_a_missing_module_names_the_request_that_installs_it(self):
        try:
            import not_here.sub  # noqa: F401
        except ModuleNotFoundError as e:
            hint = install_hint(e)
        self.assertEqual(
            hint,
            ' — install it with POST /api/v3/configure/plugin_environment/install_packages {"packages": ["not_here"]}',
        )


if __name__ == "__main__":
    unittest.main()
