"""tsdb-bench's sink (`tsdb-bench --only runner`): an InfluxDB 3 plugin, run on tsdb's
runner, one process per trigger.

On write, it counts the rows it is handed and keeps its figures in its cache; once it
has counted `expect` rows it writes them as one `bench_figures` row (tag `run`), since
each trigger is its own process and the request trigger cannot see this one's cache.
Trigger arguments: `run` (the row's tag), `expect` (rows), `gate` (a file: the first
call waits until it exists, so that the bench can queue every batch before any is
delivered), `latency` (record, per batch, the wall-clock time since its first row's
own time, which the bench sets to the time it sent the write).

On request (`request:PATH`), `?do=figures&run=NAME` answers that run's row as JSON
(`{"ready": false}` until it is written), and `?do=costs` times, in this process, the
runner's decode into InfluxDB's `table_batches` of the `WriteBatch` in the body (its
rows as messages, and as JSON and as a pickle where the runner reads those), and two
floors of an engine holding the rows in its own process: the same list of dicts built
from the same value objects (shared), and built from the values held a column each as
an engine holds them (machine ints and floats, UTF-8 bytes), each value made a new
Python object for every row, as an engine's conversion from its columns does (fresh).
"""

import array
import os
import statistics
import sys
import time

#: How long the first call waits for the gate file (a call's own bound is 30 s).
GATE_WAIT_S = 20.0
#: Each timed piece of `do=costs` runs this often at most (`repeat=N` for fewer), and
#: for this long at most.
COST_REPEATS = 200
COST_BUDGET_S = 2.0


def _wait_for(path):
    deadline = time.monotonic() + GATE_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def process_writes(influxdb3_local, table_batches, args=None):
    entered = time.time_ns()
    args = args or {}
    cache = influxdb3_local.cache
    figures = cache.get("figures")
    if figures is None:
        figures = {"rows": 0, "batches": 0, "own_ns": 0, "first_ns": entered, "latencies": []}
        # The cache keeps the object itself: later calls update it in place.
        cache.put("figures", figures)
        if args.get("gate"):
            figures["gate_opened"] = _wait_for(args["gate"])
    started = time.perf_counter_ns()
    rows = 0
    for batch in table_batches:
        for row in batch["rows"]:
            rows += 1
    if args.get("latency") and table_batches and table_batches[0]["rows"]:
        figures["latencies"].append(entered - table_batches[0]["rows"][0]["time"])
    figures["rows"] += rows
    figures["batches"] += 1
    figures["own_ns"] += time.perf_counter_ns() - started
    figures["last_end_ns"] = time.time_ns()
    if figures["batches"] == 1:
        # The window of a gated run starts here: every later batch was queued already.
        figures["gate_end_ns"] = figures["last_end_ns"]
        figures["gate_rows"] = rows
    if figures["rows"] >= int(args.get("expect", "0") or 0) and not figures.get("published"):
        figures["published"] = True
        line = LineBuilder("bench_figures").tag("run", args.get("run", "run"))
        for name in ("rows", "batches", "own_ns", "first_ns", "last_end_ns", "gate_end_ns", "gate_rows"):
            line.int64_field(name, figures[name])
        line.bool_field("gate_opened", figures.get("gate_opened", True))
        line.string_field("latencies", ",".join(str(n) for n in figures["latencies"]))
        influxdb3_local.write(line.time_ns(1))


def _figures(influxdb3_local, run):
    found = influxdb3_local.query("SELECT * FROM bench_figures WHERE run = $run", {"run": run})
    if not found:
        return {"ready": False}
    row = found[0]
    row["ready"] = True
    text = row.pop("latencies", "") or ""
    row["latencies"] = [int(n) for n in text.split(",") if n]
    return row


def _timed(fn, rows, repeats):
    """The median ns per row of `fn` over `repeats` runs at most, bounded in time."""
    samples = []
    deadline = time.monotonic() + COST_BUDGET_S
    for _ in range(repeats):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / rows)
        if time.monotonic() > deadline:
            break
    return statistics.median(samples)


def _display_builder(names):
    """A function building each row as a dict display with `names` as its keys: the
    fastest way Python has to make these dicts, so the strictest floor."""
    keys = ", ".join(f"{name!r}: v[{i}]" for i, name in enumerate(names))
    return eval(f"lambda columns: [{{{keys}}} for v in zip(*columns)]")  # noqa: S307 (keys are repr'd)


def _column(values):
    """`values` as an engine's column holds them: machine ints or floats (each read
    makes a new Python object), the UTF-8 bytes of each string (`decode` makes one),
    else the objects themselves (bools and None are never made anew)."""
    if all(type(v) is float for v in values):
        return array.array("d", values), "{}"
    if all(type(v) is int for v in values):
        if all(-(2**63) <= v < 2**63 for v in values):
            return array.array("q", values), "{}"
        if all(0 <= v < 2**64 for v in values):
            return array.array("Q", values), "{}"
    if all(type(v) is str for v in values):
        return [v.encode() for v in values], "{}.decode()"
    return list(values), "{}"


def _fresh_builder(names, makes):
    """Like `_display_builder`, each value made by its column's `makes` expression."""
    keys = ", ".join(f"{name!r}: {make.format(f'v[{i}]')}" for i, (name, make) in enumerate(zip(names, makes)))
    return eval(f"lambda columns: [{{{keys}}} for v in zip(*columns)]")  # noqa: S307 (keys are repr'd)


def _types(batches):
    return [[{k: type(v) for k, v in row.items()} for row in t["rows"]] for t in batches]


def _costs(body, repeats):
    from google.protobuf.internal import api_implementation
    from influxdb3_runner import service
    from influxdb3_runner._proto import pb

    both = pb.WriteBatch.FromString(body)
    rows_fields = ("tables", "table_batches_json", "table_batches_pickle")
    forms = {}
    for form, kept in (("messages", "tables"), ("json", "table_batches_json"), ("pickle", "table_batches_pickle")):
        if kept not in both.DESCRIPTOR.fields_by_name or not getattr(both, kept):
            continue  # a form this runner, or the body, does not have
        one = pb.WriteBatch()
        one.CopyFrom(both)
        for field in rows_fields:
            if field != kept and field in one.DESCRIPTOR.fields_by_name:
                one.ClearField(field)
        forms[form] = one.SerializeToString()
    # A runner without the JSON (or pickle) form reads only the messages.
    write_batches = getattr(service, "write_batches", None)

    def read(request):
        got = write_batches(request)
        # The runner's answers the form beside the rows; one of before, the rows alone.
        return got[0] if isinstance(got, tuple) else got

    readers = {"messages": service.table_batches, "json": read if write_batches else None, "pickle": read if write_batches else None}

    decoded = service.table_batches(pb.WriteBatch.FromString(forms["messages"]))
    rows = sum(len(t["rows"]) for t in decoded)
    if rows == 0:
        raise ValueError("do=costs: the body holds no rows (POST an encoded WriteBatch)")
    # The values as an engine holds them, a column per name, per table.
    tables = []
    for t in decoded:
        names = list(t["rows"][0])
        if any(set(row) != set(names) for row in t["rows"]):
            raise ValueError(f"do=costs: the rows of {t['table_name']} differ in their columns")
        columns = [[row[name] for row in t["rows"]] for name in names]
        held = [_column(c) for c in columns]
        fresh = ([c for c, _ in held], _fresh_builder(names, [make for _, make in held]))
        tables.append((t["table_name"], names, columns, _display_builder(names), fresh))

    def floor():
        return [{"table_name": name, "rows": build(columns)} for name, _, columns, build, _ in tables]

    def fresh_floor():
        return [{"table_name": name, "rows": build(columns)} for name, _, _, _, (columns, build) in tables]

    def generic():
        return [
            {"table_name": name, "rows": [dict(zip(names, v)) for v in zip(*columns)]}
            for name, names, columns, _, _ in tables
        ]

    if floor() != decoded or generic() != decoded or fresh_floor() != decoded:
        raise ValueError("do=costs: the floor's dicts are not the runner's")
    if _types(fresh_floor()) != _types(decoded):
        raise ValueError("do=costs: the fresh floor's values are not of the runner's types")
    out = {
        "rows": rows,
        "floor_ns_per_row": _timed(floor, rows, repeats),
        "fresh_floor_ns_per_row": _timed(fresh_floor, rows, repeats),
        "generic_ns_per_row": _timed(generic, rows, repeats),
        "protobuf": api_implementation.Type(),
        "python": sys.version.split()[0],
    }
    for form, data in forms.items():
        reader = readers[form]
        if reader is None:
            continue

        def parse(data=data):
            return pb.WriteBatch.FromString(data)

        def decode(data=data, reader=reader):
            return reader(pb.WriteBatch.FromString(data))

        if decode() != decoded or _types(decode()) != _types(decoded):
            raise ValueError(f"do=costs: the rows read from {form} are not the messages' rows")
        out[f"{form}_bytes"] = len(data)
        out[f"{form}_parse_ns_per_row"] = _timed(parse, rows, repeats)
        out[f"{form}_decode_ns_per_row"] = _timed(decode, rows, repeats)
    return out


def process_request(influxdb3_local, query_parameters, request_headers, request_body, args=None):
    what = query_parameters.get("do")
    if what == "figures":
        return _figures(influxdb3_local, query_parameters.get("run", ""))
    if what == "costs":
        repeats = min(max(int(query_parameters.get("repeat", COST_REPEATS)), 1), COST_REPEATS)
        return _costs(request_body, repeats)
    return ({"error": f"no such do={what!r}: figures or costs"}, 400)
