//! A Unix socket's file on disk, under one rule for the host and the Rust plugin SDK: a
//! path is taken over only when it holds a stale socket, and removed only while it
//! still holds the very socket this process bound.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Who claims a socket path, in the words of its refusals: the host and a plugin expect
/// different owners of a live socket there, and give different advice about a file.
#[derive(Debug, Clone, Copy)]
pub struct Claimant {
    /// Follows the path when a live socket is there, such as "is in use by another
    /// running baton host".
    pub in_use: &'static str,
    /// What to do when something other than a socket is there, such as "choose another
    /// path, or move the file away".
    pub not_a_socket: &'static str,
}

/// Why a socket path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    /// Another process answers on the socket.
    #[error("{} {in_use}", path.display())]
    InUse {
        /// The path.
        path: PathBuf,
        /// The claimant's words for it ([`Claimant::in_use`]).
        in_use: &'static str,
    },
    /// Something other than a socket is there; it is never deleted.
    #[error(
        "{} is {kind}, not a socket; only a stale socket is ever replaced, so nothing was \
         deleted: {advice}",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there, such as "a regular file".
        kind: &'static str,
        /// What the claimant advises ([`Claimant::not_a_socket`]).
        advice: &'static str,
    },
    /// The path could not be checked, bound or set up.
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

impl Claimant {
    /// Makes `path` free to bind: nothing is there, or a socket nobody answers on (left
    /// by a process that was killed), which is removed. Anything else is an error.
    pub async fn claim(&self, path: &Path) -> Result<(), SocketPathError> {
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
        let kind = meta.file_type();
        if !kind.is_socket() {
            return Err(SocketPathError::NotASocket {
                path: path.to_owned(),
                kind: describe(&kind),
                advice: self.not_a_socket,
            });
        }
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => Err(SocketPathError::InUse {
                path: path.to_owned(),
                in_use: self.in_use,
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
}

/// What kind of file `kind` is, for messages that refuse one ("it is a FIFO, …"): used
/// here and by the host's config reader.
pub fn describe(kind: &std::fs::FileType) -> &'static str {
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
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a file of an unknown kind"
    }
}

/// The socket file a listener was bound to, known by its device and inode, so that it
/// is removed only while the path still holds it: another process (a later generation
/// of the same plugin, another host) may have removed it and bound its own there since.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Records the socket file just bound at `path`.
    pub fn bound(path: &Path) -> std::io::Result<Self> {
        Ok(Self::of(path, &std::fs::symlink_metadata(path)?))
    }

    fn of(path: &Path, meta: &std::fs::Metadata) -> Self {
        Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if the path still holds it; returns whether it did.
    pub fn remove(&self) -> bool {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if !ours {
            tracing::debug!(
                "{} no longer holds the socket this process bound; left in place",
                self.path.display()
            );
            return false;
        }
        std::fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMANT: Claimant = Claimant {
        in_use: "is in use",
        not_a_socket: "pick another path",
    };

    #[tokio::test]
    async fn only_the_bound_socket_is_removed_and_only_a_stale_one_claimed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let ours = BoundSocket::bound(&path).expect("stat");
        let in_use = CLAIMANT.claim(&path).await.expect_err("a live socket");
        assert!(matches!(in_use, SocketPathError::InUse { .. }));
        assert_eq!(in_use.to_string(), format!("{} is in use", path.display()));

        std::fs::remove_file(&path).expect("someone removes it");
        let _second = std::os::unix::net::UnixListener::bind(&path).expect("bind again");
        assert!(!ours.remove(), "another listener's socket is not ours");
        assert!(path.exists());
        drop(first);

        let file = dir.path().join("precious.txt");
        std::fs::write(&file, "x").expect("write");
        let refused = CLAIMANT.claim(&file).await.expect_err("a regular file");
        assert!(matches!(
            refused,
            SocketPathError::NotASocket {
                kind: "a regular file",
                ..
            }
        ));
        let said = refused.to_string();
        assert!(said.starts_with(&file.display().to_string()), "{said}");
        assert!(
            said.ends_with("nothing was deleted: pick another path"),
            "{said}"
        );
        assert!(file.exists());

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        CLAIMANT
            .claim(&stale)
            .await
            .expect("a stale socket is claimed");
        assert!(!stale.exists());
    }

    #[tokio::test]
    async fn the_socket_bound_is_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let ours = BoundSocket::bound(&path).expect("stat");
        assert_eq!(ours.path(), path);
        assert!(ours.remove());
        assert!(!path.exists());
    }
}
