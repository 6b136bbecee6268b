"""`use_global=True` entries: InfluxDB 3 shares them between every trigger because every
trigger runs in its process; here each trigger has a process of its own, so they live in
tsdb (`tsdb.engine.v1.SharedCache`), pickled. A value that cannot be pickled stays in
this process's own global scope, as before, and is named once in a warning: it is seen
by this trigger's calls only."""

import pickle
from typing import Any, Callable, Optional

import grpc

from ._proto import pb
from .cache import GLOBAL, CacheStore

#: How long one call to tsdb's cache may take, in seconds.
CALL_TIMEOUT_SECONDS = 30.0


class SharedCacheError(Exception):
    """tsdb refused an entry (its key or value too big, or the cache full); the message
    names the bound."""


def _details(e: grpc.RpcError) -> str:
    details = e.details() if hasattr(e, "details") else None
    return details or str(e)


class SharedCache:
    """The global scope of `influxdb3_local.cache` for one process."""

    def __init__(self, stub, local: CacheStore, warn: Callable[[str], None]):
        self._stub = stub
        self._local = local
        self._warn = warn

    def put(self, key: str, value: Any, ttl: Optional[float]) -> None:
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # TypeError, PicklingError, AttributeError...
            if (GLOBAL, key) not in self._local.named_unpicklable:
                self._warn(
                    f"cache: key {key!r} (use_global=True) holds a {type(value).__name__}, which "
                    f"cannot be pickled ({type(e).__name__}: {e}); it is kept in this trigger's "
                    "process only, not shared with the other triggers"
                )
            self._local.put(GLOBAL, key, value, ttl)
            self._local.named_unpicklable.add((GLOBAL, key))
            return
        ttl_ms = 0 if ttl is None else max(1, int(ttl * 1000))
        try:
            self._stub.Put(pb.CachePut(key=key, value=data, ttl_ms=ttl_ms), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            raise SharedCacheError(_details(e)) from None
        # A value put shared replaces one kept here before.
        self._local.delete(GLOBAL, key)

    def get(self, key: str, default: Any) -> Any:
        missing = object()
        here = self._local.get(GLOBAL, key, missing)
        if here is not missing:
            return here
        try:
            found = self._stub.Get(pb.CacheKey(key=key), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            raise SharedCacheError(_details(e)) from None
        if not found.found:
            return default
        try:
            return pickle.loads(found.value)
        except Exception as e:
            self._warn(
                f"cache: key {key!r} (use_global=True) does not unpickle in this plugin "
                f"({type(e).__name__}: {e}); another trigger's plugin put it; the default is returned"
            )
            return default

    def delete(self, key: str) -> bool:
        here = self._local.delete(GLOBAL, key)
        try:
            there = self._stub.Delete(pb.CacheKey(key=key), timeout=CALL_TIMEOUT_SECONDS).existed
        except grpc.RpcError as e:
            raise SharedCacheError(_details(e)) from None
        return here or there
