"""The cache as baton state: what `Snapshot` sends to the next process at a reload and
into a checkpoint, and what `Restore` takes back. Each value is pickled on its own, so
one that cannot be (a lock, a socket, a generator) is named in a warning and left out
while the rest is kept; deadlines travel as they are (wall-clock seconds)."""

import pickle
from typing import Callable, List, Optional, Tuple

from .cache import CacheStore, Scope, describe_scope

#: The format `dump` writes and `load` reads (baton's `state_schema_version`).
SCHEMA_VERSION = 1

Warn = Callable[[str, Scope], None]


class StateError(Exception):
    """A state this runner cannot read; the message says why."""


def dump(store: CacheStore, warn: Warn) -> bytes:
    """Every live entry of `store`, pickled. An entry that cannot be pickled is named
    through `warn` (its key and scope, once until it is put again) and left out."""
    kept: List[Tuple[Scope, str, Optional[float], bytes]] = []
    for scope, key, value, deadline in store.live_entries():
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # pickle raises TypeError, PicklingError, AttributeError...
            if (scope, key) not in store.named_unpicklable:
                store.named_unpicklable.add((scope, key))
                warn(
                    f"cache: key {key!r} in {describe_scope(scope)} holds a {type(value).__name__}, "
                    f"which cannot be pickled ({type(e).__name__}: {e}); it is left out of the "
                    "state handed to the next process (reload or crash), the rest is kept",
                    scope,
                )
            continue
        kept.append((scope, key, deadline, data))
    # Only str, float, bytes and None outside the values: readable by any runner.
    return pickle.dumps({"format": SCHEMA_VERSION, "entries": kept}, protocol=pickle.HIGHEST_PROTOCOL)


def load(store: CacheStore, schema_version: int, state: bytes, warn: Warn) -> int:
    """Replaces `store`'s entries with those of `state`; the number kept. A value this
    version of the plugin cannot unpickle (its class is gone, say) is named through
    `warn` and dropped. Raises StateError, leaving `store` untouched, for a state in
    another format."""
    if schema_version != SCHEMA_VERSION:
        raise StateError(f"the cache's state is in format {schema_version}; this runner reads {SCHEMA_VERSION}")
    try:
        outer = pickle.loads(state)
        entries = outer["entries"] if outer.get("format") == SCHEMA_VERSION else None
    except Exception as e:
        raise StateError(f"the cache's state does not read: {type(e).__name__}: {e}") from None
    if not isinstance(entries, list):
        raise StateError(f"the cache's state is not in format {SCHEMA_VERSION}")
    restored = []
    for scope, key, deadline, data in entries:
        try:
            value = pickle.loads(data)
        except Exception as e:
            warn(
                f"cache: key {key!r} in {describe_scope(scope)} does not unpickle in this version "
                f"of the plugin ({type(e).__name__}: {e}); it is dropped",
                scope,
            )
            continue
        restored.append((scope, key, value, deadline))
    return store.replace(iter(restored))
