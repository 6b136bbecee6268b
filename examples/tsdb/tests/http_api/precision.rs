use crate::common::{http, rows, start_bare};

/// 2023-11-14T22:13:20Z, in each unit.
const SECONDS: i64 = 1_700_000_000;

#[test]
fn auto_precision_guesses_each_timestamps_unit_as_influxdb_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    // No precision means auto on v3: each line's unit is guessed from its size.
    let body = format!(
        "cpu,unit=s v=1 {SECONDS}\ncpu,unit=ms v=1 {}\ncpu,unit=us v=1 {}\ncpu,unit=ns v=1 {}",
        SECONDS * 1_000,
        SECONDS * 1_000_000,
        SECONDS * 1_000_000_000
    );
    let (status, answer) = http(db.addr, "POST", "/api/v3/write_lp?db=m", &body);
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&precision=auto",
        &format!("cpu,unit=auto v=1 {SECONDS}"),
    );
    assert_eq!(status, 204, "{answer}");
    // The spellings InfluxDB 3 takes besides auto: s|second, ms|millisecond, us|u|microsecond, ns|n|nanosecond.
    for (precision, value) in [
        ("second", SECONDS),
        ("millisecond", SECONDS * 1_000),
        ("u", SECONDS * 1_000_000),
        ("n", SECONDS * 1_000_000_000),
    ] {
        let (status, answer) = http(
            db.addr,
            "POST",
            &format!("/api/v3/write_lp?db=m&precision={precision}"),
            &format!("cpu,unit={precision} v=1 {value}"),
        );
        assert_eq!(status, 204, "{precision}: {answer}");
    }
    let times = rows(db.addr, "m", "SELECT unit, time FROM cpu ORDER BY unit");
    assert_eq!(times.len(), 9, "{times:?}");
    for row in &times {
        assert_eq!(row["time"], "2023-11-14T22:13:20", "{row}");
    }

    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&precision=minute",
        "cpu v=1 1",
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("precision") && answer.contains("minute"),
        "{answer}"
    );
}
