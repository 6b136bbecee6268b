use serde_json::json;

use super::run_client;
use crate::common::{CLIENT_AUTH, http_full, rows_with, start_bare_with_token};

/// A bare Flight client (pyarrow.flight, no InfluxDB library) on the HTTP port: DoGet
/// answers with the token as `Bearer` or `Token`, and is refused without it or with another;
/// what tsdb does not run is refused with a message naming it; and the port still answers HTTP/1.1 afterwards.
#[test]
fn pyarrow_flight_reads_with_the_token_and_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());
    let lines = "sensor,room=kitchen temp=21.5 1700000001\n\
                 sensor,room=kitchen temp=22 1700000002\n\
                 sensor,room=hall temp=19 1700000003";
    let (status, _, body) = http_full(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=sensors&precision=s",
        &[CLIENT_AUTH],
        lines,
    );
    assert_eq!(status, 204, "{body}");

    let Some(stdout) = run_client("pyarrow_flight.py", db.addr, &["sensors"]) else {
        return;
    };
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    let read = json!({
        "schema": {"room": "string", "temp": "double", "time": "timestamp[ns]"},
        "rows": 3,
        "rooms": ["kitchen", "kitchen", "hall"],
    });
    for scheme in ["Bearer", "Token"] {
        assert_eq!(answer["read"][scheme], read, "{scheme}");
    }

    // Each refusal: pyarrow's class for the gRPC status, and words naming the cause.
    let refused = &answer["refused"];
    for (case, class, words) in [
        (
            "not_json",
            "ArrowInvalid",
            &["the ticket is not InfluxDB 3's JSON ticket"][..],
        ),
        (
            "missing_database",
            "ArrowKeyError",
            &["database not found", "\"no_such_db\""],
        ),
        (
            "create_external_table",
            "ArrowInvalid",
            &["a query may only read", "CreateExternalTable"],
        ),
        (
            "copy_to",
            "ArrowInvalid",
            &["a query may only read", "COPY"],
        ),
        (
            "no_token",
            "FlightUnauthenticatedError",
            &["this request needs a token"][..],
        ),
        (
            "wrong_token",
            "FlightUnauthenticatedError",
            &["the token given is not one of tsdb's"],
        ),
        (
            "influxql",
            "ArrowNotImplementedError",
            &["query_type \"influxql\" is not supported"],
        ),
        (
            "handshake",
            "ArrowNotImplementedError",
            &["Handshake is not served"],
        ),
        (
            "list_flights",
            "ArrowNotImplementedError",
            &["ListFlights is not served"],
        ),
    ] {
        assert_eq!(refused[case]["code"], class, "{case}: {}", refused[case]);
        let message = refused[case]["message"].as_str().expect("a message");
        for word in words {
            assert!(message.contains(word), "{case}: {message}");
        }
    }

    // HTTP/1.1 on the same port after the gRPC calls, and nothing written by them.
    let (status, _, body) = http_full(db.addr, "GET", "/health", &[CLIENT_AUTH], "");
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert_eq!(
        rows_with(
            db.addr,
            &[CLIENT_AUTH],
            "sensors",
            "SELECT count(*) AS n FROM sensor"
        ),
        vec![json!({"n": 3})]
    );
}
