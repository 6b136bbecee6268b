"""Writes to tsdb with InfluxDB 2's Python client (influxdb-client, from PyPI), as its
users do: a SYNCHRONOUS WriteApi to /api/v2/write with a token, Point objects and line
protocol strings at each precision (s, ms, us, ns). The caller reads the rows back.

    influxdb_client_writes.py URL BUCKET [--gzip]

Exits 77 with a "skipped: ..." line when the client is not installed.
"""

import os
import sys
from datetime import datetime, timezone

try:
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS
except ImportError as e:
    print(f"skipped: influxdb-client does not import ({e}); run plugin-sdk/python/setup-python.sh")
    sys.exit(77)


def points() -> list:
    """One point per precision, each time with digits below its unit's second, and one
    whose time is a datetime and whose tag needs escaping."""
    at = [
        ("point-s", WritePrecision.S, 1_700_000_001),
        ("point-ms", WritePrecision.MS, 1_700_000_002_123),
        ("point-us", WritePrecision.US, 1_700_000_003_123_456),
        ("point-ns", WritePrecision.NS, 1_700_000_004_123_456_789),
    ]
    made = [
        Point("cpu")
        .tag("host", host)
        .field("usage", 0.25)
        .field("count", 1)
        .field("note", 'say "hi" \\ é')
        .time(time, precision)
        for host, precision, time in at
    ]
    made.append(
        Point("cpu")
        .tag("host", "web 1,eu=x")
        .field("usage", 0.5)
        .field("count", 2)
        .field("note", "p")
        .time(datetime(2023, 11, 14, 22, 13, 25, 654321, tzinfo=timezone.utc), WritePrecision.US)
    )
    return made


def lines() -> list:
    """Line protocol as text, one request per precision."""
    return [
        (WritePrecision.S, 'cpu,host=line-s usage=1.5,count=7i,note="l" 1700000011'),
        (WritePrecision.MS, 'cpu,host=line-ms usage=1.5,count=7i,note="l" 1700000012123'),
        (WritePrecision.US, 'cpu,host=line-us usage=1.5,count=7i,note="l" 1700000013123456'),
        (WritePrecision.NS, 'cpu,host=line-ns usage=1.5,count=7i,note="l" 1700000014123456789'),
    ]


def main() -> None:
    url, bucket = sys.argv[1], sys.argv[2]
    gzip = "--gzip" in sys.argv[3:]
    with InfluxDBClient(url=url, token=os.environ["TSDB_TOKEN"], org="my-org", enable_gzip=gzip) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        # One call: the client splits the points by precision, a request for each.
        write.write(bucket=bucket, record=points())
        for precision, line in lines():
            write.write(bucket=bucket, record=line, write_precision=precision)


if __name__ == "__main__":
    main()
