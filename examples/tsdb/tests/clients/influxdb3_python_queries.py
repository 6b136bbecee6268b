"""Writes to tsdb with InfluxDB 3's Python client (influxdb3-python, module
influxdb_client_3) and reads back with its query(), which goes over Arrow Flight (DoGet,
a JSON ticket, `authorization: Bearer ...`), as its users do: SQL with a $name parameter
(query_parameters=), a pyarrow Table, and a pandas DataFrame where pandas imports. Then
two queries tsdb must refuse: a database it does not have, and SQL that does not plan.

    influxdb3_python_queries.py URL DATABASE

Prints one JSON object for the caller to check: the schema as pyarrow names its types,
the rows (times as integer nanoseconds), the DataFrame's row count and dtypes or null, and the refusals'
messages. Exits 77 with a "skipped: ..." line when the client is not installed.
"""

import importlib.util
import json
import os
import sys

try:
    import pyarrow as pa
    from influxdb_client_3 import InfluxDBClient3, WritePrecision
except ImportError as e:
    print(f"skipped: influxdb3-python does not import ({e}); run plugin-sdk/python/setup-python.sh")
    sys.exit(77)

LINES = [
    'sensor,room=kitchen temp=21.5,count=7i,seen=12u,ok=true,label="warm" 1700000001000000001',
    'sensor,room=kitchen temp=-0.25,count=-3i,seen=18446744073709551615u,ok=false,label="a \\"b\\"" 1700000002000000002',
    'sensor,room=hall temp=19.0,count=1i,seen=1u,ok=true,label="hall" 1700000003000000003',
]

QUERY = (
    "SELECT room, temp, count, seen, ok, label, time FROM sensor "
    "WHERE room = $room ORDER BY time"
)


def refusal(client: InfluxDBClient3, sql: str, database: str) -> str:
    """The message of the error a query gives; fails if it gives rows."""
    try:
        client.query(sql, language="sql", database=database)
    except Exception as e:  # the client wraps pyarrow's Flight errors in its own
        return str(e)
    raise AssertionError(f"{sql!r} on {database!r} was not refused")


def main() -> None:
    url, database = sys.argv[1], sys.argv[2]
    client = InfluxDBClient3(host=url, database=database, token=os.environ["TSDB_TOKEN"])
    with client:
        client.write(record=LINES, write_precision=WritePrecision.NS)
        table = client.query(QUERY, language="sql", query_parameters={"room": "kitchen"})
        schema = {field.name: str(field.type) for field in table.schema}
        # As integers: a datetime would drop the nanoseconds.
        times = table.column("time").cast(pa.int64()).to_pylist()
        rows = [dict(row, time=t) for row, t in zip(table.drop_columns(["time"]).to_pylist(), times)]
        frame = None
        if importlib.util.find_spec("pandas") is not None:
            df = client.query(QUERY, language="sql", mode="pandas", query_parameters={"room": "kitchen"})
            frame = {"rows": len(df), "dtypes": {name: str(t) for name, t in df.dtypes.items()}}
        print(
            json.dumps(
                {
                    "schema": schema,
                    "rows": rows,
                    "pandas": frame,
                    "missing_database": refusal(client, "SELECT 1", "no_such_db"),
                    "bad_sql": refusal(client, "SELECT nope FROM sensor", database),
                }
            )
        )


if __name__ == "__main__":
    main()
