use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const LIMIT: u64 = 1 << 20;

async fn save(store: &mut CheckpointStore, n: u8) -> Result<Taken, TakeError> {
    let chunks = baton_proto::state::chunks(1, Bytes::from(vec![n; 100]));
    let stream = tokio_stream::iter(chunks.map(Ok));
    store
        .take_stream("p", async move { Ok(stream) }, LIMIT, || {})
        .await
}

async fn saved(store: &mut CheckpointStore, n: u8) -> PathBuf {
    match save(store, n).await {
        Ok(Taken { file: Some(f), .. }) => f,
        other => panic!("checkpoint {n} was not written: {other:?}"),
    }
}

fn own_files(dir: &Path) -> Vec<PathBuf> {
    file::list(dir)
        .expect("list")
        .own
        .into_iter()
        .map(|f| f.path)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

fn newest(loaded: &Loaded) -> u8 {
    loaded.checkpoint.as_ref().expect("a checkpoint").0.state[0]
}

#[tokio::test]
async fn saves_load_newest_and_keep_a_few() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("state").join("counter");
    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    for n in 1..=5 {
        saved(&mut store, n).await;
    }
    assert_eq!(own_files(&plugin_dir).len(), KEEP);
    let loaded = store.load(LIMIT).await;
    assert_eq!(newest(&loaded), 5);
    assert!(loaded.skipped.is_empty());
    // Private: the directories the host made, and every file.
    assert_eq!(mode(&plugin_dir), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    for f in own_files(&plugin_dir) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[tokio::test]
async fn strangers_are_left_alone_and_the_sequence_is_the_hosts_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("p");
    std::fs::create_dir(&plugin_dir).expect("mkdir");
    for junk in ["zzz-1.ckpt", "zzz-2.ckpt", "zzz-3.ckpt"] {
        std::fs::write(plugin_dir.join(junk), b"junk").expect("junk");
    }
    // A host file's name, but not its header.
    let liar = plugin_dir.join(file::file_name(999));
    std::fs::write(&liar, b"BTNCKPT2 and then nothing useful at all......").expect("liar");

    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    let first = saved(&mut store, 1).await;
    assert!(first.ends_with(file::file_name(1)), "{}", first.display());
    let notices: Vec<_> = store
        .take_notices()
        .into_iter()
        .filter(|n| n.kind == "checkpoint_stranger")
        .collect();
    assert_eq!(notices.len(), 4, "{notices:?}");
    assert!(notices.iter().any(|n| n.message.contains("zzz-2.ckpt")));
    for n in 2..=4 {
        saved(&mut store, n).await;
    }
    // Named once, not at every checkpoint; never deleted.
    assert!(store.take_notices().is_empty());
    for junk in ["zzz-1.ckpt", "zzz-2.ckpt", "zzz-3.ckpt"] {
        assert!(plugin_dir.join(junk).exists(), "{junk} was removed");
    }
    assert!(liar.exists());
    assert_eq!(own_files(&plugin_dir).len(), KEEP);

    // A new store (a host restart) continues the sequence from the disk.
    let mut next = CheckpointStore::new(Some(plugin_dir.clone()));
    assert_eq!(newest(&next.load(LIMIT).await), 4);
    let fifth = saved(&mut next, 5).await;
    assert!(fifth.ends_with(file::file_name(5)), "{}", fifth.display());
}

#[tokio::test]
async fn corrupt_truncated_and_oversized_files_are_named_and_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = CheckpointStore::new(Some(dir.path().to_owned()));
    saved(&mut store, 1).await;
    let newest_file = saved(&mut store, 2).await;
    let mut bytes = std::fs::read(&newest_file).expect("read");
    bytes[file::HEADER + 10] ^= 0xff;
    std::fs::write(&newest_file, &bytes).expect("corrupt");
    let loaded = store.load(LIMIT).await;
    assert_eq!(newest(&loaded), 1);
    assert!(
        matches!(&loaded.skipped[..], [(_, Unusable::Corrupt(why))] if why.contains("checksum mismatch")),
        "{:?}",
        loaded.skipped
    );

    std::fs::write(&newest_file, &bytes[..file::HEADER + 5]).expect("truncate");
    assert!(
        matches!(&store.load(LIMIT).await.skipped[0].1, Unusable::Corrupt(why) if why.contains("truncated"))
    );

    // A limit lowered below a stored state refuses that file by its header alone.
    let loaded = store.load(50).await;
    assert!(loaded.checkpoint.is_none());
    assert!(loaded.skipped.contains(&(
        own_files(dir.path())[0].clone(),
        Unusable::TooLarge { len: 100 }
    )));
}

#[tokio::test]
async fn a_failed_write_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("p");
    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    saved(&mut store, 7).await;
    // The data goes to /dev/full: the kernel's own ENOSPC, as on a full disk.
    store.disk_full = true;
    match save(&mut store, 8).await {
        Err(TakeError::Write(e)) => assert!(e.contains("No space left on device"), "{e}"),
        other => panic!("expected a write error, got {other:?}"),
    }
    assert_eq!(newest(&store.load(LIMIT).await), 7);
    assert_eq!(own_files(&plugin_dir).len(), 1);
    let names: Vec<_> = std::fs::read_dir(&plugin_dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "the temp file is left behind: {names:?}");
    // And the next save, with space again, works.
    store.disk_full = false;
    saved(&mut store, 9).await;
    assert_eq!(newest(&store.load(LIMIT).await), 9);
}

#[tokio::test]
async fn a_symlink_is_never_followed_and_an_open_directory_is_tightened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("p");
    std::fs::create_dir(&plugin_dir).expect("mkdir");
    std::fs::set_permissions(&plugin_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    std::os::unix::fs::symlink(&victim, plugin_dir.join(".ckpt-00000000000000000001.tmp"))
        .expect("plant a symlink at the temp name");

    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    saved(&mut store, 1).await;
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(mode(&plugin_dir), 0o700);
    let notices = store.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.kind == "checkpoint_dir" && n.message.contains("0755")),
        "{notices:?}"
    );

    // A plugin directory that is itself a symlink is refused.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let linked = dir.path().join("linked");
    std::os::unix::fs::symlink(&elsewhere, &linked).expect("symlink");
    let mut store = CheckpointStore::new(Some(linked));
    match save(&mut store, 1).await {
        Err(TakeError::Write(e)) => assert!(e.contains("is a symbolic link"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);
}

#[tokio::test]
async fn a_state_over_the_limit_is_cut_off_naming_the_key() {
    let mut store = CheckpointStore::new(None);
    let chunks = baton_proto::state::chunks(1, Bytes::from(vec![0u8; 1000]));
    let stream = tokio_stream::iter(chunks.map(Ok));
    match store
        .take_stream("big", async move { Ok(stream) }, 999, || {})
        .await
    {
        Err(TakeError::Snapshot(e)) => assert!(
            e.contains("max_state_bytes = 999") && e.contains("plugins.big.max_state_bytes"),
            "{e}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.latest().is_none());
}

#[tokio::test]
async fn refused_files_are_kept_aside_and_their_numbers_never_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("p");
    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    let mut aside = Vec::new();
    for n in 1..=3 {
        let file = saved(&mut store, n).await;
        match store.set_aside(&file).await {
            Ok(SetAside::Kept(kept)) => aside.push(kept),
            other => panic!("{} not kept aside: {other:?}", file.display()),
        }
    }
    // Out of the loaded and pruned files.
    assert!(own_files(&plugin_dir).is_empty());
    assert!(store.load(LIMIT).await.checkpoint.is_none());
    assert!(aside.iter().all(|f| f.exists()));
    assert_eq!(mode(&plugin_dir.join(REFUSED_DIR)), 0o700);

    // A new host (a new store) numbers past the refused ones: none is overwritten.
    let mut next = CheckpointStore::new(Some(plugin_dir.clone()));
    let file = saved(&mut next, 42).await;
    let name = file.file_name().expect("a name");
    assert!(!plugin_dir.join(REFUSED_DIR).join(name).exists());
    assert!(aside.last().expect("one").file_name() < Some(name));
}

#[tokio::test]
async fn a_full_refused_directory_keeps_its_first_refusals_and_removes_the_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("p");
    let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
    // A good checkpoint older than any refused one, refused later during a fallback.
    let oldest = saved(&mut store, 0).await;
    let mut first = Vec::new();
    for n in 1..=KEEP_REFUSED as u8 {
        let file = saved(&mut store, n).await;
        match store.set_aside(&file).await {
            Ok(SetAside::Kept(kept)) => first.push(kept),
            other => panic!("{} not kept aside: {other:?}", file.display()),
        }
    }
    // Newer refusals (a build refusing its own checkpoints while crash-looping, a
    // rollback cycle) and an older one: each removed and said so, the first ones kept.
    let newer = saved(&mut store, 100).await;
    for refused in [newer, oldest] {
        assert_eq!(
            store.set_aside(&refused).await,
            Ok(SetAside::Removed(refused.clone()))
        );
        assert!(!refused.exists(), "{} was left in place", refused.display());
    }
    assert!(
        first.iter().all(|f| f.exists()),
        "a first refusal was evicted"
    );
    let kept = std::fs::read_dir(plugin_dir.join(REFUSED_DIR))
        .expect("the refused directory")
        .count();
    assert_eq!(kept, KEEP_REFUSED);
    assert!(own_files(&plugin_dir).is_empty());
}
