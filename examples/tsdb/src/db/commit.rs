//! The one thread that writes the log: it takes every write waiting, appends them all,
//! flushes once (group commit: concurrent writers share one fsync), then applies them to
//! the buffers in log order and answers each. It also starts snapshots, and lets the log
//! files go once a snapshot's Parquet files and manifest are on disk.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::log_record;
use super::persist::{self, FileEntry, Manifest};
use super::table::{self, Layer, ParquetFile};
use super::wal::Wal;
use super::{Buffer, Inner, State, StoreError};
use crate::line_protocol::Point;

/// Rows in the buffers that start a snapshot, unless tsdb.toml's `snapshot_rows` says.
pub const SNAPSHOT_ROWS: usize = 1_000_000;
/// Log bytes since the last snapshot that start one.
pub const SNAPSHOT_LOG_BYTES: u64 = 256 << 20;
/// Writes one flush takes at most (the rest wait for the next).
const GROUP_MAX: usize = 4096;

enum Msg {
    Write {
        database: String,
        points: Vec<Point>,
        sync: bool,
        reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    Snapshot {
        reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    Persisted {
        through: u64,
        ok: bool,
    },
    /// A database (`table` None) or a table deleted: answered whether it was there.
    Drop {
        database: String,
        table: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
    },
}

pub struct Committer {
    tx: Mutex<mpsc::Sender<Msg>>,
    inner: Arc<OnceLock<Weak<Inner>>>,
}

impl Committer {
    /// Opens the log in `dir/wal`, replays it into `state`, and starts the thread.
    pub fn start(
        dir: &Path,
        manifest: Manifest,
        state: &mut State,
        snapshot_rows: usize,
    ) -> Result<(Self, usize), String> {
        let wal_dir = dir.join("wal");
        persist::private_dir(&wal_dir)?;
        let (wal, replayed) =
            Wal::open(&wal_dir, manifest.wal_through).map_err(|e| e.to_string())?;
        for warning in &replayed.warnings {
            tracing::warn!("{warning}");
        }
        let count = replayed.records.len();
        for record in replayed.records {
            log_record::replay(state, &record).map_err(|e| {
                format!(
                    "{}: a log record that is not tsdb's: {e}",
                    wal_dir.display()
                )
            })?;
        }
        let (tx, rx) = mpsc::channel();
        let inner: Arc<OnceLock<Weak<Inner>>> = Arc::default();
        let thread = Thread {
            dir: dir.to_owned(),
            wal,
            rx,
            tx: tx.clone(),
            inner: inner.clone(),
            persisting: false,
            snapshot_rows: snapshot_rows.max(1),
            next_file: manifest.next_file,
            wal_through: manifest.wal_through,
            waiting: Vec::new(),
            drops: Vec::new(),
        };
        std::thread::Builder::new()
            .name("tsdb-log".into())
            .spawn(move || thread.run())
            .map_err(|e| format!("cannot start the log's thread: {e}"))?;
        Ok((
            Self {
                tx: Mutex::new(tx),
                inner,
            },
            count,
        ))
    }

    /// Gives the thread the engine it applies writes to.
    pub fn attach(&self, inner: Weak<Inner>) {
        let _ = self.inner.set(inner);
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(msg)
            .map_err(|_| StoreError::Io("the log's thread has stopped".into()))
    }

    /// Logs and applies `points` (already admitted); answered once they are in the log.
    pub async fn commit(
        &self,
        database: &str,
        points: &[Point],
        sync: bool,
    ) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Msg::Write {
            database: database.to_owned(),
            points: points.to_vec(),
            sync,
            reply,
        })?;
        answer
            .await
            .map_err(|_| StoreError::Io("the log's thread has stopped".into()))?
    }

    /// Deletes database `database` (or its table `table`): logged first, so a crash
    /// cannot bring it back, then gone from memory and the manifest, its files removed
    /// once no query reads them. Answers whether it was there.
    pub async fn drop(&self, database: &str, table: Option<&str>) -> Result<bool, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Msg::Drop {
            database: database.to_owned(),
            table: table.map(str::to_owned),
            reply,
        })?;
        answer
            .await
            .map_err(|_| StoreError::Io("the log's thread has stopped".into()))?
    }

    /// Persists every buffer, and answers once the files are on disk.
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Msg::Snapshot { reply })?;
        answer
            .await
            .map_err(|_| StoreError::Io("the log's thread has stopped".into()))?
    }
}

struct Thread {
    dir: PathBuf,
    wal: Wal,
    rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    inner: Arc<OnceLock<Weak<Inner>>>,
    persisting: bool,
    snapshot_rows: usize,
    next_file: u64,
    /// The log files the manifest on disk says its Parquet files cover.
    wal_through: u64,
    /// Snapshot requests answered when the snapshot in progress ends.
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
    /// Drops asked during a snapshot: done when it ends, since the snapshot writes
    /// files and a manifest from the tables it froze.
    drops: Vec<Msg>,
}

impl Thread {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut writes = Vec::new();
            let mut others = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    w @ Msg::Write { .. } => writes.push(w),
                    other => others.push(other),
                }
                next = (writes.len() < GROUP_MAX)
                    .then(|| self.rx.try_recv().ok())
                    .flatten();
            }
            if !writes.is_empty() {
                self.log(writes);
            }
            for msg in others {
                match msg {
                    Msg::Snapshot { reply } => {
                        self.waiting.push(reply);
                        self.snapshot(true);
                    }
                    Msg::Persisted { through, ok } => self.persisted(through, ok),
                    d @ Msg::Drop { .. } if self.persisting => self.drops.push(d),
                    Msg::Drop {
                        database,
                        table,
                        reply,
                    } => {
                        let _ = reply.send(self.drop_now(&database, table.as_deref()));
                    }
                    Msg::Write { .. } => {}
                }
            }
            self.snapshot(false);
        }
    }

    fn engine(&self) -> Option<Arc<Inner>> {
        self.inner.get().and_then(Weak::upgrade)
    }

    /// Appends, flushes once, applies in order, answers.
    fn log(&mut self, writes: Vec<Msg>) {
        let records: Vec<Vec<u8>> = writes
            .iter()
            .filter_map(|w| match w {
                Msg::Write {
                    database, points, ..
                } => Some(log_record::encode(database, points)),
                _ => None,
            })
            .collect();
        let sync = writes
            .iter()
            .any(|w| matches!(w, Msg::Write { sync: true, .. }));
        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let logged = self
            .wal
            .append(&slices)
            .and_then(|()| if sync { self.wal.sync() } else { Ok(()) })
            .map_err(|e| e.to_string());
        if let Err(e) = &logged {
            tracing::error!("the write-ahead log failed; writes refused: {e}");
        }
        let engine = self.engine();
        if let (Ok(()), Some(engine)) = (&logged, &engine) {
            let mut state = engine.state.write().unwrap_or_else(|p| p.into_inner());
            for w in &writes {
                if let Msg::Write {
                    database, points, ..
                } = w
                {
                    log_record::apply(&mut state, database, points);
                }
            }
        }
        for w in writes {
            if let Msg::Write { reply, .. } = w {
                let answer = match &logged {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Io(format!("the write-ahead log failed: {e}"))),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Starts a snapshot when the buffers or the log have grown enough (or `force`).
    fn snapshot(&mut self, force: bool) {
        if self.persisting {
            return;
        }
        let Some(engine) = self.engine() else {
            return;
        };
        let mut jobs = Vec::new();
        {
            let mut state = engine.state.write().unwrap_or_else(|p| p.into_inner());
            let due = state.buffered_rows >= self.snapshot_rows
                || self.wal.bytes_since_rotate() >= SNAPSHOT_LOG_BYTES;
            if !force && !due {
                return;
            }
            if state.buffered_rows == 0 {
                for reply in self.waiting.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                return;
            }
            for (db_name, database) in &mut state.databases {
                for (table_name, table) in &mut database.tables {
                    let Some((min_time, max_time)) = table.buffer.time_range() else {
                        continue;
                    };
                    let frozen = Layer::Rows {
                        batch: table.buffer.batch(&table.schema),
                        min_time,
                        max_time,
                    };
                    table.buffer = Buffer::default();
                    table.frozen = Some(frozen.clone());
                    let overlapped: Vec<Arc<ParquetFile>> = table
                        .files
                        .iter()
                        .filter(|f| f.min_time <= max_time && min_time <= f.max_time)
                        .cloned()
                        .collect();
                    let file = self.next_file;
                    self.next_file += 1;
                    jobs.push(Job {
                        database: db_name.clone(),
                        table: table_name.clone(),
                        schema: table.schema.clone(),
                        frozen,
                        overlapped,
                        file_name: format!("{file:020}.parquet"),
                    });
                }
            }
            state.buffered_rows = 0;
        }
        let through = match self.wal.rotate() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("snapshot not started: cannot start a new log file: {e}");
                self.restore(&engine, jobs);
                return;
            }
        };
        self.persisting = true;
        let (dir, tx, next_file) = (self.dir.clone(), self.tx.clone(), self.next_file);
        let weak = Arc::downgrade(&engine);
        let spawned = std::thread::Builder::new()
            .name("tsdb-snapshot".into())
            .spawn(move || {
                let ok = persist_jobs(&dir, &weak, jobs, through, next_file);
                let _ = tx.send(Msg::Persisted { through, ok });
            });
        if let Err(e) = spawned {
            tracing::error!("snapshot not started: {e}");
            self.persisting = false;
        }
    }

    /// After a snapshot failed to start: the frozen rows go back under the newer ones.
    fn restore(&self, engine: &Arc<Inner>, jobs: Vec<Job>) {
        let mut state = engine.state.write().unwrap_or_else(|p| p.into_inner());
        for job in jobs {
            unfreeze(&mut state, &job);
        }
    }

    fn persisted(&mut self, through: u64, ok: bool) {
        self.persisting = false;
        if ok {
            self.wal_through = through;
        }
        for msg in std::mem::take(&mut self.drops) {
            if let Msg::Drop {
                database,
                table,
                reply,
            } = msg
            {
                let _ = reply.send(self.drop_now(&database, table.as_deref()));
            }
        }
        let answer = if ok {
            if let Err(e) = self.wal.remove_through(through) {
                tracing::warn!("cannot remove log files the snapshot made redundant: {e}");
            }
            Ok(())
        } else {
            Err(StoreError::Io(
                "the snapshot failed (see the log); the data stays in the write-ahead log".into(),
            ))
        };
        for reply in self.waiting.drain(..) {
            let _ = reply.send(match &answer {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Io(e.to_string())),
            });
        }
    }
}

impl Thread {
    /// The drop record, synced; then the database or table out of memory, and a
    /// manifest without its files. Only once that manifest is on disk are the files
    /// retired: the old manifest named them, and a start fails on a named file that
    /// is missing. Runs only between snapshots.
    fn drop_now(&mut self, database: &str, table: Option<&str>) -> Result<bool, StoreError> {
        let record = log_record::encode_drop(database, table);
        self.wal
            .append(&[record.as_slice()])
            .and_then(|()| self.wal.sync())
            .map_err(|e| StoreError::Io(format!("the write-ahead log failed: {e}")))?;
        let Some(engine) = self.engine() else {
            return Err(StoreError::Io("the database is closing".into()));
        };
        let mut state = engine.state.write().unwrap_or_else(|p| p.into_inner());
        let (existed, files) = log_record::drop_from(&mut state, database, table);
        if files.is_empty() {
            return Ok(existed);
        }
        let manifest = Manifest {
            wal_through: self.wal_through,
            next_file: self.next_file,
            files: manifest_entries(&state, &[]),
        };
        drop(state);
        match persist::write_manifest(&self.dir, &manifest) {
            Ok(()) => table::retire(&files),
            // The drop stands (the log has it); the files stay until a snapshot
            // writes a manifest without them and the next start removes them.
            Err(e) => tracing::warn!(
                "database {database:?}: its deleted files stay on disk until the next snapshot: {e}"
            ),
        }
        Ok(existed)
    }
}

/// The manifest's entries for every file of `state` but those `replaced`.
fn manifest_entries(state: &State, replaced: &[&Arc<ParquetFile>]) -> Vec<FileEntry> {
    let mut files = Vec::new();
    for (db, d) in &state.databases {
        for (t, table) in &d.tables {
            for f in &table.files {
                if !replaced.iter().any(|r| Arc::ptr_eq(r, f)) {
                    files.push(entry(db, t, f));
                }
            }
        }
    }
    files
}

/// One table's part of a snapshot.
struct Job {
    database: String,
    table: String,
    schema: super::TableSchema,
    frozen: Layer,
    overlapped: Vec<Arc<ParquetFile>>,
    file_name: String,
}

/// The frozen rows of `job` back into its table's buffer, under the rows written since.
fn unfreeze(state: &mut State, job: &Job) {
    let Some(table) = state
        .databases
        .get_mut(&job.database)
        .and_then(|d| d.tables.get_mut(&job.table))
    else {
        return;
    };
    let mut layers = vec![job.frozen.clone()];
    layers.extend(table.buffer_layer());
    if let Ok(merged) = table::merge(&layers, &table.schema) {
        state.buffered_rows += merged.rows().saturating_sub(table.buffer.rows());
        table.buffer = merged;
    }
    table.frozen = None;
}

/// Writes each job's Parquet file, swaps the files in, writes the manifest. On failure
/// the frozen rows go back into the buffers (the log still holds them).
fn persist_jobs(
    dir: &Path,
    engine: &Weak<Inner>,
    jobs: Vec<Job>,
    through: u64,
    next_file: u64,
) -> bool {
    let mut written: Vec<(Job, Option<Arc<ParquetFile>>)> = Vec::new();
    let mut failed = None;
    for job in jobs {
        if failed.is_some() {
            written.push((job, None));
            continue;
        }
        match persist_one(dir, &job) {
            Ok(file) => written.push((job, Some(file))),
            Err(e) => {
                failed = Some(e);
                written.push((job, None));
            }
        }
    }
    let Some(engine) = engine.upgrade() else {
        return false;
    };
    let mut state = engine.state.write().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = &failed {
        tracing::error!("snapshot failed, its rows stay in memory and in the log: {e}");
        for (job, file) in &written {
            if let Some(file) = file {
                file.obsolete
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            unfreeze(&mut state, job);
        }
        return false;
    }
    // The manifest first: until it is on disk, the old one (and the log) stand, so the
    // old files must stay where they are.
    let replaced: Vec<&Arc<ParquetFile>> = written
        .iter()
        .flat_map(|(job, _)| job.overlapped.iter())
        .collect();
    let mut files = manifest_entries(&state, &replaced);
    for (job, file) in &written {
        if let Some(f) = file {
            files.push(entry(&job.database, &job.table, f));
        }
    }
    let manifest = Manifest {
        wal_through: through,
        next_file,
        files,
    };
    if let Err(e) = persist::write_manifest(dir, &manifest) {
        tracing::error!("snapshot failed, its rows stay in memory and in the log: {e}");
        for (job, file) in &written {
            if let Some(file) = file {
                file.obsolete
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            unfreeze(&mut state, job);
        }
        return false;
    }
    for (job, file) in written {
        let Some(table) = state
            .databases
            .get_mut(&job.database)
            .and_then(|d| d.tables.get_mut(&job.table))
        else {
            continue;
        };
        table
            .files
            .retain(|f| !job.overlapped.iter().any(|o| Arc::ptr_eq(o, f)));
        table::retire(&job.overlapped);
        table.files.extend(file);
        table.files.sort_by_key(|f| f.min_time);
        table.frozen = None;
    }
    true
}

fn entry(database: &str, table: &str, f: &ParquetFile) -> FileEntry {
    FileEntry {
        database: database.to_owned(),
        table: table.to_owned(),
        file: f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        min_time: f.min_time,
        max_time: f.max_time,
        rows: f.rows,
    }
}

/// One table's frozen rows (merged with the files they overlap) as a new Parquet file.
fn persist_one(dir: &Path, job: &Job) -> Result<Arc<ParquetFile>, String> {
    let mut layers: Vec<Layer> = job.overlapped.iter().cloned().map(Layer::File).collect();
    layers.push(job.frozen.clone());
    let batch = if job.overlapped.is_empty() {
        match &job.frozen {
            Layer::Rows { batch, .. } => batch.clone(),
            Layer::File(_) => return Err("a frozen layer is a file".into()),
        }
    } else {
        table::merge(&layers, &job.schema)?.batch(&job.schema)
    };
    let db_dir = persist::database_dir(dir, &job.database);
    persist::private_dir(&db_dir)?;
    let path = db_dir.join(&job.file_name);
    persist::write(&path, &batch)?;
    let (min_time, max_time) = persist::time_range(&batch).unwrap_or((0, 0));
    Ok(Arc::new(ParquetFile {
        path,
        min_time,
        max_time,
        rows: batch.num_rows() as u64,
        obsolete: false.into(),
    }))
}
