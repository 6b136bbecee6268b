//! Reading the config file for a reload only once it has stopped changing: a reload
//! asked for while an editor or a deploy tool is still writing the file would otherwise
//! apply whatever part of it happens to parse (an empty file stops every plugin).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Config, ConfigError};

/// How long the file must have been still before it is read.
pub const CONFIG_SETTLE: Duration = Duration::from_millis(500);
/// How long a reload waits for the file to be still before it gives up, changing nothing.
pub const CONFIG_SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Why a reload read no config.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The file was read and refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file never stayed still long enough.
    #[error(
        "{}: still changing after {waited:?} (it must stay unchanged for {settle:?} to be read); \
         nothing changed, ask again once it is written",
        path.display()
    )]
    StillChanging {
        path: PathBuf,
        waited: Duration,
        settle: Duration,
    },
}

/// What says the file changed: a rewrite in place changes its size or times, a
/// replacement its inode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// One look at the file: its fingerprint, and how long ago it was last modified (`None`
/// if that is unknown or in the future).
type Look = Option<(Fingerprint, Option<Duration>)>;

/// How the settling reads a file; the tests give their own, so the order of writes and
/// looks is theirs to set rather than the scheduler's.
trait FileView {
    type Read;
    fn look(&mut self) -> Look;
    fn read(&mut self) -> Result<Self::Read, ConfigError>;
}

/// The config file on disk.
struct OnDisk<'a>(&'a Path);

impl FileView for OnDisk<'_> {
    type Read = Config;

    fn look(&mut self) -> Look {
        let meta = std::fs::metadata(self.0).ok()?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        Some((
            Fingerprint {
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            },
            age,
        ))
    }

    fn read(&mut self) -> Result<Config, ConfigError> {
        Config::load(self.0)
    }
}

fn print_of(look: &Look) -> Option<Fingerprint> {
    look.as_ref().map(|(f, _)| *f)
}

/// Loads `path` (as [`Config::load`]) once it has been unchanged for `settle`, checking
/// after the read that it did not change meanwhile; gives up after `limit`. A file
/// that cannot be looked at is left to [`Config::load`] to explain.
pub async fn load_settled(
    path: &Path,
    settle: Duration,
    limit: Duration,
) -> Result<Config, SettleError> {
    settled(&mut OnDisk(path), path, settle, limit).await
}

async fn settled<F: FileView>(
    file: &mut F,
    path: &Path,
    settle: Duration,
    limit: Duration,
) -> Result<F::Read, SettleError> {
    let started = Instant::now();
    let mut seen = file.look();
    // A file not touched for `settle` is read at once: most reloads wait for nothing.
    let mut still = seen
        .as_ref()
        .is_some_and(|(_, age)| age.is_some_and(|age| age >= settle));
    if !still {
        tracing::info!(
            "{}: changed less than {settle:?} ago; waiting until it is still",
            path.display()
        );
    }
    loop {
        if !still {
            tokio::time::sleep(settle).await;
            let now = file.look();
            still = print_of(&now) == print_of(&seen);
            seen = now;
        }
        if still {
            let config = file.read();
            let after = file.look();
            if print_of(&after) == print_of(&seen) {
                return Ok(config?);
            }
            // Written to while it was read: what was read may be half of it.
            still = false;
            seen = after;
        }
        if started.elapsed() >= limit {
            return Err(SettleError::StillChanging {
                path: path.to_owned(),
                waited: started.elapsed(),
                settle,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose every change is made by the test, between the settling's looks: the
    /// `n`th look sees version `changes(n)`, and a read sees the version of the look
    /// before it. Which version each look sees is set here, not by how fast a writer
    /// runs, so a loaded machine changes no outcome.
    struct Scripted<F: FnMut(usize) -> u64> {
        looks: usize,
        changes: F,
        /// The versions read, in order.
        reads: Vec<u64>,
        /// How long ago the first look's version was written.
        first_age: Duration,
    }

    impl<F: FnMut(usize) -> u64> FileView for Scripted<F> {
        type Read = u64;

        fn look(&mut self) -> Look {
            let version = (self.changes)(self.looks);
            let age = if self.looks == 0 {
                self.first_age
            } else {
                Duration::ZERO
            };
            self.looks += 1;
            Some((
                Fingerprint {
                    len: version,
                    ..Fingerprint::default()
                },
                Some(age),
            ))
        }

        fn read(&mut self) -> Result<u64, ConfigError> {
            let version = (self.changes)(self.looks.saturating_sub(1));
            self.reads.push(version);
            Ok(version)
        }
    }

    fn scripted<F: FnMut(usize) -> u64>(changes: F, first_age: Duration) -> Scripted<F> {
        Scripted {
            looks: 0,
            changes,
            reads: Vec::new(),
            first_age,
        }
    }

    const SETTLE: Duration = Duration::from_millis(1);
    const LIMIT: Duration = Duration::from_millis(20);

    async fn settle<F: FileView>(file: &mut F) -> Result<F::Read, SettleError> {
        settled(file, Path::new("baton.toml"), SETTLE, LIMIT).await
    }

    #[tokio::test]
    async fn a_file_that_keeps_changing_is_never_read() {
        let mut file = scripted(|look| look as u64, Duration::ZERO);
        let started = Instant::now();
        let refused = settle(&mut file).await;
        assert!(
            matches!(refused, Err(SettleError::StillChanging { .. })),
            "{refused:?}"
        );
        assert!(
            file.reads.is_empty(),
            "read while changing: {:?}",
            file.reads
        );
        assert!(started.elapsed() >= LIMIT, "gave up early");
    }

    #[tokio::test]
    async fn a_file_is_read_once_it_stops_changing_and_not_before() {
        // Changed at each of the first four looks, then left alone.
        let mut file = scripted(|look| look.min(4) as u64, Duration::ZERO);
        assert_eq!(settle(&mut file).await.ok(), Some(4));
        assert_eq!(file.reads, vec![4], "only the finished file is read");
        assert_eq!(file.looks, 7, "4 changes seen, 1 still, 1 after the read");
    }

    #[tokio::test]
    async fn a_file_written_to_while_it_is_read_is_read_again() {
        // Still since long ago, and changed once between its read and the look after it.
        let mut file = scripted(|look| u64::from(look >= 1), SETTLE * 2);
        assert_eq!(settle(&mut file).await.ok(), Some(1));
        assert_eq!(
            file.reads,
            vec![0, 1],
            "the read during the write is discarded"
        );
    }

    #[tokio::test]
    async fn a_file_still_for_the_settle_time_is_read_at_once() {
        let mut file = scripted(|_| 7, SETTLE);
        assert_eq!(settle(&mut file).await.ok(), Some(7));
        assert_eq!(
            file.looks, 2,
            "one look before the read, one after: no wait"
        );
    }
}
