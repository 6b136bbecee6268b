use crate::common::{encoded, http_full, start_bare};

/// Clients send `Authorization: Token X` (InfluxDB 2 and 3's clients, Telegraf) or
/// `Bearer X` (InfluxDB 3 Enterprise and Edge); tsdb checks no token yet, so neither
/// may get a request refused.
#[test]
fn token_and_bearer_headers_are_accepted_on_every_endpoint_a_client_calls() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    let query = format!("/api/v3/query_sql?db=m&q={}", encoded("SELECT v FROM cpu"));
    for authorization in [
        "authorization: Token my-token",
        "Authorization: Bearer my-token",
    ] {
        for (method, path, body, want) in [
            ("POST", "/api/v3/write_lp?db=m", "cpu v=1 1", 204),
            ("POST", "/api/v2/write?bucket=m&org=o", "cpu v=1 2", 204),
            ("POST", "/write?db=m", "cpu v=1 3", 204),
            ("GET", query.as_str(), "", 200),
            (
                "POST",
                "/api/v3/query_sql",
                r#"{"db":"m","q":"SELECT v FROM cpu"}"#,
                200,
            ),
            ("GET", "/health", "", 200),
            ("GET", "/ping", "", 200),
        ] {
            let headers = [authorization, "content-type: application/json"];
            let (status, _, answer) = http_full(db.addr, method, path, &headers, body);
            assert_eq!(status, want, "{authorization}: {method} {path}: {answer}");
        }
    }
}
