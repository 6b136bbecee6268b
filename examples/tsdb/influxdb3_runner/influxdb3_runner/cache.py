"""The store behind `influxdb3_local.cache`: live Python objects by key, per trigger or
process-wide (`use_global=True`), each with an optional time to live. It is kept in
this process's memory, so it lasts as long as the plugin's process does."""

import threading
import time
from typing import Any, Dict, Optional, Tuple

_GLOBAL = object()


class CacheStore:
    """Every trigger's entries, behind one lock: request triggers may run at once."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        # scope -> key -> (value, deadline or None)
        self._scopes: Dict[Any, Dict[str, Tuple[Any, Optional[float]]]] = {}

    def put(self, scope, key: str, value: Any, ttl: Optional[float]) -> None:
        deadline = None if ttl is None else self._clock() + ttl
        with self._lock:
            self._scopes.setdefault(scope, {})[key] = (value, deadline)

    def get(self, scope, key: str, default: Any) -> Any:
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

    def delete(self, scope, key: str) -> bool:
        with self._lock:
            entries = self._scopes.get(scope, {})
            found = entries.pop(key, None)
            return found is not None and (found[1] is None or self._clock() < found[1])


class PluginCache:
    """`influxdb3_local.cache` for one call of trigger `trigger`: InfluxDB's methods."""

    def __init__(self, store: CacheStore, trigger: str):
        self._store = store
        self._trigger = trigger

    def _scope(self, use_global: Optional[bool]):
        return _GLOBAL if use_global else ("trigger", self._trigger)

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
        self._store.put(self._scope(use_global), key, value, None if ttl is None else float(ttl))

    def get(self, key: str, default: Any = None, use_global: Optional[bool] = None) -> Any:
        """The value under `key`, or `default` if there is none or it expired."""
        self._check(key)
        return self._store.get(self._scope(use_global), key, default)

    def delete(self, key: str, use_global: Optional[bool] = None) -> bool:
        """Removes `key`; whether it was there (and not expired)."""
        self._check(key)
        return self._store.delete(self._scope(use_global), key)
