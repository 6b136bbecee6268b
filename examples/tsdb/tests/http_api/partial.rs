use crate::common::{http, rows, start_bare};

#[test]
fn accept_partial_keeps_the_good_lines_and_lists_the_bad_ones() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());
    let body = "cpu,host=a v=1 1700000000\ncpu,host=b v= 1700000001\ncpu,host=c v=\"text\" 1700000002\ncpu,host=d v=4 1700000003";

    // accept_partial defaults to true on v3: lines 1 and 4 are kept.
    let (status, answer) = http(db.addr, "POST", "/api/v3/write_lp?db=m", body);
    assert_eq!(status, 400, "{answer}");
    let refused: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(
        refused["error"], "partial write of line protocol occurred",
        "{answer}"
    );
    let data = refused["data"]
        .as_array()
        .expect("data lists the bad lines");
    let lines: Vec<_> = data.iter().map(|d| d["line_number"].as_u64()).collect();
    assert_eq!(lines, [Some(2), Some(3)], "{answer}");
    assert_eq!(
        data[0]["original_line"], "cpu,host=b v= 1700000001",
        "{answer}"
    );
    // A field's type is fixed once written: the line, the column and both types named.
    assert_eq!(
        data[1]["error_message"], "column cpu.v is a float column; this line gives it a string",
        "{answer}"
    );
    let hosts = rows(db.addr, "m", "SELECT host FROM cpu ORDER BY host");
    assert_eq!(
        hosts,
        [
            serde_json::json!({"host": "a"}),
            serde_json::json!({"host": "d"})
        ]
    );

    // accept_partial=false: the whole batch is refused, the first bad line named.
    let again = body.replace("host=", "host=x");
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&accept_partial=false",
        &again,
    );
    assert_eq!(status, 400, "{answer}");
    let refused: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(
        refused["error"], "parsing failed for write_lp endpoint",
        "{answer}"
    );
    assert_eq!(refused["data"]["line_number"], 2, "{answer}");
    assert_eq!(
        rows(db.addr, "m", "SELECT host FROM cpu").len(),
        2,
        "nothing more written"
    );

    // A bad flag is named.
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&accept_partial=maybe",
        "cpu v=1",
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("accept_partial"), "{answer}");
    let (status, answer) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=m&no_sync=true",
        "cpu,host=e v=1",
    );
    assert_eq!(status, 204, "no_sync is accepted: {answer}");
}
