"""Talks to tsdb's Arrow Flight API with pyarrow.flight alone (no InfluxDB client), as a
Flight client of any language would: DoGet with InfluxDB 3's JSON ticket under each way
a token is sent (Bearer, Token; from TSDB_TOKEN), then what tsdb must refuse: no token,
another token, a ticket that is not JSON, a database it does not have, statements that are not reads (CREATE EXTERNAL TABLE,
COPY ... TO), InfluxQL, and the Flight RPCs it does not serve (Handshake, ListFlights).

    pyarrow_flight.py URL DATABASE

URL is the HTTP API's (http://HOST:PORT): Flight is served on the same port. Prints one
JSON object: the rows read under each token scheme, and each refusal as
{"code": the Flight error's class, "message": its text}. Exits 77 when pyarrow.flight
does not import.
"""

import json
import os
import sys
from urllib.parse import urlparse

try:
    import pyarrow as pa
    import pyarrow.flight as flight
except ImportError as e:
    print(f"skipped: pyarrow.flight does not import ({e}); run plugin-sdk/python/setup-python.sh")
    sys.exit(77)

TIMEOUT = 60.0


def ticket(database: str, sql: str, **extra) -> flight.Ticket:
    return flight.Ticket(json.dumps({"database": database, "sql_query": sql, "query_type": "sql", **extra}))


def options(authorization: str | None) -> flight.FlightCallOptions:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return flight.FlightCallOptions(headers=headers, timeout=TIMEOUT)


def refusal(call) -> dict:
    """The class and message of the Flight error `call` raises; fails if it answers."""
    try:
        reader = call()
        if isinstance(reader, flight.FlightStreamReader):
            reader.read_all()
    # pyarrow raises a gRPC status as its own class: INVALID_ARGUMENT as ArrowInvalid,
    # UNIMPLEMENTED as ArrowNotImplementedError, NOT_FOUND as ArrowKeyError.
    except pa.ArrowException as e:
        return {"code": type(e).__name__, "message": str(e)}
    raise AssertionError("the call was not refused")


def main() -> None:
    url, database = urlparse(sys.argv[1]), sys.argv[2]
    client = flight.FlightClient(f"grpc+tcp://{url.hostname}:{url.port}")
    sql = "SELECT room, temp, time FROM sensor ORDER BY time"
    read = {}
    token = os.environ["TSDB_TOKEN"]
    for scheme in ("Bearer", "Token"):
        table = client.do_get(ticket(database, sql), options(f"{scheme} {token}")).read_all()
        read[scheme] = {
            "schema": {f.name: str(f.type) for f in table.schema},
            "rows": table.num_rows,
            "rooms": table.column("room").to_pylist(),
        }
    bearer = options(f"Bearer {token}")
    refused = {
        "no_token": refusal(lambda: client.do_get(ticket(database, sql), options(None))),
        "wrong_token": refusal(lambda: client.do_get(ticket(database, sql), options("Bearer apiv3_not-this-one"))),
        "not_json": refusal(lambda: client.do_get(flight.Ticket(b"SELECT 1"), bearer)),
        "missing_database": refusal(lambda: client.do_get(ticket("no_such_db", "SELECT 1"), bearer)),
        "create_external_table": refusal(
            lambda: client.do_get(
                ticket(database, "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/passwd'"), bearer
            )
        ),
        "copy_to": refusal(lambda: client.do_get(ticket(database, "COPY sensor TO '/tmp/leak.csv'"), bearer)),
        "influxql": refusal(
            lambda: client.do_get(
                flight.Ticket(json.dumps({"database": database, "sql_query": "SHOW MEASUREMENTS", "query_type": "influxql"})),
                bearer,
            )
        ),
        "handshake": refusal(lambda: client.authenticate_basic_token("user", "password", bearer)),
        "list_flights": refusal(lambda: list(client.list_flights(options=bearer))),
    }
    client.close()
    print(json.dumps({"read": read, "refused": refused}))


if __name__ == "__main__":
    main()
