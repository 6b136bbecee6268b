//! `max_processes` through the pids cgroup controller: each generation runs in a cgroup
//! of its own, beneath the host's, whose `pids.max` bounds its processes and threads
//! together, for that generation alone. RLIMIT_NPROC cannot: it counts every process of
//! the plugin's real uid (the host's own threads, for a plugin without a `user`) and
//! binds no root process at all.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The host's own pids cgroup, where generations' cgroups are made, or why there is none.
static BASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Numbers every cgroup this process makes, so that no two ever share a name: a
/// plugin removed and added again starts its generations at 1 again, and the old
/// one's pending removal must not find the new one's cgroup under the same name.
static MADE: AtomicU64 = AtomicU64::new(0);

/// Removals still waiting in the background for their cgroup to empty.
static PENDING_REMOVALS: AtomicUsize = AtomicUsize::new(0);

/// At most this many removals wait at once (each on a thread of its own, for at most
/// [`REMOVAL_TRIES`] × [`REMOVAL_PAUSE`]); past it, a cgroup that is not yet empty is
/// left to the warning and to the next host's [`clear_stale`].
const MAX_PENDING_REMOVALS: usize = 64;
const REMOVAL_TRIES: u32 = 100;
const REMOVAL_PAUSE: Duration = Duration::from_millis(50);

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
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "baton-{}-{tag}.{number}.{made}",
            std::process::id()
        ));
        // A directory already there is not this one's to take or delete (AlreadyExists).
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
        for _ in 0..REMOVAL_TRIES {
            if removed(&self.dir) {
                return;
            }
            tokio::time::sleep(REMOVAL_PAUSE).await;
        }
        cannot_remove(&self.dir);
    }
}

impl Drop for PidsCgroup {
    /// A start that is cancelled drops its cgroup right after its processes were sent
    /// SIGKILL, while they are still in it (EBUSY): the removal then goes on in the
    /// background until they are gone, bounded in time and in number.
    fn drop(&mut self) {
        if removed(&self.dir) {
            return;
        }
        if PENDING_REMOVALS.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_REMOVALS {
            PENDING_REMOVALS.fetch_sub(1, Ordering::Relaxed);
            cannot_remove(&self.dir);
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        let spawned = std::thread::Builder::new()
            .name("baton-cgroup-rm".into())
            .spawn(move || {
                let gone = (0..REMOVAL_TRIES).any(|_| {
                    std::thread::sleep(REMOVAL_PAUSE);
                    removed(&dir)
                });
                if !gone {
                    cannot_remove(&dir);
                }
                PENDING_REMOVALS.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            PENDING_REMOVALS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether `dir` is gone, removing it if it can be.
fn removed(dir: &Path) -> bool {
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

fn cannot_remove(dir: &Path) {
    tracing::warn!(
        "cannot remove {}: processes are still in it (removed at the next host's start \
         once they are gone)",
        dir.display()
    );
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
        if controllers.split(',').any(|c| c == "pids") {
            if let Some(mount) = mount_point(&mounts, "cgroup", Some("pids")) {
                found = Some((mount.join_cgroup(path), false));
                break;
            }
        } else if id == "0"
            && controllers.is_empty()
            && let Some(mount) = mount_point(&mounts, "cgroup2", None)
        {
            found.get_or_insert((mount.join_cgroup(path), true));
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

/// A cgroup filesystem's mount: `root`, the cgroup it shows at `at` (mountinfo's
/// fourth field; not `/` in a container that bind-mounts its own cgroup without a
/// cgroup namespace).
#[derive(Debug, PartialEq)]
struct Mount {
    root: String,
    at: PathBuf,
}

impl Mount {
    /// Where the cgroup `path` (from /proc/self/cgroup) is under this mount.
    fn join_cgroup(&self, path: &str) -> PathBuf {
        let inside = match path.strip_prefix(self.root.trim_end_matches('/')) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => path,
        };
        self.at.join(inside.trim_start_matches('/'))
    }
}

/// The first `fstype` mount (whose super options include `option`).
fn mount_point(mountinfo: &str, fstype: &str, option: Option<&str>) -> Option<Mount> {
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
        let mut left = left.split_whitespace();
        let root = left.nth(3)?.to_owned();
        Some(Mount {
            root,
            at: PathBuf::from(left.next()?),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_path_is_found_below_its_mounts_root() {
        let mountinfo = "39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let v1 = mount_point(mountinfo, "cgroup", Some("pids")).expect("the pids mount");
        // The container sees /docker/abc at its mount point, not below it.
        assert_eq!(
            v1.join_cgroup("/docker/abc/sub"),
            PathBuf::from("/sys/fs/cgroup/pids/sub")
        );
        assert_eq!(
            v1.join_cgroup("/docker/abc"),
            PathBuf::from("/sys/fs/cgroup/pids")
        );
        // A path outside the root (not a prefix by whole components) is taken as it is.
        assert_eq!(
            v1.join_cgroup("/docker/abcd"),
            PathBuf::from("/sys/fs/cgroup/pids/docker/abcd")
        );
        let v2 = mount_point(mountinfo, "cgroup2", None).expect("the unified mount");
        assert_eq!(
            v2.join_cgroup("/a/b"),
            PathBuf::from("/sys/fs/cgroup/unified/a/b")
        );
    }

    #[test]
    fn cgroup_names_never_repeat_and_an_existing_directory_is_never_taken() {
        let Ok(base) = BASE.get_or_init(probe) else {
            eprintln!("skipped: no pids cgroup here");
            return;
        };
        let first = PidsCgroup::create("again", 1, 8).expect("a cgroup");
        let second = PidsCgroup::create("again", 1, 8).expect("a cgroup");
        assert_ne!(first.dir, second.dir);
        assert!(first.dir.starts_with(base));
        // The name the next one would get, made by someone else first.
        let next = MADE.load(Ordering::Relaxed);
        let taken = base.join(format!("baton-{}-again.1.{next}", std::process::id()));
        std::fs::create_dir(&taken).expect("a directory in the way");
        assert!(PidsCgroup::create("again", 1, 8).is_err());
        assert!(taken.is_dir(), "a directory not its own was removed");
        let _ = std::fs::remove_dir(&taken);
    }
}
