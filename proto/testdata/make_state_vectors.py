"""Writes state-vectors.json: the StateChunk streams every baton SDK must agree on, and
the byte formats of incremental snapshots (a StateMap, a counter delta).

The file is committed; this script is how it was made (python3, no packages), and
running it again must leave it unchanged. Each SDK's tests read the JSON, not this.
"""

import json
import zlib
from pathlib import Path

CHUNK_SIZE = 64 << 10
OUT = Path(__file__).with_name("state-vectors.json")


def fill(length):
    return bytes(i % 251 for i in range(length))


def counter_state(counts):
    entries = sorted((k.encode(), v) for k, v in counts.items())
    out = b"BTNC" + len(entries).to_bytes(4, "little")
    for key, value in entries:
        out += len(key).to_bytes(4, "little") + key + value.to_bytes(8, "little", signed=True)
    return out


def state_map_full(entries):
    """A StateMap of bytes to bytes, whole (docs/incremental-state.md)."""
    out = b"BTKV" + len(entries).to_bytes(8, "little")
    for key, value in sorted(entries.items()):
        out += len(key).to_bytes(4, "little") + key + len(value).to_bytes(4, "little") + value
    return out


def state_map_delta(changes):
    """A StateMap delta: each key set (with its value) or removed (None)."""
    out = b"BTKD" + len(changes).to_bytes(8, "little")
    for key, value in sorted(changes, key=lambda kv: kv[0]):
        out += len(key).to_bytes(4, "little") + key
        if value is None:
            out += b"\x00"
        else:
            out += b"\x01" + len(value).to_bytes(4, "little") + value
    return out


def split(schema, state):
    count = max(1, -(-len(state) // CHUNK_SIZE))
    crc, chunks = 0, []
    for seq in range(count):
        data = state[seq * CHUNK_SIZE:(seq + 1) * CHUNK_SIZE]
        crc = zlib.crc32(data, crc)
        last = seq + 1 == count
        chunks.append({
            "seq": seq,
            "offset": seq * CHUNK_SIZE,
            "length": len(data),
            "last": last,
            "checksum": crc if last else 0,
            "total_bytes": len(state) if seq == 0 else 0,
        })
    return chunks


def state_entry(name, schema, state, source):
    return {
        "name": name,
        "schema_version": schema,
        "state": source,
        "length": len(state),
        "crc32": zlib.crc32(state),
        "chunks": split(schema, state),
    }


def chunk(seq, data, last=False, schema=1, checksum=None, total_bytes=0):
    return {
        "schema_version": schema,
        "seq": seq,
        "data_hex": data.hex(),
        "last": last,
        "checksum": checksum if checksum is not None else 0,
        "total_bytes": total_bytes,
    }


def main():
    counter = counter_state({"apples": 3, "pears": 2})
    states = [
        state_entry("empty", 1, b"", {"hex": ""}),
        state_entry("counter: apples=3, pears=2", 1, counter, {"hex": counter.hex()}),
        state_entry("one full chunk", 7, fill(CHUNK_SIZE), {"fill": CHUNK_SIZE}),
        state_entry("two chunks and 17 bytes", 7, fill(2 * CHUNK_SIZE + 17), {"fill": 2 * CHUNK_SIZE + 17}),
    ]
    ab, cd = b"ab", b"cd"
    crc = zlib.crc32(ab + cd)
    streams = [
        {"name": "unannounced length (total_bytes 0) is accepted",
         "chunks": [chunk(0, ab), chunk(1, cd, last=True, checksum=crc)],
         "expect": {"schema_version": 1, "state_hex": (ab + cd).hex()}},
        {"name": "chunks of any size are accepted",
         "chunks": [chunk(0, b"a", total_bytes=4), chunk(1, b"bcd"), chunk(2, b"", last=True, checksum=crc)],
         "expect": {"schema_version": 1, "state_hex": (ab + cd).hex()}},
        {"name": "out of order",
         "chunks": [chunk(1, ab), chunk(0, cd, last=True, checksum=crc)],
         "expect": {"error": "out_of_order"}},
        {"name": "a gap in seq",
         "chunks": [chunk(0, ab, total_bytes=4), chunk(2, cd, last=True, checksum=crc)],
         "expect": {"error": "out_of_order"}},
        {"name": "schema changed between chunks",
         "chunks": [chunk(0, ab, total_bytes=4), chunk(1, cd, last=True, checksum=crc, schema=2)],
         "expect": {"error": "schema_changed"}},
        {"name": "a chunk after the last",
         "chunks": [chunk(0, ab + cd, last=True, checksum=crc, total_bytes=4), chunk(1, b"")],
         "expect": {"error": "after_last"}},
        {"name": "no last chunk",
         "chunks": [chunk(0, ab, total_bytes=4), chunk(1, cd)],
         "expect": {"error": "truncated"}},
        {"name": "empty stream",
         "chunks": [],
         "expect": {"error": "truncated"}},
        {"name": "wrong checksum",
         "chunks": [chunk(0, ab, total_bytes=4), chunk(1, cd, last=True, checksum=crc ^ 1)],
         "expect": {"error": "checksum"}},
        {"name": "announces less than it sends",
         "chunks": [chunk(0, ab, total_bytes=3), chunk(1, cd, last=True, checksum=crc)],
         "expect": {"error": "length"}},
        {"name": "announces more than it sends",
         "chunks": [chunk(0, ab, total_bytes=5), chunk(1, cd, last=True, checksum=crc)],
         "expect": {"error": "length"}},
        {"name": "announces more than the limit",
         "limit": 3,
         "chunks": [chunk(0, ab, total_bytes=4), chunk(1, cd, last=True, checksum=crc)],
         "expect": {"error": "too_large"}},
        {"name": "sends more than the limit, unannounced",
         "limit": 3,
         "chunks": [chunk(0, ab), chunk(1, cd, last=True, checksum=crc)],
         "expect": {"error": "too_large"}},
    ]
    # Keys in byte order, not the order given: "pear" < "pears" < "\xff"; an empty
    # value is a value, not a removal.
    map_entries = {b"pears": b"2", b"apples": b"3", b"pear": b"", b"\xff": b"\x00\x01"}
    map_changes = [(b"pears", b"5"), (b"apples", None), (b"cherries", b"10"), (b"pear", b"")]
    state_map = {
        "about": (
            "A baton StateMap of bytes to bytes in the SDKs' own format "
            "(docs/incremental-state.md): 'entries' whole is full_hex; 'changes' "
            "(value_hex null: the key is removed) as a delta is delta_hex. Keys and "
            "values are hex. The Rust SDK's test (plugin-sdk/src/state_map/tests.rs) "
            "holds the same entries and changes."
        ),
        "entries": [{"key_hex": k.hex(), "value_hex": v.hex()} for k, v in map_entries.items()],
        "full_hex": state_map_full(map_entries).hex(),
        "changes": [
            {"key_hex": k.hex(), "value_hex": None if v is None else v.hex()}
            for k, v in map_changes
        ],
        "delta_hex": state_map_delta(map_changes).hex(),
    }
    counter_delta = {
        "about": (
            "A counter delta, schema 1 (example-plugins/counter/STATE.md, Deltas): the "
            "layout of a whole counter state, listing only the changed counters. Applied "
            "to base_hex (apples=3, pears=2) it gives result_hex."
        ),
        "base_hex": counter.hex(),
        "changes": {"pears": 5, "quinces": 1},
        "delta_hex": counter_state({"pears": 5, "quinces": 1}).hex(),
        "result_hex": counter_state({"apples": 3, "pears": 5, "quinces": 1}).hex(),
    }
    doc = {
        "about": (
            "StateChunk streams (proto/baton/plugin/v1/plugin.proto) that every baton SDK "
            "agrees on. 'states': a state and the chunks a sender makes of it, at "
            "chunk_size bytes of data per chunk; state.fill N means N bytes where byte i "
            "is i % 251; each chunk's data is state[offset:offset+length]. 'streams': "
            "chunk streams a receiver must accept (expect.state_hex) or refuse "
            "(expect.error, one of out_of_order, schema_changed, after_last, truncated, "
            "checksum, length, too_large); limit, when present, is the receiver's largest "
            "accepted state in bytes. Made by make_state_vectors.py."
        ),
        "chunk_size": CHUNK_SIZE,
        "states": states,
        "streams": streams,
        "state_map": state_map,
        "counter_delta": counter_delta,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
