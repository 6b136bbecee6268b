//! A checkpoint the plugin's `Restore` refuses: the next older one is tried, each
//! refusal is named, the refused file is kept aside where the pruner never counts it,
//! and "started empty" is said only when none was accepted. A process that dies in
//! `Restore` refused nothing: its checkpoint stays where it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_tests::{TestHost, plugin, wait_until};

/// Checkpoints faulty by stopping it (a stop takes one, and answers once it is on disk),
/// then starts it again from its newest checkpoint: with an hour between periodic ones,
/// each checkpoint here is one the test asked for.
fn checkpoint_and_restart(host: &TestHost) {
    let (stopped, out, err) = host.ctl(&["stop", "faulty"]);
    assert!(stopped, "ctl stop faulty failed: {out}{err}");
    let (started, out, err) = host.ctl(&["start", "faulty"]);
    assert!(started, "ctl start faulty failed: {out}{err}");
}

/// Counts faulty up to 5, checkpoints, then up to 7 and checkpoints again: its directory
/// then holds exactly a checkpoint of 5 and the newer one of 7, which is returned.
async fn checkpoints_of_five_and_seven(state: &Path) -> PathBuf {
    let mut host = TestHost::start(&config(state, "accept")).await;
    for _ in 0..5 {
        host.call_text("faulty", "hit", "").await;
    }
    checkpoint_and_restart(&host);
    for _ in 0..2 {
        host.call_text("faulty", "hit", "").await;
    }
    checkpoint_and_restart(&host);
    host.kill();
    let files = checkpoint_files(&state.join("faulty"));
    let counts: Vec<u64> = files.iter().map(|f| count_in(f)).collect();
    assert_eq!(counts, [5, 7], "{files:?}");
    files[1].clone()
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
            &format!(
                "checkpoint_interval_ms = 3600000\nenv = {{ FAULTY_RESTORE = \"{restore}\" }}\n"
            ),
        )
    )
}

#[tokio::test]
async fn a_refused_checkpoint_falls_back_to_an_older_one_and_is_kept_aside() {
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().join("faulty");
    let newest = checkpoints_of_five_and_seven(state.path()).await;
    let seven = std::fs::read(&newest).expect("read the newest");

    // A build whose own check refuses more than 6: the newest is refused, by name,
    // and the older one it accepts is where it starts.
    let mut host = TestHost::start(&config(state.path(), "refuse-above:6")).await;
    assert_eq!(host.call_text("faulty", "hit", "").await, "6");
    let name = newest.file_name().and_then(|n| n.to_str()).expect("a name");
    let log = host.log();
    assert!(
        log.contains(&format!("refused the checkpoint {}", newest.display()))
            && log.contains("faulty refuses a count of 7: more than 6"),
        "the refusal is not named: {log}"
    );
    assert!(!log.contains("EMPTY state"), "{log}");

    // Kept aside, byte for byte, however many checkpoints come after: four, one more
    // than the pruner keeps.
    for _ in 0..4 {
        checkpoint_and_restart(&host);
    }
    let aside = dir.join("refused").join(name);
    assert_eq!(std::fs::read(&aside).expect("the refused file"), seven);
    assert!(
        !newest.exists(),
        "the refused file is still among the good ones"
    );
    let counts: Vec<u64> = checkpoint_files(&dir).iter().map(|f| count_in(f)).collect();
    assert_eq!(counts, [6, 6, 6]);
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
    assert_eq!(kept, 1 + 3);
    assert!(checkpoint_files(&dir).is_empty());
}
#[tokio::test]
async fn a_plugin_dying_in_restore_leaves_its_checkpoint_in_place() {
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().join("faulty");
    let newest = checkpoints_of_five_and_seven(state.path()).await;
    let seven = std::fs::read(&newest).expect("read the newest");

    // A build that aborts (as a segfault or an OOM kill would) when given the 7: no
    // answer, so nothing is said about the checkpoint; the death is a crash, and each
    // start offers the 7 again.
    let mut host = TestHost::start(&config(state.path(), "crash-above:5")).await;
    wait_until(
        "faulty restarted after dying in Restore twice (or the 7 taken for a refusal)",
        Duration::from_secs(30),
        || async {
            (host.status("faulty").await.restarts >= 2
                || host.log().contains("refused the checkpoint"))
            .then_some(())
        },
    )
    .await;
    host.kill();
    let log = host.log();
    assert!(
        !log.contains("refused the checkpoint") && !log.contains("EMPTY state"),
        "a death in Restore was taken for a refusal: {log}"
    );
    assert!(
        log.contains(&format!(
            "died while restoring the checkpoint in {}",
            newest.display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&newest).expect("the 7 is where it was"),
        seven
    );
    assert!(!dir.join("refused").exists(), "something was set aside");

    // A build that accepts it starts from it: no update is lost.
    let host = TestHost::start(&config(state.path(), "accept")).await;
    assert_eq!(host.call_text("faulty", "hit", "").await, "8");
}
