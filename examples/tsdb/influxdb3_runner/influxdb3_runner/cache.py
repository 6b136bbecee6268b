"""The store behind `influxdb3_local.cache`: live Python objects by key, per trigger (and
process-wide, `use_global=True`, for what `shared_cache` cannot share), each with an
optional time to live. It lives in this
process's memory; `cache_state` carries it to the next process at a reload and into
baton's checkpoints, which is why a time to live is kept as a wall-clock deadline."""

import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

#: The scope of `use_global=True` entries; a trigger's scope is its name.
GLOBAL = None

Scope = Optional[str]
Entry = Tuple[Any, Optional[float]]


def describe_scope(scope: Scope) -> str:
    return "the global scope" if scope is GLOBAL else f"the scope of trigger {scope!r}"


class CacheStore:
    """Every trigger's entries, behind one lock: request triggers may run at once."""

    def __init__(self, clock=time.time):
        # Wall-clock, not monotonic: a deadline must mean the same moment in the
        # process the cache moves to.
        self._clock = clock
        self._lock = threading.Lock()
        # scope -> key -> (value, deadline or None)
        self._scopes: Dict[Scope, Dict[str, Entry]] = {}
        # Entries already named as unpicklable: named once, until put again.
        self.named_unpicklable: set = set()

    def now(self) -> float:
        return self._clock()

    def put(self, scope: Scope, key: str, value: Any, ttl: Optional[float]) -> None:
        deadline = None if ttl is None else self._clock() + ttl
        with self._lock:
            self._scopes.setdefault(scope, {})[key] = (value, deadline)
            self.named_unpicklable.discard((scope, key))

    def get(self, scope: Scope, key: str, default: Any) -> Any:
        with self._lock:
            entries = self._scopes.get(scope, {})
            found = entries.get(key)
            if found is None:
                return default
            value, deadline = found
            if deadline is not None and self._clock() >= deadline:
                del entries[key]
                return default
            return value

    def delete(self, scope: Scope, key: str) -> bool:
        with self._lock:
            entries = self._scopes.get(scope, {})
            found = entries.pop(key, None)
            return found is not None and (found[1] is None or self._clock() < found[1])

    def live_entries(self) -> List[Tuple[Scope, str, Any, Optional[float]]]:
        """Every entry not yet expired, as (scope, key, value, deadline)."""
        now = self._clock()
        with self._lock:
            return [
                (scope, key, value, deadline)
                for scope, entries in self._scopes.items()
                for key, (value, deadline) in entries.items()
                if deadline is None or now < deadline
            ]

    def replace(self, entries: Iterator[Tuple[Scope, str, Any, Optional[float]]]) -> int:
        """Replaces every entry with `entries`; those past their deadline are left out.
        The number kept."""
        now = self._clock()
        scopes: Dict[Scope, Dict[str, Entry]] = {}
        kept = 0
        for scope, key, value, deadline in entries:
            if deadline is None or now < deadline:
                scopes.setdefault(scope, {})[key] = (value, deadline)
                kept += 1
        with self._lock:
            self._scopes = scopes
            self.named_unpicklable.clear()
        return kept


class PluginCache:
    """`influxdb3_local.cache` for one call of trigger `trigger`: InfluxDB's methods."""

    def __init__(self, store: CacheStore, trigger: str, shared=None):
        self._store = store
        self._trigger = trigger
        # The global scope shared with other triggers' processes (`shared_cache`);
        # without one (a plugin test), this process's own.
        self._shared = shared

    def _scope(self, use_global: Optional[bool]) -> Scope:
        return GLOBAL if use_global else self._trigger

    @staticmethod
    def _check(key, ttl=None) -> None:
        if not isinstance(key, str):
            raise TypeError(f"cache key {key!r} is a {type(key).__name__}, not a str")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
                raise TypeError(f"cache ttl for {key!r}: {ttl!r} is not a number of seconds")
            if not ttl > 0:
                raise ValueError(f"cache ttl for {key!r}: {ttl} is not a positive number of seconds")

    def put(self, key: str, value: Any, ttl: Optional[float] = None, use_global: Optional[bool] = None) -> None:
        """Keeps `value` (by reference) under `key`, for `ttl` seconds if given."""
        self._check(key, ttl)
        ttl = None if ttl is None else float(ttl)
        if use_global and self._shared is not None:
            self._shared.put(key, value, ttl)
            return
        self._store.put(self._scope(use_global), key, value, ttl)

    def get(self, key: str, default: Any = None, use_global: Optional[bool] = None) -> Any:
        """The value under `key`, or `default` if there is none or it expired."""
        self._check(key)
        if use_global and self._shared is not None:
            return self._shared.get(key, default)
        return self._store.get(self._scope(use_global), key, default)

    def delete(self, key: str, use_global: Optional[bool] = None) -> bool:
        """Removes `key`; whether it was there (and not expired)."""
        self._check(key)
        if use_global and self._shared is not None:
            return self._shared.delete(key)
        return self._store.delete(self._scope(use_global), key)
