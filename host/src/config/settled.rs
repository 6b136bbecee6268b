//! Reading the config file for a reload only once it has stopped changing: a reload
//! asked for while an editor or a deploy tool is still writing the file would otherwise
//! apply whatever part of it happens to parse (an empty file stops every plugin).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

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
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn fingerprint(path: &Path) -> Option<(Fingerprint, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        },
        meta.modified().ok(),
    ))
}

/// Whether a file last modified at `modified` has been still for `settle` already.
fn still_since(modified: Option<SystemTime>, settle: Duration) -> bool {
    modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= settle)
}

/// Loads `path` (as [`Config::load`]) once it has been unchanged for `settle`, checking
/// after the read that it did not change meanwhile; gives up after `limit`. A file
/// that cannot be looked at is left to [`Config::load`] to explain.
pub async fn load_settled(
    path: &Path,
    settle: Duration,
    limit: Duration,
) -> Result<Config, SettleError> {
    let started = Instant::now();
    let mut seen = fingerprint(path);
    // A file not touched for `settle` is read at once: most reloads wait for nothing.
    let mut still = seen.as_ref().is_some_and(|(_, m)| still_since(*m, settle));
    loop {
        if !still {
            tokio::time::sleep(settle).await;
            let now = fingerprint(path);
            still = now.as_ref().map(|(f, _)| f) == seen.as_ref().map(|(f, _)| f);
            seen = now;
        }
        if still {
            let config = Config::load(path);
            let after = fingerprint(path);
            if after.as_ref().map(|(f, _)| f) == seen.as_ref().map(|(f, _)| f) {
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

    #[tokio::test]
    async fn a_file_that_keeps_changing_is_never_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("baton.toml");
        std::fs::write(&path, "").expect("write");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let _ = std::fs::write(&path, format!("# line {i}\n"));
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let refused = load_settled(
            &path,
            Duration::from_millis(100),
            Duration::from_millis(200),
        )
        .await;
        assert!(
            matches!(refused, Err(SettleError::StillChanging { .. })),
            "{refused:?}"
        );
        let _ = writer.join();
        let read = load_settled(&path, Duration::from_millis(50), Duration::from_secs(5)).await;
        assert!(
            !matches!(read, Err(SettleError::StillChanging { .. })),
            "a still file is read: {read:?}"
        );
    }
}
