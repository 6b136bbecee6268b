use crate::common::{header, http, http_full, rows, start_bare};

#[test]
fn the_v1_and_v2_write_endpoints_health_and_ping_answer_as_influxdb_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    // v1: precision n, u, ms, s, m, h; none is nanoseconds.
    for (line, path) in [
        ("cpu,via=v1s v=1 1700000000", "/write?db=m&precision=s"),
        ("cpu,via=v1h v=1 472222", "/write?db=m&precision=h"),
        ("cpu,via=v1m v=1 28333333", "/write?db=m&precision=m"),
        (
            "cpu,via=v1u v=1 1700000000000000",
            "/write?db=m&precision=u",
        ),
        ("cpu,via=v1 v=1 1700000000000000000", "/write?db=m"),
        // v2: bucket names the database; precision ns, us, ms, s; none is nanoseconds.
        (
            "cpu,via=v2ms v=1 1700000000000",
            "/api/v2/write?bucket=m&org=o&precision=ms",
        ),
        (
            "cpu,via=v2 v=1 1700000000000000000",
            "/api/v2/write?bucket=m&org=o",
        ),
    ] {
        let (status, answer) = http(db.addr, "POST", path, line);
        assert_eq!(status, 204, "{path}: {answer}");
    }
    let times = rows(db.addr, "m", "SELECT via, time FROM cpu ORDER BY via");
    let times: Vec<(String, String)> = times
        .iter()
        .map(|r| {
            (
                r["via"].as_str().unwrap_or("").into(),
                r["time"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let hour = "2023-11-14T22:00:00".to_owned();
    let minute = "2023-11-14T22:13:00".to_owned();
    let second = "2023-11-14T22:13:20".to_owned();
    assert_eq!(
        times,
        [
            ("v1".into(), second.clone()),
            ("v1h".into(), hour),
            ("v1m".into(), minute),
            ("v1s".into(), second.clone()),
            ("v1u".into(), second.clone()),
            ("v2".into(), second.clone()),
            ("v2ms".into(), second),
        ]
    );
    // A second without precision is a nanosecond on v1, not a guess.
    let (status, answer) = http(db.addr, "POST", "/write?db=m", "early v=1 1700000000");
    assert_eq!(status, 204, "{answer}");
    assert_eq!(
        rows(db.addr, "m", "SELECT time FROM early")[0]["time"],
        "1970-01-01T00:00:01.700"
    );
    // Legacy writes never keep part of a batch.
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v2/write?bucket=m",
        "late v=1 1\nlate v=",
    );
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v2/write?bucket=m&precision=h",
        "late v=1 1",
    );
    assert!(
        status == 400 && answer.contains("precision"),
        "{status} {answer}"
    );
    let (status, answer) = http(db.addr, "POST", "/api/v2/write?org=o", "late v=1 1");
    assert!(
        status == 400 && answer.contains("bucket"),
        "{status} {answer}"
    );

    let (status, _, body) = http_full(db.addr, "GET", "/health", &[], "");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, headers, body) = http_full(db.addr, "GET", "/ping", &[], "");
    assert_eq!(status, 200, "{body}");
    let ping: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        ping["version"].is_string() && ping["revision"].is_string(),
        "{ping}"
    );
    assert!(
        header(&headers, "x-influxdb-version").is_some(),
        "{headers:?}"
    );
}
