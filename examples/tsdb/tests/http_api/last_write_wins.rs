use crate::common::{http, rows, start_bare};

#[test]
fn a_point_with_the_same_series_and_time_replaces_the_fields_it_names() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());
    let write = |body: &str| {
        let (status, answer) = http(db.addr, "POST", "/api/v3/write_lp?db=m&precision=s", body);
        assert_eq!(status, 204, "{body}: {answer}");
    };
    write("cpu,host=a,region=eu usage=1,temp=20 1700000000");
    write("cpu,region=eu,host=a usage=2 1700000000");
    // Another tag set at the same time is another series.
    write("cpu,host=a usage=5 1700000000");
    // Two points without a time in one request get the same server time: the last wins.
    write("mem,host=a free=1\nmem,host=a free=2");

    let cpu = rows(
        db.addr,
        "m",
        "SELECT host, region, usage, temp FROM cpu ORDER BY usage",
    );
    assert_eq!(
        cpu,
        [
            serde_json::json!({"host": "a", "region": "eu", "usage": 2.0, "temp": 20.0}),
            // NULLs are left out of a JSON row, as InfluxDB leaves them out.
            serde_json::json!({"host": "a", "usage": 5.0}),
        ]
    );
    let mem = rows(db.addr, "m", "SELECT free FROM mem");
    assert_eq!(mem, [serde_json::json!({"free": 2.0})]);
}
