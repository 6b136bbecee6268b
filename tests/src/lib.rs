//! Helpers for baton's end-to-end tests: start a real `baton` host with real plugin
//! processes, call it, wait for conditions with deadlines, and clean up every process.

/// The example application API (`example-plugins/trigger`), what an embedder's own
/// `.proto` would be, with what the tests need around it.
pub mod trigger {
    pub use trigger_plugin::api::*;

    /// The same API as a later build changed it (`TriggerResult.total` a string, made by
    /// `tests/build.rs`): what a plugin that broke the API would describe.
    pub const CHANGED_FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/trigger_changed_descriptor.bin"));

    /// A batch of points of one series, numbered by the plugin.
    pub fn batch(series: &str, values: &[f64]) -> WriteBatch {
        WriteBatch {
            points: values
                .iter()
                .map(|&value| Point {
                    series: series.into(),
                    value,
                    sequence: 0,
                })
                .collect(),
        }
    }
}

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

mod cgroups;
mod cpuset;
mod ctl;
mod files;
mod forwarded;
mod host;
mod procs;
mod sdk_launch;
mod toolchains;

pub use cgroups::{generation_cgroups, pids_cgroup_of, pids_cgroups_usable};
pub use cpuset::Cpuset;
pub use ctl::{Watched, ctl_at, ctl_command};
pub use files::{replace_by_hard_link, replace_by_rename, rewrite_in_place, script};
pub use forwarded::{ToPlugin, through_daemon};
pub use host::{
    EventLog, Load, TestHost, baton_check, plugin, run_refused_config, run_refused_config_with_env,
    run_until_exit,
};
pub use procs::{
    alive, children_with_state, cpu_time, cpu_used_during, fd_count, process_env, rlimit_of,
    status_kib, writes_of, zombie_children,
};
pub use sdk_launch::{
    Launched, SDK_START, SDK_TEST_TOKEN, SdkPlugin, for_each_sdk, service_plugins, with_tokens,
};
pub use toolchains::{
    go_counter, go_kv, go_kv_client, tool_or_skip, trigger_python_stubs, ts_counter, venv_python,
};

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is inside target/<profile>/deps")
        .to_owned()
}

/// A workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A channel to a Unix socket.
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://test")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// The `nobody` user, when this test runs as root; `None` (with a line saying the test
/// is skipped, and why) otherwise.
pub fn nobody_when_root(why: &str) -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {why} needs root");
        return None;
    }
    Some(
        nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("the nobody user exists"),
    )
}
