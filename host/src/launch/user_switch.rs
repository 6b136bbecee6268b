//! Dropping to a plugin's own user in the child, between fork and exec, for a host that
//! forks plugins itself (no PID namespace): after the child has entered its pids cgroup
//! and set its limits, both of which need the host's privileges (`cgroup.procs` is
//! root's; only root raises a hard limit), and before it enters its working directory,
//! which it must reach as itself. std's `Command::uid` would switch before any
//! `pre_exec` closure runs.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;

use super::child_steps::{Step, report};

/// The user and group a plugin's process becomes, and the directory it then enters,
/// prepared before the fork: nothing here allocates once it runs in the child.
#[derive(Debug)]
pub(super) struct UserSwitch {
    uid: libc::uid_t,
    gid: libc::gid_t,
    cwd: Option<CString>,
}

impl UserSwitch {
    /// Becoming `uid`/`gid` with no supplementary groups (as std's `Command::uid` does,
    /// and as [`super::access`] judges), then entering `cwd`.
    pub(super) fn new(uid: u32, gid: u32, cwd: Option<&Path>) -> Result<Self, String> {
        let cwd = cwd
            .map(|dir| {
                CString::new(dir.as_os_str().as_bytes())
                    .map_err(|_| format!("the working directory {} holds a NUL", dir.display()))
            })
            .transpose()?;
        Ok(Self { uid, gid, cwd })
    }

    /// In the child between fork and exec, each failure reported on `steps`. The groups
    /// go first (only root may change them), the uid last. Async-signal-safe.
    pub(super) fn apply(&self, steps: RawFd) -> std::io::Result<()> {
        let call = |result: libc::c_int| {
            if result == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls with no pointers but a NUL-terminated path.
        unsafe {
            report(
                steps,
                Step::Groups,
                call(libc::setgroups(0, std::ptr::null())),
            )?;
            report(steps, Step::Gid, call(libc::setgid(self.gid)))?;
            report(steps, Step::Uid, call(libc::setuid(self.uid)))?;
            if let Some(cwd) = &self.cwd {
                report(steps, Step::Cwd, call(libc::chdir(cwd.as_ptr())))?;
            }
        }
        Ok(())
    }
}
