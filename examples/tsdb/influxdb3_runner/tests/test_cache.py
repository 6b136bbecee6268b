"""The cache's scopes, defaults and time to live, on a clock the test moves."""

import unittest

from influxdb3_runner.cache import CacheStore, PluginCache


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Cache(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = CacheStore(clock=self.clock)
        self.a = PluginCache(self.store, "a")
        self.b = PluginCache(self.store, "b")

    def test_scopes_are_per_trigger_unless_global(self):
        self.a.put("k", "a's")
        self.a.put("g", "shared", use_global=True)
        self.assertEqual(self.b.get("k"), None)
        self.assertEqual(self.b.get("g", use_global=True), "shared")
        self.assertEqual(self.a.get("g"), None)

    def test_values_are_kept_by_reference(self):
        value = []
        self.a.put("list", value)
        self.a.get("list").append(1)
        self.assertIs(self.a.get("list"), value)
        self.assertEqual(value, [1])

    def test_ttl_ends_an_entry_and_get_gives_the_default(self):
        self.a.put("k", 1, ttl=2)
        self.clock.now += 1.999
        self.assertEqual(self.a.get("k", default="gone"), 1)
        self.clock.now += 0.001
        self.assertEqual(self.a.get("k", default="gone"), "gone")
        self.a.put("d", 1, ttl=1)
        self.clock.now += 5
        self.assertFalse(self.a.delete("d"), "an expired entry is not there to delete")

    def test_delete_says_whether_it_was_there(self):
        self.a.put("k", 1)
        self.assertTrue(self.a.delete("k"))
        self.assertFalse(self.a.delete("k"))

    def test_bad_keys_and_ttls_are_named(self):
        with self.assertRaisesRegex(TypeError, "cache key 5 is a int, not a str"):
            self.a.put(5, 1)
        with self.assertRaisesRegex(ValueError, "cache ttl for 'k': -1 is not a positive number"):
            self.a.put("k", 1, ttl=-1)


if __name__ == "__main__":
    unittest.main()
