//! A checkpoint the plugin's `Restore` refuses: the next older one is tried, each
//! refusal is named, the refused file is kept aside where the pruner never counts it,
//! and "started empty" is said only when none was accepted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_tests::{EventLog, TestHost, plugin, wait_until};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits for a checkpoint of faulty whose snapshot began after `after_ms`.
async fn checkpoint_after(events: &EventLog, after_ms: u64) {
    wait_until(
        "a checkpoint taken after the last call",
        Duration::from_secs(10),
        || async {
            events
                .of_kind("checkpoint")
                .iter()
                .any(|e| e.plugin == "faulty" && e.unix_ms > after_ms)
                .then_some(())
        },
    )
    .await;
}

/// The checkpoint files (`ckpt-<sequence>.ckpt`) right in `dir`, oldest first.
fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".ckpt"))
    });
    files.sort();
    files
}

/// The count faulty saved in a checkpoint file: its state is the last 8 bytes.
fn count_in(file: &Path) -> u64 {
    let bytes = std::fs::read(file).expect("read a checkpoint");
    let tail: [u8; 8] = bytes[bytes.len() - 8..].try_into().expect("8 bytes");
    u64::from_le_bytes(tail)
}

fn config(state: &Path, restore: &str) -> String {
    format!(
        "state_dir = \"{}\"\n{}",
        state.display(),
        plugin(
            "faulty",
            "faulty",
            &["ok"],
            &format!("checkpoint_interval_ms = 300\nenv = {{ FAULTY_RESTORE = \"{restore}\" }}\n"),
        )
    )
}

#[tokio::test]
async fn a_refused_checkpoint_falls_back_to_an_older_one_and_is_kept_aside() {
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().join("faulty");

    // Checkpoints of a count of 5, then of 7.
    let mut host = TestHost::start(&config(state.path(), "accept")).await;
    let events = EventLog::start(&host).await;
    for _ in 0..5 {
        host.call_text("faulty", "hit", "").await;
    }
    checkpoint_after(&events, now_ms()).await;
    for _ in 0..2 {
        host.call_text("faulty", "hit", "").await;
    }
    checkpoint_after(&events, now_ms()).await;
    host.kill();
    let files = checkpoint_files(&dir);
    let newest = files.last().expect("a checkpoint").clone();
    assert_eq!(count_in(&newest), 7);
    assert!(
        files.iter().any(|f| count_in(f) == 5),
        "no checkpoint of 5 among {files:?}"
    );
    let seven = std::fs::read(&newest).expect("read the newest");
    // Usually one of 7; another may land before the kill on a slow machine.
    let sevens = files.iter().filter(|f| count_in(f) == 7).count();

    // A build whose own check refuses more than 5: the newest is refused, by name,
    // and the older one it accepts is where it starts.
    let mut host = TestHost::start(&config(state.path(), "refuse-above:5")).await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("faulty", "hit", "").await, "6");
    let name = newest.file_name().and_then(|n| n.to_str()).expect("a name");
    let log = host.log();
    assert!(
        log.contains(&format!("refused the checkpoint {}", newest.display()))
            && log.contains("faulty refuses a count of 7: more than 5"),
        "the refusal is not named: {log}"
    );
    assert!(!log.contains("EMPTY state"), "{log}");

    // Kept aside, byte for byte, however many checkpoints come after.
    let after = now_ms();
    wait_until(
        "four checkpoints after the start",
        Duration::from_secs(20),
        || async {
            (events
                .of_kind("checkpoint")
                .iter()
                .filter(|e| e.unix_ms > after)
                .count()
                >= 4)
                .then_some(())
        },
    )
    .await;
    let aside = dir.join("refused").join(name);
    assert_eq!(std::fs::read(&aside).expect("the refused file"), seven);
    assert!(
        !newest.exists(),
        "the refused file is still among the good ones"
    );
    for f in checkpoint_files(&dir) {
        assert_eq!(count_in(&f), 6, "{}", f.display());
    }
    host.kill();

    // A build that refuses every one: each is named, every one is kept aside, and it
    // says it starts empty.
    let host = TestHost::start(&config(state.path(), "refuse")).await;
    assert_eq!(host.call_text("faulty", "hit", "").await, "1");
    let log = host.log();
    assert!(
        log.contains("faulty starts with an EMPTY state: it refused all 3 of its checkpoints"),
        "{log}"
    );
    assert_eq!(
        log.matches("faulty refuses state schema").count(),
        3,
        "{log}"
    );
    assert!(aside.exists());
    let kept = std::fs::read_dir(dir.join("refused"))
        .expect("the refused directory")
        .count();
    assert_eq!(kept, sevens + 3);
}
