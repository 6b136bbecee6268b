//! Tokens as InfluxDB 3 checks them: every request needs a live admin token (the one
//! that makes the first token aside), sent as InfluxDB's clients send it; the operator
//! token is made once and regenerated, named tokens made, expired and deleted; the
//! catalog keeps hashes only, and tokens survive a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::{
    CLIENT_TOKEN, Tsdb, encoded, exit_of, header, http_full, start_bare_with_token, start_with,
    wait_until,
};

/// A database without plugins that checks tokens and has none yet.
fn start_checking(dir: &Path, extra_config: &str, args: &[&str]) -> Tsdb {
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        format!("http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\n{extra_config}"),
    )
    .expect("write tsdb.toml");
    start_with(dir, args)
}

/// Every endpoint a client calls, with a body, and the status it answers when let in.
fn endpoints(query: &str) -> Vec<(&'static str, String, &'static str, u16)> {
    vec![
        ("POST", "/api/v3/write_lp?db=m".into(), "cpu v=1 1", 204),
        (
            "POST",
            "/api/v2/write?bucket=m&org=o".into(),
            "cpu v=1 2",
            204,
        ),
        ("POST", "/write?db=m".into(), "cpu v=1 3", 204),
        ("GET", query.to_owned(), "", 200),
        (
            "POST",
            "/api/v3/query_sql".into(),
            r#"{"db":"m","q":"SELECT v FROM cpu"}"#,
            200,
        ),
        (
            "GET",
            "/api/v3/configure/database?format=json".into(),
            "",
            200,
        ),
        (
            "GET",
            "/api/v3/configure/processing_engine_trigger".into(),
            "",
            200,
        ),
        ("GET", "/health".into(), "", 200),
        ("GET", "/ping".into(), "", 200),
    ]
}

fn call(addr: SocketAddr, method: &str, path: &str, auth: &[&str], body: &str) -> (u16, String) {
    let mut headers = vec!["content-type: application/json"];
    headers.extend_from_slice(auth);
    let (status, _, answer) = http_full(addr, method, path, &headers, body);
    (status, answer)
}

fn token_of(answer: &str) -> String {
    let made: serde_json::Value = serde_json::from_str(answer).expect("the token's JSON");
    made["token"].as_str().expect("a token").to_owned()
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("read a dir").any(|entry| {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            found_under(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn every_request_needs_a_live_token_sent_as_influxdbs_clients_send_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_checking(dir.path(), "", &[]);
    let query = format!("/api/v3/query_sql?db=m&q={}", encoded("SELECT v FROM cpu"));

    // No token, or one that is not tsdb's: refused before anything runs, saying why.
    for (method, path, body, _) in endpoints(&query) {
        let (status, headers, answer) = http_full(db.addr, method, &path, &[], body);
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert!(
            answer.contains("this request needs a token"),
            "{method} {path}: {answer}"
        );
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Bearer realm=\"tsdb\"")
        );
        let (status, answer) = call(
            db.addr,
            method,
            &path,
            &["authorization: Bearer apiv3_guess"],
            body,
        );
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert!(answer.contains("not one of tsdb's"), "{answer}");
    }
    let (status, answer) = call(db.addr, "GET", "/health", &["authorization: Digest x"], "");
    assert_eq!(status, 401);
    assert!(
        answer.contains("scheme \\\"Digest\\\" is not Bearer, Token or Basic"),
        "{answer}"
    );

    // Not from a web page (a cross-site POST, or DNS rebinding, to a tsdb on the
    // visitor's machine): browsers name the page's origin.
    let (status, answer) = call(
        db.addr,
        "POST",
        "/api/v3/configure/token/admin",
        &["origin: http://evil.example"],
        "",
    );
    assert_eq!(status, 403, "{answer}");
    // The first token needs none; the second ask is refused, pointing at regenerate.
    let (status, answer) = call(db.addr, "POST", "/api/v3/configure/token/admin", &[], "");
    assert_eq!(status, 201, "{answer}");
    let made: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(made["name"], "_admin");
    assert_eq!(made["expiry"], serde_json::Value::Null);
    assert_eq!(made["hash"].as_str().map(str::len), Some(64), "{made}");
    let operator = token_of(&answer);
    assert!(operator.starts_with("apiv3_"), "{operator}");
    let (status, answer) = call(db.addr, "POST", "/api/v3/configure/token/admin", &[], "");
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("regenerate"), "{answer}");

    // Every way InfluxDB's clients send it: Bearer and Token (v3, v2, Flight), Basic
    // with the token as password and `?p=` (v1).
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("me:{operator}"))
    };
    let sent = [
        format!("authorization: Bearer {operator}"),
        format!("Authorization: Token {operator}"),
        format!("authorization: Basic {basic}"),
    ];
    for auth in &sent {
        for (method, path, body, want) in endpoints(&query) {
            let (status, answer) = call(db.addr, method, &path, &[auth.as_str()], body);
            assert_eq!(status, want, "{auth}: {method} {path}: {answer}");
        }
    }
    let (status, answer) = call(
        db.addr,
        "POST",
        &format!("/write?db=m&u=me&p={operator}"),
        &[],
        "cpu v=1 4",
    );
    assert_eq!(status, 204, "{answer}");
    // Refused writes wrote nothing: the four points written are the ones let in.
    let bearer = format!("authorization: Bearer {operator}");
    let (_, answer) = call(
        db.addr,
        "GET",
        &format!(
            "/api/v3/query_sql?db=m&q={}",
            encoded("SELECT count(*) AS n FROM cpu")
        ),
        &[bearer.as_str()],
        "",
    );
    assert_eq!(answer.trim(), r#"[{"n":4}]"#);

    // `system.tokens` in `_internal` lists them by name and hash, as `influxdb3 show
    // tokens` reads them; a database's own `system` has no such table.
    let tokens_sql = encoded("SELECT token_id, name, hash, expiry, permissions FROM system.tokens");
    let (status, answer) = call(
        db.addr,
        "GET",
        &format!("/api/v3/query_sql?db=_internal&q={tokens_sql}"),
        &[bearer.as_str()],
        "",
    );
    assert_eq!(status, 200, "{answer}");
    let listed: serde_json::Value = serde_json::from_str(&answer).expect("JSON rows");
    assert_eq!(
        listed,
        serde_json::json!([{"token_id": 0, "name": "_admin", "hash": made["hash"], "permissions": "*:*:*"}])
    );
    let (status, answer) = call(
        db.addr,
        "GET",
        &format!("/api/v3/query_sql?db=m&q={tokens_sql}"),
        &[bearer.as_str()],
        "",
    );
    assert_ne!(status, 200, "{answer}");

    // The token is shown once: the data directory holds its hash, never the token.
    assert!(
        !found_under(dir.path(), operator.as_bytes()),
        "the token is in a file"
    );
    assert!(found_under(
        dir.path(),
        made["hash"].as_str().expect("hash").as_bytes()
    ));

    // Named tokens: made with the operator token, expiring, deletable; the operator
    // token is not deletable and regenerates only itself.
    let named = |name: &str, expiry: Option<u64>| {
        let body = match expiry {
            Some(s) => format!(r#"{{"token_name":"{name}","expiry_secs":{s}}}"#),
            None => format!(r#"{{"token_name":"{name}"}}"#),
        };
        call(
            db.addr,
            "POST",
            "/api/v3/configure/token/named_admin",
            &[bearer.as_str()],
            &body,
        )
    };
    let (status, answer) = named("ci", None);
    assert_eq!(status, 201, "{answer}");
    let ci = format!("authorization: Bearer {}", token_of(&answer));
    let (status, answer) = named("ci", None);
    assert_eq!(
        (status, answer.contains("exists already")),
        (409, true),
        "{answer}"
    );
    let (status, answer) = named("_admin", None);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = named("brief", Some(1));
    assert_eq!(status, 201, "{answer}");
    let made: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert!(made["expiry"].is_string(), "{made}");
    let brief = format!("authorization: Bearer {}", token_of(&answer));
    let (status, answer) = call(
        db.addr,
        "POST",
        "/api/v3/configure/token/named_admin",
        &[],
        r#"{"token_name":"sneaky"}"#,
    );
    assert_eq!(status, 401, "a token made without one: {answer}");
    let (status, _) = call(db.addr, "GET", "/health", &[ci.as_str()], "");
    assert_eq!(status, 200);
    let expired = wait_until("the 1 s token expires", Duration::from_secs(30), || {
        let (status, answer) = call(db.addr, "GET", "/health", &[brief.as_str()], "");
        (status == 401).then_some(answer)
    });
    assert!(
        expired.contains("token \\\"brief\\\" expired at"),
        "{expired}"
    );
    let (status, answer) = call(
        db.addr,
        "POST",
        "/api/v3/configure/token/admin/regenerate",
        &[ci.as_str()],
        "",
    );
    assert_eq!(status, 403, "{answer}");
    // The operator token is not deletable; a name that is not there is a 404.
    for (name, want) in [("_admin", 403), ("nobody", 404), ("brief", 200)] {
        let path = format!("/api/v3/configure/token?token_name={name}");
        let (status, answer) = call(db.addr, "DELETE", &path, &[ci.as_str()], "");
        assert_eq!(status, want, "{name}: {answer}");
    }

    // Regenerated: the old operator token stops at once, the new one works.
    let (status, answer) = call(
        db.addr,
        "POST",
        "/api/v3/configure/token/admin/regenerate",
        &[bearer.as_str()],
        "",
    );
    assert_eq!(status, 201, "{answer}");
    let renewed = format!("authorization: Bearer {}", token_of(&answer));
    let (status, _) = call(db.addr, "GET", "/health", &[bearer.as_str()], "");
    assert_eq!(status, 401, "the old operator token still works");
    let (status, _) = call(db.addr, "GET", "/health", &[renewed.as_str()], "");
    assert_eq!(status, 200);

    // A restart keeps them: the renewed operator token and "ci" work, "brief" is gone.
    drop(db);
    let db = start_with(dir.path(), &[]);
    for (auth, want) in [(&renewed, 200), (&ci, 200), (&brief, 401), (&bearer, 401)] {
        let (status, answer) = call(db.addr, "GET", "/ping", &[auth.as_str()], "");
        assert_eq!(status, want, "{auth}: {answer}");
    }
}

#[test]
fn an_admin_token_file_seeds_the_first_token_and_must_be_tsdbs_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());
    let auth = format!("authorization: Bearer {CLIENT_TOKEN}");
    let (status, answer) = call(db.addr, "GET", "/ping", &[auth.as_str()], "");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(db.addr, "POST", "/api/v3/configure/token/admin", &[], "");
    assert_eq!(
        status, 409,
        "the file's token is the operator token: {answer}"
    );
    drop(db);

    // A file others may write, or a link, is refused at start, naming it.
    let run = |file: &Path| {
        exit_of(
            dir.path(),
            &[
                "--config".as_ref(),
                dir.path().join("tsdb.toml").as_os_str(),
                "--admin-token-file".as_ref(),
                file.as_os_str(),
            ],
        )
    };
    let open_file = dir.path().join("open.json");
    std::fs::write(&open_file, format!("{{\"token\": \"{CLIENT_TOKEN}\"}}")).expect("write");
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, stderr) = run(&open_file);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: must be tsdb's user's own and writable by no one else",
            open_file.display()
        )),
        "{stderr}"
    );
    // An operator token with an expiry would lock tsdb for good once it passed.
    let expiring = dir.path().join("expiring.json");
    std::fs::write(
        &expiring,
        format!("{{\"token\": \"{CLIENT_TOKEN}\", \"expiry_millis\": 1000}}"),
    )
    .expect("write");
    std::fs::set_permissions(&expiring, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stderr) = run(&expiring);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("expiry_millis: the operator token \"_admin\" never expires"),
        "{stderr}"
    );
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(dir.path().join("admin-token.json"), &link).expect("symlink");
    let (code, stderr) = run(&link);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("links are not followed"), "{stderr}");
}

#[test]
fn disable_authz_opens_only_the_paths_it_names() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_checking(dir.path(), "", &["--disable-authz", "health"]);
    assert_eq!(call(db.addr, "GET", "/health", &[], "").0, 200);
    assert_eq!(call(db.addr, "GET", "/ping", &[], "").0, 401);
    drop(db);

    let bad = tempfile::tempdir().expect("a temp dir");
    std::fs::write(bad.path().join("plugins.toml"), "").expect("write");
    std::fs::write(
        bad.path().join("tsdb.toml"),
        "plugins = \"plugins.toml\"\ndisable_authz = [\"health\", \"metrics\"]\n",
    )
    .expect("write");
    let (code, stderr) = exit_of(
        bad.path(),
        &[
            "--config".as_ref(),
            bad.path().join("tsdb.toml").as_os_str(),
        ],
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("field `disable_authz`: \"metrics\" is not `health` or `ping`"),
        "{stderr}"
    );
}

/// A file naming its token (not the operator's): the operator token may then not be
/// made by whoever asks, or anyone could take a token no admin could revoke.
#[test]
fn with_a_named_token_from_a_file_no_one_may_make_the_operator_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("named.json");
    std::fs::write(
        &file,
        format!("{{\"token\": \"{CLIENT_TOKEN}\", \"name\": \"ci\"}}"),
    )
    .expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = file.display().to_string();
    let db = start_checking(dir.path(), "", &["--admin-token-file", &file]);
    let (status, answer) = call(db.addr, "POST", "/api/v3/configure/token/admin", &[], "");
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("tokens exist already"), "{answer}");
    let auth = format!("authorization: Bearer {CLIENT_TOKEN}");
    let (status, answer) = call(db.addr, "GET", "/ping", &[auth.as_str()], "");
    assert_eq!(status, 200, "{answer}");
}
