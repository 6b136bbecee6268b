//! Why a plugin process could not be brought to SERVING.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::logs::StderrExcerpt;

/// Why a process could not be brought to SERVING.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program could not be executed.
    #[error("cannot run {}: {source}", command.display())]
    Spawn {
        /// The program.
        command: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host ran short of descriptors, memory or processes while starting it: not
    /// the plugin's doing, so not counted as its crash.
    #[error("the host could not start {}: {what}: {source}", command.display())]
    HostShort {
        /// The program.
        command: PathBuf,
        /// What the host was doing.
        what: String,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
    /// A directory the plugin needs is closed to its user: the host's setup or the
    /// config, not the plugin, so not counted as its crash.
    #[error("{what} {} is closed to user {user}: {closed}; {fix}", path.display())]
    Closed {
        /// What the directory is for the plugin.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The plugin's user, as configured.
        user: String,
        /// Where the way is closed.
        closed: super::access::Closed,
        /// What the operator can do.
        fix: String,
    },
    /// The binary failed a production or pin check.
    #[error("refused to run {}: {why}", path.display())]
    Refused {
        /// The configured binary.
        path: PathBuf,
        /// Which check failed.
        why: String,
    },
    /// The handshake went wrong; the text says what was expected and what came.
    #[error("{0}")]
    Handshake(String),
    /// The build does not serve what the config requires of it (`services`, or a
    /// service incompatible with `api_descriptors`): starting it again cannot help.
    #[error("{0}")]
    Mismatch(String),
    /// It exited while starting.
    #[error("exited during start-up ({status}){hint}{}", stderr_suffix(.stderr))]
    Exited {
        /// How it exited.
        status: String,
        /// Before its handshake line: that it printed none, and what it may need.
        hint: String,
        /// Its first error line and last lines of stderr.
        stderr: StderrExcerpt,
    },
    /// It did not finish starting in time.
    #[error("{what} within {timeout:?}{}", stderr_suffix(.stderr))]
    Timeout {
        /// What it failed to do.
        what: String,
        /// The limit.
        timeout: Duration,
        /// Its first error line and last lines of stderr.
        stderr: StderrExcerpt,
    },
}

impl StartError {
    /// A failed start of `command` while doing `what`: the host's shortage, or the
    /// program's problem.
    pub(super) fn spawn(command: &Path, what: &str, source: std::io::Error) -> Self {
        use nix::errno::Errno;
        let short = source.raw_os_error().is_some_and(|code| {
            // A full disk is where the host keeps its private copy of the binary.
            [
                Errno::EMFILE,
                Errno::ENFILE,
                Errno::ENOMEM,
                Errno::EAGAIN,
                Errno::ENOSPC,
                Errno::EDQUOT,
            ]
            .contains(&Errno::from_raw(code))
        });
        if short {
            return Self::HostShort {
                command: command.to_owned(),
                what: if what.is_empty() {
                    "cannot start the process"
                } else {
                    what
                }
                .to_owned(),
                source,
            };
        }
        let source = if what.is_empty() {
            source
        } else {
            std::io::Error::new(source.kind(), format!("{what}: {source}"))
        };
        Self::Spawn {
            command: command.to_owned(),
            source,
        }
    }

    /// Whether the build and its config disagree, which no restart can mend.
    pub fn is_config_mismatch(&self) -> bool {
        matches!(self, Self::Mismatch(_))
    }

    /// Whether the host or its setup, not the plugin, is why it did not start.
    pub fn is_host_side(&self) -> bool {
        matches!(self, Self::HostShort { .. } | Self::Closed { .. })
    }
}

fn stderr_suffix(stderr: &StderrExcerpt) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; {stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_memory_is_the_hosts_shortage() {
        let start = |errno: nix::errno::Errno| {
            StartError::spawn(
                Path::new("./p"),
                "cannot copy it",
                std::io::Error::from_raw_os_error(errno as i32),
            )
        };
        use nix::errno::Errno;
        for errno in [Errno::EMFILE, Errno::ENOMEM, Errno::ENOSPC, Errno::EDQUOT] {
            assert!(start(errno).is_host_side());
        }
        let missing = start(nix::errno::Errno::ENOENT);
        assert!(!missing.is_host_side());
        assert!(missing.to_string().contains("cannot copy it"), "{missing}");
    }
}
