use crate::common::{header, http_full, start_bare};

#[test]
fn a_wrong_method_is_405_with_allow_and_an_unknown_path_is_404_naming_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());
    // Its log is a file here: plain text, no terminal colours.
    let log = std::fs::read_to_string(&db.log).expect("the log");
    assert!(log.contains("serving http://"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );

    let (status, headers, body) = http_full(db.addr, "GET", "/api/v3/write_lp?db=m", &[], "");
    assert_eq!(status, 405, "{body}");
    assert_eq!(header(&headers, "allow"), Some("POST"), "{headers:?}");

    let (status, headers, body) = http_full(db.addr, "DELETE", "/api/v3/query_sql", &[], "");
    assert_eq!(status, 405, "{body}");
    let allow = header(&headers, "allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let (status, _, body) = http_full(db.addr, "GET", "/api/v3/no_such_thing", &[], "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/api/v3/no_such_thing"), "{body}");
}
