//! Which step failed in a child between fork and exec. std hands the parent only the
//! errno of a failed `pre_exec`, and "Operation not permitted" alone does not say
//! whether the cgroup, a limit or the change of user refused; so the child writes the
//! step's number into a pipe of its own (one byte, async-signal-safe) before it fails.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The steps a child takes before exec, each named as the operator knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    Cgroup = 1,
    OpenFiles,
    FileBytes,
    Processes,
    Groups,
    Gid,
    Uid,
    Cwd,
}

impl Step {
    const ALL: [Step; 8] = [
        Step::Cgroup,
        Step::OpenFiles,
        Step::FileBytes,
        Step::Processes,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Cwd,
    ];

    /// What the step was, for the start error.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::Cgroup => "entering its pids cgroup (max_processes)",
            Step::OpenFiles => "setting its open-files limit (max_open_files, RLIMIT_NOFILE)",
            Step::FileBytes => "setting max_file_bytes (RLIMIT_FSIZE)",
            Step::Processes => "setting max_processes (RLIMIT_NPROC)",
            Step::Groups => "dropping the host's supplementary groups",
            Step::Gid => "switching to its group",
            Step::Uid => "switching to its user",
            Step::Cwd => "entering its working directory as its user",
        }
    }
}

/// The pipe a child reports its failed step on; a successful exec closes it unwritten.
pub(super) struct StepReport {
    read: OwnedFd,
    write: OwnedFd,
}

impl StepReport {
    pub(super) fn new() -> std::io::Result<Self> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Self { read, write })
    }

    /// The end the child writes to.
    pub(super) fn writer(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// The step the child said failed, once its spawn has failed.
    pub(super) fn failed(&self) -> Option<Step> {
        let mut byte = [0u8; 1];
        match nix::unistd::read(&self.read, &mut byte) {
            Ok(1) => Step::ALL.into_iter().find(|s| *s as u8 == byte[0]),
            _ => None,
        }
    }

    /// `source` (a failed spawn) with the step the child was taking, if it said.
    pub(super) fn explain(&self, source: std::io::Error) -> std::io::Error {
        match self.failed() {
            Some(step) => {
                std::io::Error::new(source.kind(), format!("{}: {source}", step.describe()))
            }
            None => source,
        }
    }
}

/// In the child: `result` of `step`, reported on `fd` when it failed. Async-signal-safe.
pub(super) fn report(fd: RawFd, step: Step, result: std::io::Result<()>) -> std::io::Result<()> {
    if result.is_err() {
        let byte = [step as u8];
        // SAFETY: a write of one byte from the stack; its outcome changes nothing.
        unsafe {
            nix::libc::write(fd, byte.as_ptr().cast(), 1);
        }
    }
    result
}
