"""The cache carried to another process: pickled entry by entry, deadlines kept as
wall-clock moments, a value that cannot be pickled named and left out, the rest kept."""

import threading
import unittest

from influxdb3_runner import cache_state
from influxdb3_runner.cache import CacheStore, PluginCache


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class Point:
    """A plugin's own class, as a value: pickled by reference to its module."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


class Moved(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.old = CacheStore(clock=self.clock)
        self.new = CacheStore(clock=self.clock)
        self.warnings = []

    def warn(self, message, scope):
        self.warnings.append((message, scope))

    def move(self):
        state = cache_state.dump(self.old, self.warn)
        return cache_state.load(self.new, cache_state.SCHEMA_VERSION, state, self.warn)

    def test_both_scopes_and_live_objects_move(self):
        a, b = PluginCache(self.old, "a"), PluginCache(self.old, "b")
        a.put("series", {"cpu,host=a": [1.5, 2.5]})
        b.put("series", "b's own")
        a.put("point", Point(3), use_global=True)
        self.assertEqual(self.move(), 3)
        a, b = PluginCache(self.new, "a"), PluginCache(self.new, "b")
        self.assertEqual(a.get("series"), {"cpu,host=a": [1.5, 2.5]})
        self.assertEqual(b.get("series"), "b's own")
        self.assertEqual(b.get("point", use_global=True), Point(3))
        self.assertIsNone(a.get("point"), "a global entry stays global")
        self.assertEqual(self.warnings, [])

    def test_a_ttl_ends_at_the_same_moment_after_the_move(self):
        a = PluginCache(self.old, "a")
        a.put("k", "v", ttl=10)
        self.clock.now += 4  # the reload takes 4 s
        self.move()
        moved = PluginCache(self.new, "a")
        self.clock.now += 5.999
        self.assertEqual(moved.get("k"), "v")
        self.clock.now += 0.001
        self.assertEqual(moved.get("k", default="gone"), "gone", "10 s after the put, not after the move")

    def test_an_entry_expired_by_the_time_it_lands_is_not_restored(self):
        PluginCache(self.old, "a").put("k", "v", ttl=2)
        state = cache_state.dump(self.old, self.warn)
        self.clock.now += 3
        self.assertEqual(cache_state.load(self.new, cache_state.SCHEMA_VERSION, state, self.warn), 0)

    def test_an_unpicklable_value_is_named_and_left_out_the_rest_kept(self):
        a = PluginCache(self.old, "a")
        a.put("lock", threading.Lock())
        a.put("gen", (i for i in range(3)), use_global=True)
        a.put("count", 7)
        self.assertEqual(self.move(), 1)
        self.assertEqual(PluginCache(self.new, "a").get("count"), 7)
        self.assertEqual(len(self.warnings), 2, self.warnings)
        texts = " | ".join(m for m, _ in self.warnings)
        self.assertIn("key 'lock' in the scope of trigger 'a' holds a lock, which cannot be pickled", texts)
        self.assertIn("key 'gen' in the global scope holds a generator", texts)

    def test_an_unpicklable_value_is_named_once_until_put_again(self):
        a = PluginCache(self.old, "a")
        a.put("lock", threading.Lock())
        for _ in range(3):  # checkpoints, one after another
            cache_state.dump(self.old, self.warn)
        self.assertEqual(len(self.warnings), 1)
        a.put("lock", threading.Lock())
        cache_state.dump(self.old, self.warn)
        self.assertEqual(len(self.warnings), 2)

    def test_a_value_whose_class_is_gone_is_named_and_dropped(self):
        PluginCache(self.old, "a").put("p", Point(1))
        PluginCache(self.old, "a").put("n", 1)
        state = cache_state.dump(self.old, self.warn)
        saved = globals().pop("Point")
        try:
            self.assertEqual(cache_state.load(self.new, cache_state.SCHEMA_VERSION, state, self.warn), 1)
        finally:
            globals()["Point"] = saved
        self.assertIn("key 'p' in the scope of trigger 'a' does not unpickle", self.warnings[0][0])

    def test_another_format_is_refused_and_the_cache_kept(self):
        PluginCache(self.new, "a").put("k", 1)
        with self.assertRaisesRegex(cache_state.StateError, "format 2; this runner reads 1"):
            cache_state.load(self.new, 2, b"", self.warn)
        with self.assertRaisesRegex(cache_state.StateError, "does not read"):
            cache_state.load(self.new, cache_state.SCHEMA_VERSION, b"not a pickle", self.warn)
        self.assertEqual(PluginCache(self.new, "a").get("k"), 1)


if __name__ == "__main__":
    unittest.main()
