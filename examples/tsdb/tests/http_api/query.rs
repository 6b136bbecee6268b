use crate::common::{encoded, header, http, http_full, start_bare};

#[test]
fn query_sql_answers_get_and_post_in_each_format() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&precision=s",
        "cpu,host=a v=1.5 1700000000\ncpu,host=b v=2.5 1700000001",
    );
    assert_eq!(status, 204, "{answer}");
    let sql = "SELECT host, time, v FROM cpu ORDER BY host";

    let get = |format: &str| {
        http_full(
            db.addr,
            "GET",
            &format!("/api/v3/query_sql?db=m&q={}&format={format}", encoded(sql)),
            &[],
            "",
        )
    };
    let (status, headers, body) = get("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let rows: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        rows,
        serde_json::json!([
            {"host": "a", "time": "2023-11-14T22:13:20", "v": 1.5},
            {"host": "b", "time": "2023-11-14T22:13:21", "v": 2.5},
        ])
    );
    let (status, _, body) = get("jsonl");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "{\"host\":\"a\",\"time\":\"2023-11-14T22:13:20\",\"v\":1.5}\n{\"host\":\"b\",\"time\":\"2023-11-14T22:13:21\",\"v\":2.5}\n"
    );
    // Keys in the query's column order, as InfluxDB writes them, not sorted.
    let (status, _, body) = http_full(
        db.addr,
        "GET",
        &format!(
            "/api/v3/query_sql?db=m&q={}&format=json",
            encoded("SELECT v, host FROM cpu ORDER BY host")
        ),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "[{\"v\":1.5,\"host\":\"a\"},{\"v\":2.5,\"host\":\"b\"}]"
    );
    let (status, headers, body) = get("csv");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("text/csv"));
    assert_eq!(
        body,
        "host,time,v\na,2023-11-14T22:13:20,1.5\nb,2023-11-14T22:13:21,2.5\n"
    );
    let (status, _, body) = get("pretty");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("| host | time                | v   |")
            && body.contains("| b    | 2023-11-14T22:13:21 | 2.5 |"),
        "{body}"
    );
    // Parquet: a whole file (its magic at both ends); tests/clients reads one with pyarrow.
    let (status, headers, body) = get("parquet");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.apache.parquet")
    );
    assert!(body.starts_with("PAR1") && body.ends_with("PAR1"), "{body}");
    let (status, _, body) = get("xml");
    assert!(status == 400 && body.contains("format"), "{status} {body}");

    // POST with a JSON body, and `$name` parameters.
    let request = serde_json::json!({
        "db": "m",
        "q": "SELECT host, v FROM cpu WHERE host = $host",
        "format": "csv",
        "params": {"host": "b"},
    });
    let (status, _, body) = http_full(
        db.addr,
        "POST",
        "/api/v3/query_sql",
        &["content-type: application/json"],
        &request.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "host,v\nb,2.5\n");
    let (status, _, body) = http_full(db.addr, "POST", "/api/v3/query_sql", &[], "{\"db\": \"m\"}");
    assert!(status == 400 && body.contains('q'), "{status} {body}");
}
