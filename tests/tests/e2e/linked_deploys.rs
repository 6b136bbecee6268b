//! Deploys that change a plugin's binary by flipping a symbolic link on its path (as
//! Kubernetes updates ConfigMaps and projected volumes: a new directory, then `..data`
//! renamed over) are noticed by the native watcher like any other change.

use std::path::Path;
use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, wait_until};

/// Makes `dir/<release>/counter` and points `dir/..data` at it the way the kubelet does:
/// a temporary link renamed over the old one.
fn release(dir: &Path, release: &str) {
    let target = dir.join(release);
    std::fs::create_dir(&target).expect("the release directory");
    std::fs::copy(bin("counter"), target.join("counter")).expect("the binary");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(release, &tmp).expect("the new link");
    std::fs::rename(&tmp, dir.join("..data")).expect("flip ..data");
}

#[tokio::test]
async fn a_flipped_link_on_the_binarys_path_is_a_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    release(dir.path(), "..2026_a");
    let binary = dir.path().join("counter");
    std::os::unix::fs::symlink("..data/counter", &binary).expect("the plugin's link");
    let host = TestHost::start(&format!(
        "watcher = \"native\"\n[plugins.counter]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\n",
        binary.display()
    ))
    .await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    for (n, name) in [(2, "..2026_b"), (3, "..2026_c")] {
        release(dir.path(), name);
        let status = wait_until(
            &format!("generation {n} serves after the flip to {name}"),
            Duration::from_secs(10),
            || async {
                let s = host.status("counter").await;
                (s.generation >= n && s.state == PluginState::Serving as i32).then_some(s)
            },
        )
        .await;
        assert_eq!(status.generation, n);
        assert_eq!(host.call_text("counter", "get", "k").await, "1");
    }
}
