//! The plugin's socket file, under the host's rule: a path is taken over only when it
//! holds a stale socket, and removed at the end only while it still holds ours.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why the socket path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    /// Another process answers on the socket there.
    #[error("{} is a socket another process is listening on; it was left alone", path.display())]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a socket is there; it is never deleted.
    #[error(
        "{} is {kind}, not a socket; only a stale socket is ever replaced, so nothing was \
         deleted: the host must be given a path that is free",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there, such as "a regular file".
        kind: &'static str,
    },
    /// The path could not be checked or freed.
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Makes `path` free to bind: nothing is there, or a socket nobody answers on (left by
/// a plugin that was killed), which is removed. Anything else is an error.
pub(crate) async fn claim(path: &Path) -> Result<(), SocketPathError> {
    let io = |what, source| SocketPathError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("check the path", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketPathError::NotASocket {
            path: path.to_owned(),
            kind: describe(&meta.file_type()),
        });
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(SocketPathError::InUse {
            path: path.to_owned(),
        }),
        // Refused: the socket file outlived its listener.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            BoundSocket::of(path, &meta).remove();
            Ok(())
        }
        // Not ours to judge (permission denied, ...): leave it alone.
        Err(e) => Err(io("connect to the socket there to see if it is stale", e)),
    }
}

/// What kind of file `kind` is, for the refusal.
fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a file of an unknown kind"
    }
}

/// The socket file a listener was bound to, known by device and inode, so that it is
/// removed only while the path still holds it: a later generation of the plugin may
/// have been given the same path and bound its own since.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Records the socket file just bound at `path`.
    pub(crate) fn bound(path: &Path) -> std::io::Result<Self> {
        Ok(Self::of(path, &std::fs::symlink_metadata(path)?))
    }

    fn of(path: &Path, meta: &std::fs::Metadata) -> Self {
        Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Removes the socket file if the path still holds it.
    pub(crate) fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_stale_socket_is_claimed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("precious.txt");
        std::fs::write(&file, "x").expect("write");
        let refused = claim(&file).await.expect_err("a regular file is refused");
        assert!(
            refused.to_string().contains(&file.display().to_string()),
            "{refused}"
        );
        assert!(file.exists());

        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        assert!(matches!(
            claim(&live).await,
            Err(SocketPathError::InUse { .. })
        ));

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        claim(&stale).await.expect("a stale socket is claimed");
        assert!(!stale.exists());
    }
}
