//! A reload keeps an InfluxDB 3 plugin's cache: the new process gets every entry of
//! both scopes (instances of the plugin's own class, pickled), a time to live ends at the moment it would have without the reload, and
//! a value that cannot be pickled is named in the trigger's log and left behind.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::wait_until;
use crate::{ask, create, edit, has, logs, serving_generation, start_with_fixtures, wait_reloaded};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reloads the keeper by moving its `VERSION` from `from` to `from + 1`; done once the
/// new version answers.
fn reload(addr: std::net::SocketAddr, file: &std::path::Path, from: u64) {
    let before = serving_generation(addr, "keeper");
    edit(
        file,
        &format!("VERSION = {from}"),
        &format!("VERSION = {}", from + 1),
    );
    wait_reloaded(addr, "keeper", before);
    wait_until("the new version answers", Duration::from_secs(30), || {
        (ask(addr, "keeper?op=get&key=none")["version"] == from + 1).then_some(())
    });
}

#[test]
fn a_reload_moves_the_cache_with_its_deadlines_and_names_what_cannot_be_pickled() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let addr = db.addr;
    create(
        addr,
        "keeper",
        "cache_keeper.py",
        "request:keeper",
        Value::Null,
    );
    let file = dir.path().join("plugins/cache_keeper.py");
    serving_generation(addr, "keeper");

    // How long one reload takes on this machine now: the time to live below outlasts
    // two of them by far, so the entry is there after them however loaded we are.
    let started = Instant::now();
    reload(addr, &file, 1);
    let ttl = (started.elapsed() * 6).max(Duration::from_secs(4));

    let put = |query: &str| ask(addr, &format!("keeper?op={query}"))["put_at"].as_f64();
    let short_put_at =
        put(&format!("put&key=short&value=s&ttl={}", ttl.as_secs_f64())).expect("put_at");
    put("put&key=kept&value=k").expect("put_at");
    put("put&key=kept&value=g&global=1").expect("put_at");
    put("put_lock&key=lock").expect("put_at");

    reload(addr, &file, 2);
    let second_edit_at = unix_now();
    reload(addr, &file, 3);

    let get = |query: &str| ask(addr, &format!("keeper?op=get&{query}"));
    // Both scopes moved, each its own.
    assert_eq!(get("key=kept")["value"], "k");
    assert_eq!(get("key=kept&global=1")["value"], "g");
    assert_eq!(get("key=short&global=1")["found"], false);
    let short = get("key=short");
    assert!(
        unix_now() < short_put_at + ttl.as_secs_f64(),
        "the reloads outlasted the time to live ({ttl:?}): nothing to conclude"
    );
    assert_eq!(short["value"], "s", "{short}");
    // The lock stayed behind, named with its key and scope; the rest came.
    assert_eq!(get("key=lock")["found"], false);
    let lines = logs(addr, "keeper");
    if let Some((_, warning)) = lines.iter().find(|(_, t)| t.contains("'lock'")) {
        eprintln!("warned: {warning}");
    }
    assert!(
        has(
            &lines,
            "WARN",
            "cache: key 'lock' in the scope of trigger 'keeper' holds a lock, which cannot be pickled"
        ),
        "{lines:?}"
    );

    // The time to live ends at its deadline: not before it, and not counted again from
    // the moment the last process took the cache over.
    let expired_at = wait_until(
        "the short entry expires",
        ttl + Duration::from_secs(60),
        || (get("key=short")["found"] == false).then(unix_now),
    );
    let deadline = short_put_at + ttl.as_secs_f64();
    assert!(
        expired_at >= deadline,
        "expired {:.3} s early",
        deadline - expired_at
    );
    assert!(
        expired_at < second_edit_at + ttl.as_secs_f64(),
        "expired {:.3} s after its deadline: its time to live restarted at a reload",
        expired_at - deadline
    );
}
