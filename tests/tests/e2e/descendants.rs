//! Nothing a plugin starts outlives its generation: not a child that ignores SIGTERM in
//! the plugin's process group, not one in a session of its own (`setsid`), not after a
//! reload, a graceful stop or a SIGKILL of the host; and what such a child holds open
//! of the plugin's pipes costs the host nothing once the generation is gone.

use std::time::Duration;

use baton_proto::host::ReloadRequest;
use baton_tests::{TestHost, bin, fd_count, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Live processes carrying `BATON_TEST_MARK=<mark>`; killed when dropped, so a failed
/// test leaves nothing behind either.
struct Marked(String);

impl Marked {
    fn new(test: &str) -> Self {
        Self(format!("{test}-{}", std::process::id()))
    }

    fn pids(&self) -> Vec<u32> {
        let wanted = format!("BATON_TEST_MARK={}", self.0);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|entry| entry == wanted.as_bytes())
                })
            })
            .collect()
    }

    /// Asks the plugin for its two SIGTERM-proof children; waits until both run.
    async fn start_in(&self, host: &TestHost) {
        host.call_text("faulty", "descendants", &self.0).await;
        wait_until("both children run", Duration::from_secs(5), || async {
            (self.pids().len() == 2).then_some(())
        })
        .await;
    }

    async fn all_gone(&self, after: &str) {
        wait_until(
            &format!("no child of the plugin is left after {after}"),
            Duration::from_secs(10),
            || async { self.pids().is_empty().then_some(()) },
        )
        .await;
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Waits until the host holds at most two descriptors more than `before`.
async fn descriptors_settle(host: &TestHost, before: usize) {
    wait_until(
        &format!("the host's descriptors settle (from {before})"),
        Duration::from_secs(5),
        || async { (fd_count(host.pid()) <= before + 2).then_some(()) },
    )
    .await;
}

fn faulty() -> String {
    format!(
        "[plugins.faulty]\ncommand = \"{}\"\nargs = [\"ok\"]\nreload = \"manual\"\nshutdown_grace_ms = 500\n",
        bin("faulty").display()
    )
}

async fn reload(host: &TestHost) {
    host.client()
        .reload(ReloadRequest {
            plugin: "faulty".into(),
        })
        .await
        .expect("a reload");
}

#[tokio::test]
async fn a_reload_and_a_graceful_stop_leave_no_descendant_and_no_descriptor_behind() {
    let mut host = TestHost::start(&faulty()).await;
    let first = Marked::new("reload");
    first.start_in(&host).await;
    reload(&host).await;
    first.all_gone("a reload").await;

    // Each retired generation's pipes are closed, although its setsid child held stderr.
    let before = fd_count(host.pid());
    let mut marks = Vec::new();
    for n in 0..10 {
        let mark = Marked::new(&format!("fds{n}"));
        mark.start_in(&host).await;
        reload(&host).await;
        marks.push(mark);
    }
    for mark in &marks {
        mark.all_gone("ten reloads").await;
    }
    descriptors_settle(&host, before).await;

    let last = Marked::new("stop");
    last.start_in(&host).await;
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
    last.all_gone("a graceful stop of the host").await;
}

#[tokio::test]
async fn a_host_killed_by_sigkill_takes_every_descendant_of_its_plugins() {
    let mut host = TestHost::start(&faulty()).await;
    let mark = Marked::new("sigkill");
    mark.start_in(&host).await;
    host.kill();
    mark.all_gone("the host was SIGKILLed").await;
}

#[tokio::test]
async fn without_pid_namespaces_the_host_says_so_and_a_retired_generations_pipes_still_close() {
    let Some(nobody) = baton_tests::nobody_when_root("this test starts the host as another user")
    else {
        return;
    };
    // Not root, so no PID namespaces: the process-group fallback.
    let host = TestHost::start_as(&faulty(), (nobody.uid.as_raw(), nobody.gid.as_raw())).await;
    wait_until(
        "the host names the fallback",
        Duration::from_secs(5),
        || async {
            host.log()
                .contains("plugins run without PID namespaces")
                .then_some(())
        },
    )
    .await;
    // Setsid children survive there (the documented limit), but the pipes they hold
    // cost the host nothing once their generation is gone.
    let warm = Marked::new("fallback-warm");
    warm.start_in(&host).await;
    reload(&host).await;
    let before = fd_count(host.pid());
    let mut marks = Vec::new();
    for n in 0..10 {
        let mark = Marked::new(&format!("fallback{n}"));
        mark.start_in(&host).await;
        reload(&host).await;
        marks.push(mark);
    }
    descriptors_settle(&host, before).await;
}
