//! The cache of an InfluxDB 3 plugin is checkpointed by baton: a plugin process killed
//! with SIGKILL comes back, restarted by baton, with what its cache held at the last
//! checkpoint.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::{find_trigger, rows, wait_until};
use crate::{ask, create, has, logs, serving_generation, start_with_fixtures};

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[test]
fn a_value_put_before_a_crash_is_there_after_the_restart() {
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
    serving_generation(addr, "keeper");
    ask(addr, "keeper?op=put&key=before&value=v");
    ask(addr, "keeper?op=put&key=before&value=g&global=1");
    let answered_at = unix_ns();

    // A checkpoint taken after the puts were answered holds them.
    wait_until(
        "a checkpoint after the puts",
        Duration::from_secs(60),
        || {
            let found = rows(
                addr,
                "metrics",
                "SELECT CAST(last_checkpoint AS BIGINT) AS ns FROM system.processing_engine_triggers \
                 WHERE trigger_name = 'keeper'",
            );
            (found.first()?["ns"].as_i64()? > answered_at).then_some(())
        },
    );
    let pid = find_trigger(addr, "keeper").expect("the trigger")["plugin_pid"]
        .as_u64()
        .expect("a pid");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    wait_until("baton restarts the plugin", Duration::from_secs(60), || {
        let status = find_trigger(addr, "keeper")?;
        (status["plugin_state"] == "serving" && status["plugin_pid"].as_u64()? != pid).then_some(())
    });
    let after = ask(addr, "keeper?op=get&key=before");
    assert_eq!(after["value"], "v", "{after}");
    assert_ne!(after["pid"], pid, "another process answers");
    assert_eq!(ask(addr, "keeper?op=get&key=before&global=1")["value"], "g");
    let lines = logs(addr, "keeper");
    assert!(has(&lines, "ERROR", "baton: crashed"), "{lines:?}");
}
