//! The directories the host's watcher watches, including those that do not exist yet
//! (start the daemon, then build for the first time): each of those is watched from its
//! nearest existing ancestor and followed down as the directories on the way appear,
//! until it is there and watched itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::WatchError;

/// How changes are noticed.
pub(super) enum Backend {
    Native(notify::RecommendedWatcher),
    /// A thread compares fingerprints at an interval. notify's own poller compares
    /// mtimes in whole seconds, which misses a replacement within the same second.
    Poll,
}

/// A directory to watch that does not exist yet.
struct Pending {
    dir: PathBuf,
    mode: RecursiveMode,
    /// The ancestor watched for it now.
    from: PathBuf,
    /// Its subscriber's nudge: files may be in the directory before its watch begins.
    nudge: mpsc::Sender<()>,
}

/// What is watched, and what is waited for.
pub(super) struct Directories {
    backend: Backend,
    /// Each directory watched, and how: a second plugin in the same directory must not
    /// turn a recursive watch into a shallow one (notify keeps one watch per path).
    watched: BTreeMap<PathBuf, RecursiveMode>,
    pending: Vec<Pending>,
}

impl Directories {
    pub(super) fn new(backend: Backend) -> Self {
        Self {
            backend,
            watched: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    pub(super) fn is_poll(&self) -> bool {
        matches!(self.backend, Backend::Poll)
    }

    /// Watches `dir`, or, while it does not exist, its nearest existing ancestor, from
    /// which [`descend`](Self::descend) follows it down; `nudge` is told when it arrives.
    pub(super) fn watch(
        &mut self,
        dir: &Path,
        mode: RecursiveMode,
        nudge: &mpsc::Sender<()>,
    ) -> Result<(), WatchError> {
        if self.is_poll() {
            return Ok(()); // the poller sees a file appear like any other change
        }
        let from = nearest_existing(dir).ok_or_else(|| WatchError::Watch {
            path: dir.to_owned(),
            source: notify::Error::path_not_found(),
        })?;
        if from == dir {
            return self.add(dir, mode);
        }
        tracing::info!(
            "{} does not exist yet; watching {} until it does",
            dir.display(),
            from.display()
        );
        self.add(&from, RecursiveMode::NonRecursive)?;
        let mut pending = Pending {
            dir: dir.to_owned(),
            mode,
            from,
            nudge: nudge.clone(),
        };
        // It may have been made while the ancestor's watch began.
        match self.follow(&mut pending) {
            Ok(true) => {}
            Ok(false) => self.pending.push(pending),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// After something changed in a watched directory: follows every pending directory
    /// down as far as it exists now, and tells the subscribers of those that arrived.
    pub(super) fn descend(&mut self) {
        for mut pending in std::mem::take(&mut self.pending) {
            match self.follow(&mut pending) {
                Ok(true) => {
                    tracing::info!("{} appeared; watching it", pending.dir.display());
                    let _ = pending.nudge.try_send(());
                }
                Ok(false) => self.pending.push(pending),
                Err(e) => {
                    // Tried again at the next change; the plugin meanwhile waits.
                    tracing::warn!("{e}");
                    self.pending.push(pending);
                }
            }
        }
    }

    /// Moves `pending`'s watch down to the deepest ancestor that exists; true once it
    /// is the directory itself.
    fn follow(&mut self, pending: &mut Pending) -> Result<bool, WatchError> {
        loop {
            let Some(at) = nearest_existing(&pending.dir) else {
                return Ok(false);
            };
            if at == pending.dir {
                self.add(&at, pending.mode)?;
                return Ok(true);
            }
            if at == pending.from {
                return Ok(false);
            }
            self.add(&at, RecursiveMode::NonRecursive)?;
            // Looked at again: `mkdir -p` may have gone deeper before this watch began.
            pending.from = at;
        }
    }

    fn add(&mut self, dir: &Path, mode: RecursiveMode) -> Result<(), WatchError> {
        let Backend::Native(watcher) = &mut self.backend else {
            return Ok(());
        };
        match self.watched.get(dir) {
            Some(RecursiveMode::Recursive) => return Ok(()),
            Some(_) if mode == RecursiveMode::NonRecursive => return Ok(()),
            _ => {}
        }
        watcher
            .watch(dir, mode)
            .map_err(|source| match source.kind {
                notify::ErrorKind::MaxFilesWatch => WatchError::TooManyWatches {
                    path: dir.to_owned(),
                },
                _ => WatchError::Watch {
                    path: dir.to_owned(),
                    source,
                },
            })?;
        self.watched.insert(dir.to_owned(), mode);
        Ok(())
    }
}

/// `dir` or its nearest ancestor that is a directory now (`.` for a relative path with
/// none).
fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.is_dir())
        .map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_existing_ancestor_is_found() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let deep = dir.path().join("a/b/c");
        assert_eq!(nearest_existing(&deep), Some(dir.path().to_owned()));
        std::fs::create_dir_all(dir.path().join("a/b"))?;
        assert_eq!(nearest_existing(&deep), Some(dir.path().join("a/b")));
        std::fs::create_dir(&deep)?;
        assert_eq!(nearest_existing(&deep), Some(deep.clone()));
        Ok(())
    }
}
