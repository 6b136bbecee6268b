//! A bad tsdb.toml stops tsdb before it starts anything, with every mistake it holds on
//! a line of its own: `file:line:column`, the field, and the nearest known key for a
//! misspelt one, as baton reports its own config.

/// tsdb's exit code and stderr on the config `text`.
fn refused(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("tsdb.toml");
    std::fs::write(dir.path().join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(&config, text).expect("write tsdb.toml");
    let (code, stderr) =
        crate::common::exit_of(dir.path(), &["--config".as_ref(), config.as_os_str()]);
    (
        code,
        stderr.replace(&config.display().to_string(), "tsdb.toml"),
    )
}

#[test]
fn every_mistake_is_reported_with_its_place_and_a_suggestion() {
    let (code, err) = refused(
        "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nmax_tabels = 5\nsnapshot_rows = \"many\"\n",
    );
    assert_eq!(code, Some(64), "{err}");
    assert_eq!(
        err,
        "error: tsdb.toml:3:1: field `max_tabels`: unknown key `max_tabels`; did you mean `max_tables`?\n\
         error: tsdb.toml:4:17: field `snapshot_rows`: invalid type: string \"many\", expected usize\n"
    );

    // Values that read but cannot be used: all of them, too.
    let (code, err) = refused(
        "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nquery_timeout_ms = 0\n\
         [[triggers]]\nname = \"a\"\nplugin = \"p\"\non = \"sometimes\"\ndatabase = \"d\"\n\
         [[triggers]]\nname = \"a\"\nplugin = \"p\"\non = \"all_tables\"\ndatabase = \"no good\"\n",
    );
    assert_eq!(code, Some(64), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert_eq!(
        lines[0],
        "error: tsdb.toml:3:1: field `query_timeout_ms`: is 0: no table or query could pass it"
    );
    assert!(
        lines[1].starts_with("error: tsdb.toml: field `triggers[0].on` (trigger \"a\"): "),
        "{err}"
    );
    assert_eq!(
        lines[2],
        "error: tsdb.toml: field `triggers[1].name`: two triggers are named \"a\""
    );
    assert!(
        lines[3].starts_with("error: tsdb.toml: field `triggers[1].database` (trigger \"a\"): "),
        "{err}"
    );
}
