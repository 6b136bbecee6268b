//! A plugin's resource limits, set in the child between fork and exec so that its first
//! instruction already runs under them and everything it starts inherits them:
//! `max_open_files` (RLIMIT_NOFILE), `max_file_bytes` (RLIMIT_FSIZE), and `max_processes`
//! as RLIMIT_NPROC where no pids cgroup can hold it. Without `max_open_files` a plugin
//! gets the open-files limit the daemon started with, not the one it raised for itself.

use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::PluginConfig;

/// The open-files limits (soft, hard) the daemon was started with, before it raised its
/// own soft limit.
static ORDINARY_OPEN_FILES: OnceLock<(u64, u64)> = OnceLock::new();

/// Records this process's open-files limits as the ones its plugins start with: call it
/// before raising them (the daemon's many sockets are no reason for a plugin to hold
/// 20,000 descriptors).
fn remember_open_files_limit() {
    if let Ok(limits) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = ORDINARY_OPEN_FILES.set(limits);
    }
}

/// Raises this process's soft limit on open files to its hard limit: a host serves many
/// plugins, each with sockets and pipes, and the default soft limit is often 1024.
pub fn raise_descriptor_limit() {
    // Plugins start with the limit the daemon was given, not this one.
    remember_open_files_limit();
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}")
            }
        },
        _ => {}
    }
}

/// The limits one process of a plugin is started with; `None` leaves the host's.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rlimits {
    open_files: Option<(u64, u64)>,
    file_bytes: Option<u64>,
    processes: Option<u64>,
}

impl Rlimits {
    /// The limits `config` asks for. `nproc` says whether `max_processes` is to be an
    /// RLIMIT_NPROC (see [`super::pids_cgroup`] for when it is not).
    pub(super) fn of(config: &PluginConfig, nproc: bool) -> Self {
        let open_files = match config.max_open_files {
            // Soft and hard alike: a plugin may raise its soft limit to the hard one.
            Some(n) => Some((n, n)),
            None => ORDINARY_OPEN_FILES.get().copied().and_then(|(soft, _)| {
                let (now_soft, now_hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
                (now_soft != soft).then_some((soft.min(now_hard), now_hard))
            }),
        };
        Self {
            open_files,
            file_bytes: config.max_file_bytes,
            processes: config.max_processes.filter(|_| nproc),
        }
    }

    /// Why these limits cannot be given by this host, before anything is forked: a hard
    /// limit above the host's own needs privileges it does not have. Each is named by
    /// its field.
    pub(super) fn refusal(&self) -> Option<String> {
        if may_raise_hard_limits() {
            return None;
        }
        let asked = [
            (
                "max_open_files",
                Resource::RLIMIT_NOFILE,
                self.open_files.map(|(_, h)| h),
            ),
            ("max_file_bytes", Resource::RLIMIT_FSIZE, self.file_bytes),
            ("max_processes", Resource::RLIMIT_NPROC, self.processes),
        ];
        asked.into_iter().find_map(|(field, resource, want)| {
            let want = want?;
            let (_, hard) = getrlimit(resource).ok()?;
            (want > hard)
                .then(|| format!("{field} = {want} is above the host's own hard limit of {hard}"))
        })
    }

    /// Sets them on the calling process, a failure reported on `steps` with the limit
    /// that failed. Async-signal-safe (one system call each): for use between fork and
    /// exec.
    pub(super) fn apply(&self, steps: std::os::fd::RawFd) -> std::io::Result<()> {
        use super::child_steps::{Step, report};
        let set = |resource, soft, hard| setrlimit(resource, soft, hard).map_err(Into::into);
        if let Some((soft, hard)) = self.open_files {
            report(
                steps,
                Step::OpenFiles,
                set(Resource::RLIMIT_NOFILE, soft, hard),
            )?;
        }
        if let Some(bytes) = self.file_bytes {
            report(
                steps,
                Step::FileBytes,
                set(Resource::RLIMIT_FSIZE, bytes, bytes),
            )?;
        }
        if let Some(n) = self.processes {
            report(steps, Step::Processes, set(Resource::RLIMIT_NPROC, n, n))?;
        }
        Ok(())
    }
}

/// Whether this process may raise a hard limit: CAP_SYS_RESOURCE, which root holds
/// unless a container or a unit's `CapabilityBoundingSet=` took it away.
fn may_raise_hard_limits() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// What a generation runs under, to say so when it ends of one of them.
#[derive(Debug, Default)]
pub(super) struct LimitsInForce {
    pub(super) file_bytes: Option<u64>,
    pub(super) processes: Option<u64>,
    pub(super) cgroup: Option<std::sync::Arc<super::pids_cgroup::PidsCgroup>>,
}

impl LimitsInForce {
    /// The limits the plugin met, after how it ended (`exit`): a death by SIGXFSZ is
    /// `max_file_bytes`, and forks refused by its cgroup are `max_processes`.
    pub(super) fn explain(&self, exit: &std::io::Result<std::process::ExitStatus>) -> String {
        use std::os::unix::process::ExitStatusExt;
        let mut said = String::new();
        if let (Some(bytes), Ok(status)) = (self.file_bytes, exit)
            && status.signal() == Some(nix::libc::SIGXFSZ)
        {
            said.push_str(&format!(
                "; it wrote past its max_file_bytes = {bytes}, the largest file it may write"
            ));
        }
        if let (Some(max), Some(cgroup)) = (self.processes, &self.cgroup) {
            let refused = cgroup.refused();
            if refused > 0 {
                said.push_str(&format!(
                    "; {refused} of its forks or new threads were refused at max_processes = {max}"
                ));
            }
        }
        said
    }
}
