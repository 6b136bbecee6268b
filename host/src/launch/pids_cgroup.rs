//! `max_processes` through the pids cgroup controller: each generation runs in a cgroup
//! of its own, beneath the host's, whose `pids.max` bounds its processes and threads
//! together, for that generation alone. RLIMIT_NPROC cannot: it counts every process of
//! the plugin's real uid (the host's own threads, for a plugin without a `user`) and
//! binds no root process at all.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The host's own pids cgroup, where generations' cgroups are made, or why there is none.
static BASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The cgroup of one generation; removed when dropped, once it is empty.
#[derive(Debug)]
pub(super) struct PidsCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, ready for [`enter`] between fork and exec.
    procs: CString,
}

impl PidsCgroup {
    /// Makes the cgroup of generation `number` of the plugin tagged `tag`, with room for
    /// `max` processes and threads; says why it cannot when the host has no pids cgroup
    /// it may write.
    pub(super) fn create(tag: &str, number: u64, max: u64) -> Result<Self, String> {
        let base = BASE.get_or_init(probe).as_ref().map_err(Clone::clone)?;
        let dir = base.join(format!("baton-{}-{tag}.{number}", std::process::id()));
        // Left by an earlier generation of this number that did not empty in time.
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let made = Self {
            procs: CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(|e| format!("{}: {e}", dir.display()))?,
            dir,
        };
        std::fs::write(made.dir.join("pids.max"), max.to_string())
            .map_err(|e| format!("cannot write {}/pids.max: {e}", made.dir.display()))?;
        Ok(made)
    }

    /// The path the child writes itself into.
    pub(super) fn procs(&self) -> &std::ffi::CStr {
        &self.procs
    }

    /// How many forks (and new threads) were refused at the limit, from `pids.events`.
    pub(super) fn refused(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup, retrying for a while: the kernel lets go of a namespace's
    /// last processes a moment after its init has been reaped.
    pub(super) async fn remove(&self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::warn!(
            "cannot remove {}: processes are still in it",
            self.dir.display()
        );
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// In the child between fork and exec: moves the calling process into the cgroup whose
/// `cgroup.procs` is `procs` ("0" names the writer). Async-signal-safe: open, write, close.
pub(super) fn enter(procs: &std::ffi::CStr) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain system calls on a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, c"0".as_ptr().cast(), 1);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Finds the host's own pids cgroup: in the v1 `pids` hierarchy, or in cgroup v2 when
/// its controller can be handed to children. Clears cgroups left by killed hosts.
fn probe() -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mut found = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            if let Some(mount) = mount_point(&mounts, "cgroup", Some("pids")) {
                found = Some((mount.join(path), false));
                break;
            }
        } else if id == "0"
            && controllers.is_empty()
            && let Some(mount) = mount_point(&mounts, "cgroup2", None)
        {
            found.get_or_insert((mount.join(path), true));
        }
    }
    let (base, v2) = found.ok_or("no pids cgroup controller is mounted for this process")?;
    if v2 {
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", base.display()))?;
        if !controllers.split_whitespace().any(|c| c == "pids") {
            return Err(format!(
                "the pids controller is not enabled for {} (cgroup v2)",
                base.display()
            ));
        }
        // Refused (EBUSY) when the host's cgroup holds processes and is not the root:
        // systemd's `Delegate=` gives the host a subtree it can use.
        std::fs::write(base.join("cgroup.subtree_control"), "+pids").map_err(|e| {
            format!(
                "cannot hand the pids controller to cgroups beneath {}: {e}",
                base.display()
            )
        })?;
    }
    clear_stale(&base);
    Ok(base)
}

/// The mount point of the first `fstype` mount (whose super options include `option`).
fn mount_point(mountinfo: &str, fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != fstype {
            return None;
        }
        let supers = right.nth(1).unwrap_or("");
        if option.is_some_and(|o| !supers.split(',').any(|s| s == o)) {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Removes empty cgroups named for hosts that are no longer running.
fn clear_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("baton-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}
