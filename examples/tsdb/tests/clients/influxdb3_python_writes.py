"""Writes to tsdb with InfluxDB 3's Python client (influxdb3-python, module
influxdb_client_3, from PyPI), as its users do: write() of line protocol and of Point
objects, by default to /api/v2/write, with --v3 to /api/v3/write_lp (precision named
"second" ... "nanosecond", no_sync). The caller reads the rows back over query_sql;
query(), over Arrow Flight, is influxdb3_python_queries.py's.

    influxdb3_python_writes.py URL DATABASE [--v3] [--gzip] [--bearer]

Exits 77 with a "skipped: ..." line when the client is not installed.
"""

import os
import sys

try:
    from influxdb_client_3 import InfluxDBClient3, Point, WritePrecision
except ImportError as e:
    print(f"skipped: influxdb3-python does not import ({e}); run plugin-sdk/python/setup-python.sh")
    sys.exit(77)


def main() -> None:
    url, database = sys.argv[1], sys.argv[2]
    flags = sys.argv[3:]
    options = {}
    if "--v3" in flags:
        options = {"write_use_v2_api": False, "write_no_sync": True}
    client = InfluxDBClient3(
        host=url,
        database=database,
        token=os.environ["TSDB_TOKEN"],
        auth_scheme="Bearer" if "--bearer" in flags else None,
        enable_gzip="--gzip" in flags,
        **options,
    )
    with client:
        client.write(record='home,room=kitchen temp=21.5,hum=40i 1700000001', write_precision=WritePrecision.S)
        client.write(
            record=[
                'home,room=hall temp=19.25,hum=41i 1700000002123',
                'home,room=attic temp=-3.5,hum=80i 1700000003456',
            ],
            write_precision=WritePrecision.MS,
        )
        client.write(
            record=Point("home")
            .tag("room", "living room")
            .field("temp", 22.75)
            .field("hum", 39)
            .field("note", 'a "quoted", \\ note')
            .time(1_700_000_004_123_456, WritePrecision.US)
        )
        client.write(
            record=Point("home").tag("room", "cellar").field("temp", 12.5).field("hum", 70).time(
                1_700_000_005_123_456_789, WritePrecision.NS
            )
        )


if __name__ == "__main__":
    main()
