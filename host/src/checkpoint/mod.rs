//! Checkpoints: snapshots of a plugin's state that the host keeps, so a crash (or a
//! host restart) resumes from recent state instead of empty. In memory, or with a
//! `state_dir` on disk only, under `state_dir/<plugin>/` (see [`file`] for the format).
//!
//! On disk, a checkpoint is streamed to a private temp file as its chunks arrive (on a
//! blocking thread, never on the async workers), then synced and renamed into place;
//! the host's own files are ordered by a sequence number it keeps (continued from the
//! highest on disk), never by the clock, and only they are loaded or pruned.

mod file;
mod offload;
mod refused;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_proto::plugin::{SnapshotRequest, StateChunk};
use baton_proto::state::{ChunkCheck, Reassembly, ReassemblyError};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

pub use file::Unusable;
pub use refused::{KEEP_REFUSED, REFUSED_DIR, SetAside};

use crate::launch::PluginRpc;

/// Checkpoints kept on disk per plugin; older ones are removed after a newer one is safe.
const KEEP: usize = 3;

/// One checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The plugin's state schema version.
    pub schema_version: u32,
    /// The state.
    pub state: Bytes,
}

/// What loading from disk found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest usable checkpoint and its file.
    pub checkpoint: Option<(Checkpoint, PathBuf)>,
    /// Newer files of the host's that could not be used, with why.
    pub skipped: Vec<(PathBuf, Unusable)>,
    /// Why the directory itself was refused, if it was.
    pub refused: Option<String>,
}

/// Something about the checkpoint directory an operator should hear (a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The event kind: `checkpoint_stranger` or `checkpoint_dir`.
    pub kind: &'static str,
    /// What, in words.
    pub message: String,
}

/// A checkpoint that was taken.
#[derive(Debug)]
pub struct Taken {
    /// The state's length.
    pub bytes: u64,
    /// The file it was written to, with a directory.
    pub file: Option<PathBuf>,
}

/// Why a checkpoint was not taken. The previous checkpoint is untouched either way.
#[derive(Debug)]
pub enum TakeError {
    /// The plugin's `Snapshot` failed, broke the chunk checks, or outgrew
    /// `max_state_bytes`.
    Snapshot(String),
    /// The state could not be written.
    Write(String),
}

/// The words for a snapshot that fails the chunk checks; one over `max_state_bytes`
/// says the size, the limit and the key that sets it.
pub(crate) fn snapshot_error(plugin: &str, e: &ReassemblyError) -> String {
    match e {
        ReassemblyError::TooLarge { limit, got } => format!(
            "the state is larger than max_state_bytes = {limit} bytes: at least {got} bytes, cut off there; raise plugins.{plugin}.max_state_bytes if it is meant to be that large"
        ),
        other => other.to_string(),
    }
}

/// The checkpoints of one plugin.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: Option<PathBuf>,
    /// Without a directory: the newest checkpoint.
    latest: Option<Checkpoint>,
    /// The highest sequence number used or seen on disk; shared with the writers.
    sequence: Arc<AtomicU64>,
    /// Strangers already warned about, so each is named once, not at every checkpoint.
    reported: HashSet<PathBuf>,
    notices: Vec<Notice>,
    #[cfg(test)]
    disk_full: bool,
}

impl CheckpointStore {
    /// A store for one plugin; `dir` is `state_dir/<plugin>` or `None` for memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            latest: None,
            sequence: Arc::new(AtomicU64::new(0)),
            reported: HashSet::new(),
            notices: Vec::new(),
            #[cfg(test)]
            disk_full: false,
        }
    }

    /// The newest checkpoint kept in memory (only without a directory).
    pub fn latest(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// Drops every checkpoint, in memory and the host's own files on disk, so that the
    /// plugin's next start begins with no state (`baton ctl restart --fresh`).
    pub async fn forget(&mut self) -> Result<(), String> {
        self.latest = None;
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let shown = dir.display().to_string();
        tokio::task::spawn_blocking(move || file::prune(&dir, 0))
            .await
            .map_err(|e| format!("cannot remove the checkpoints in {shown}: {e}"))?
            .map_err(|e| format!("cannot remove the checkpoints in {shown}: {e}"))
    }

    /// What the store noticed since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn notice_strangers(&mut self, strangers: Vec<(PathBuf, String)>) {
        for (path, why) in strangers {
            if self.reported.insert(path.clone()) {
                self.notices.push(Notice {
                    kind: "checkpoint_stranger",
                    message: format!(
                        "{} is not one of the host's checkpoints ({why}); it is left alone and never loaded",
                        path.display()
                    ),
                });
            }
        }
    }

    /// Takes a checkpoint of the plugin `plugin`, through the client `connect` makes:
    /// its `Snapshot`, checked chunk by chunk and cut off past `limit` bytes, into
    /// memory or, with a directory, straight to a file. `captured` is called once the whole snapshot has been read,
    /// before the file is synced. Dropping the future abandons the checkpoint (its temp
    /// file is removed).
    pub async fn take(
        &mut self,
        plugin: &str,
        connect: impl FnOnce() -> Option<PluginRpc> + Send + 'static,
        limit: u64,
        captured: impl FnOnce(),
    ) -> Result<Taken, TakeError> {
        let source = async move {
            // Made here, on the checkpoint thread, so its connection is driven there.
            let mut rpc = connect().ok_or_else(|| {
                TakeError::Snapshot("internal: the plugin's token is not valid metadata".into())
            })?;
            rpc.snapshot(SnapshotRequest::default())
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| {
                    TakeError::Snapshot(format!(
                        "Snapshot failed ({:?}): {}",
                        s.code(),
                        s.message()
                    ))
                })
        };
        self.take_stream(plugin, source, limit, captured).await
    }

    /// [`take`](Self::take), from a stream of chunks that `source` opens. The stream is
    /// opened and read on the checkpoint thread ([`offload`]), with a connection made
    /// there, so none of the reading lands on the host's workers.
    async fn take_stream<S>(
        &mut self,
        plugin: &str,
        source: impl Future<Output = Result<S, TakeError>> + Send + 'static,
        limit: u64,
        captured: impl FnOnce(),
    ) -> Result<Taken, TakeError>
    where
        S: Stream<Item = Result<StateChunk, tonic::Status>> + Unpin + Send + 'static,
    {
        let plugin: Arc<str> = Arc::from(plugin);
        let broke = |s: tonic::Status| {
            TakeError::Snapshot(format!("the Snapshot stream failed: {}", s.message()))
        };
        let bad = {
            let plugin = plugin.clone();
            move |e: ReassemblyError| {
                TakeError::Snapshot(format!("bad snapshot: {}", snapshot_error(&plugin, &e)))
            }
        };
        let gone = || TakeError::Snapshot("the checkpoint thread stopped".into());
        let Some(dir) = self.dir.clone() else {
            let read = offload::run(async move {
                let mut stream = source.await?;
                let mut state = Reassembly::new(usize::try_from(limit).unwrap_or(usize::MAX));
                while let Some(chunk) = stream.next().await.transpose().map_err(broke)? {
                    state.push(chunk).map_err(&bad)?;
                }
                state.finish().map_err(&bad)
            })
            .await
            .ok_or_else(gone);
            captured();
            let (schema_version, state) = read??;
            let bytes = state.len() as u64;
            self.latest = Some(Checkpoint {
                schema_version,
                state: state.into(),
            });
            return Ok(Taken { bytes, file: None });
        };

        // A few chunks in flight to the writer: the disk paces the snapshot, and the
        // host never holds more than these.
        let (tx, rx) = mpsc::channel::<Piece>(8);
        let job = Job {
            dir,
            sequence: self.sequence.clone(),
            #[cfg(test)]
            disk_full: self.disk_full,
        };
        let writer = tokio::task::spawn_blocking(move || job.run(rx));
        let read = offload::run(async move {
            let read = async {
                let mut stream = source.await?;
                let mut check = ChunkCheck::new(limit);
                let mut crc = 0;
                while let Some(chunk) = stream.next().await.transpose().map_err(broke)? {
                    check.push(&chunk).map_err(&bad)?;
                    if chunk.last {
                        crc = chunk.checksum;
                    }
                    if tx.send(Piece::Data(chunk.data)).await.is_err() {
                        // The writer failed; its result says why.
                        return Ok(None);
                    }
                }
                let (schema_version, len) = check.finish().map_err(&bad)?;
                Ok(Some(Piece::Done {
                    schema_version,
                    len,
                    crc,
                }))
            }
            .await;
            (tx, read)
        })
        .await;
        // Calls resume once the snapshot is read, before the file is synced.
        captured();
        // The writer ends when the last sender is gone: each arm lets go of its own.
        let read = match read {
            Some((tx, Ok(Some(done)))) => {
                let _ = tx.send(done).await;
                Ok(())
            }
            Some((tx, Ok(None))) => {
                drop(tx);
                Ok(())
            }
            Some((tx, Err(e))) => {
                drop(tx);
                Err(e)
            }
            None => Err(gone()),
        };
        let report = writer
            .await
            .map_err(|e| TakeError::Write(format!("the checkpoint writer failed: {e}")))?;
        self.notices.extend(report.notices);
        self.notice_strangers(report.strangers);
        read?;
        let (file, bytes) = report.written.map_err(TakeError::Write)?;
        Ok(Taken {
            bytes,
            file: Some(file),
        })
    }

    /// The newest usable checkpoint on disk, skipping (and naming) damaged ones and
    /// ones over `limit` bytes. Reads off the async workers.
    #[cfg(test)]
    pub(crate) async fn load(&mut self, limit: u64) -> Loaded {
        self.load_except(limit, &HashSet::new()).await
    }

    /// `load`, passing over the files in `tried` (ones already offered
    /// to the plugin, or already found unusable).
    pub async fn load_except(&mut self, limit: u64, tried: &HashSet<PathBuf>) -> Loaded {
        let tried = tried.clone();
        let Some(dir) = self.dir.clone() else {
            return Loaded::default();
        };
        let sequence = self.sequence.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut notices = Vec::new();
            let mut loaded = Loaded::default();
            match file::prepare_dir(&dir) {
                Ok(tightened) => notices.extend(tightened.map(dir_notice)),
                Err(why) => {
                    loaded.refused = Some(why);
                    return (loaded, notices, Vec::new());
                }
            }
            let listing = match file::list(&dir) {
                Ok(listing) => listing,
                Err(e) => {
                    loaded.refused = Some(format!("cannot list {}: {e}", dir.display()));
                    return (loaded, notices, Vec::new());
                }
            };
            // Later checkpoints continue from the highest number on disk.
            sequence.fetch_max(listing.highest_sequence(), Ordering::SeqCst);
            for own in listing.own.iter().rev() {
                if tried.contains(&own.path) {
                    continue;
                }
                match file::read(own, limit) {
                    Ok(checkpoint) => {
                        loaded.checkpoint = Some((checkpoint, own.path.clone()));
                        break;
                    }
                    Err(why) => loaded.skipped.push((own.path.clone(), why)),
                }
            }
            (loaded, notices, listing.strangers)
        })
        .await;
        match found {
            Ok((loaded, notices, strangers)) => {
                self.notices.extend(notices);
                self.notice_strangers(strangers);
                loaded
            }
            Err(e) => Loaded {
                refused: Some(format!("the checkpoint reader failed: {e}")),
                ..Loaded::default()
            },
        }
    }
}

impl CheckpointStore {
    /// Moves `file`, a checkpoint the plugin refused, out of the ones loaded, counted
    /// and pruned, into the directory's `refused/`; when that already keeps
    /// [`KEEP_REFUSED`], `file` is removed instead and what is kept there stays.
    pub async fn set_aside(&mut self, file: &Path) -> Result<SetAside, String> {
        let dir = self
            .dir
            .clone()
            .ok_or("checkpoints are kept in memory only")?;
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || refused::set_aside(&dir, &file))
            .await
            .map_err(|e| format!("the checkpoint mover failed: {e}"))?
    }
}

fn dir_notice(message: String) -> Notice {
    Notice {
        kind: "checkpoint_dir",
        message,
    }
}

/// What the writer is sent: the state's data as it arrives, then its summary.
enum Piece {
    Data(Bytes),
    Done {
        schema_version: u32,
        len: u64,
        crc: u32,
    },
}

/// Writing one checkpoint file, on a blocking thread.
struct Job {
    dir: PathBuf,
    sequence: Arc<AtomicU64>,
    #[cfg(test)]
    disk_full: bool,
}

struct Report {
    written: Result<(PathBuf, u64), String>,
    notices: Vec<Notice>,
    strangers: Vec<(PathBuf, String)>,
}

impl Job {
    fn run(self, mut rx: mpsc::Receiver<Piece>) -> Report {
        let (mut notices, mut strangers) = (Vec::new(), Vec::new());
        let written = offload::in_background(|| self.write(&mut rx, &mut notices, &mut strangers));
        Report {
            written,
            notices,
            strangers,
        }
    }

    fn write(
        &self,
        rx: &mut mpsc::Receiver<Piece>,
        notices: &mut Vec<Notice>,
        strangers: &mut Vec<(PathBuf, String)>,
    ) -> Result<(PathBuf, u64), String> {
        let dir = &self.dir;
        if let Some(tightened) = file::prepare_dir(dir)? {
            notices.push(dir_notice(tightened));
        }
        let listing = file::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let highest = listing.highest_sequence();
        *strangers = listing.strangers;
        let previous = self
            .sequence
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                last.max(highest).checked_add(1)
            })
            .map_err(|_| {
                format!(
                    "no checkpoint number is left after {highest} in {}",
                    dir.display()
                )
            })?;
        let sequence = previous.max(highest) + 1;
        let failed = |e: std::io::Error| format!("{e}");
        let mut temp = file::TempFile::create(dir, sequence).map_err(failed)?;
        #[cfg(test)]
        if self.disk_full {
            temp.fill_the_disk().map_err(failed)?;
        }
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(data) => temp.write(&data).map_err(failed)?,
                Piece::Done {
                    schema_version,
                    len,
                    crc,
                } => {
                    let path = temp.commit(schema_version, len, crc).map_err(failed)?;
                    if let Err(e) = file::prune(dir, KEEP) {
                        tracing::warn!(dir = %dir.display(), "cannot remove old checkpoints: {e}");
                    }
                    return Ok((path, len));
                }
            }
        }
        Err("the checkpoint was abandoned".into())
    }
}

#[cfg(test)]
mod tests;
