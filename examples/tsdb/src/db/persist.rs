//! Snapshots on disk: each table's rows as Parquet files (any Arrow or Parquet tool reads
//! them), and `snapshot.json`, the manifest naming every live file and the last log
//! file the files make redundant. A file the manifest does not name (a snapshot that
//! crashed half-way) is not data.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// The manifest's file name in the data directory.
pub const MANIFEST: &str = "snapshot.json";
/// The manifest's largest size: past it, it is not ours.
const MAX_MANIFEST: u64 = 64 << 20;
/// Rows per Parquet row group: time pruning skips whole groups.
const ROW_GROUP: usize = 128 * 1024;

/// One live file, as the manifest records it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub database: String,
    pub table: String,
    /// The file's name in `dbs/<database>/`.
    pub file: String,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Log files numbered up to this one hold nothing the Parquet files lack.
    pub wal_through: u64,
    /// The next file number to use.
    pub next_file: u64,
    pub files: Vec<FileEntry>,
}

/// A database's directory of Parquet files.
pub fn database_dir(data_dir: &Path, database: &str) -> PathBuf {
    data_dir.join("dbs").join(database)
}

/// Creates `dir` (0700) if it is missing; refuses a link or a directory others may write.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory (a link?)", dir.display()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} may be written by other users (mode {:o}); tsdb keeps its data only where it alone writes",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// Writes `batch` as a new Parquet file at `path` (never over an existing file or through
/// a link), flushed to disk before it returns.
pub fn write(path: &Path, batch: &RecordBatch) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let fail = |e: parquet::errors::ParquetError| format!("cannot write {}: {e}", path.display());
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(fail)?;
    writer.write(batch).map_err(fail)?;
    let file = writer.into_inner().map_err(fail)?;
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(super) fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Every batch of the Parquet file at `path`.
pub fn read(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let fail = |e: parquet::errors::ParquetError| format!("cannot read {}: {e}", path.display());
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(fail)?
        .build()
        .map_err(fail)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The manifest of `data_dir`, or an empty one when there is none yet.
pub fn load_manifest(data_dir: &Path) -> Result<Manifest, String> {
    let path = data_dir.join(MANIFEST);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let mut text = String::new();
    use std::io::Read;
    file.take(MAX_MANIFEST)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a tsdb snapshot manifest: {e}", path.display()))?;
    for entry in &manifest.files {
        crate::db::check_database_name(&entry.database)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !is_file_name(&entry.file) {
            return Err(format!(
                "{}: {:?} is not a snapshot file name",
                path.display(),
                entry.file
            ));
        }
    }
    Ok(manifest)
}

/// A name `write_manifest`'s caller made: digits, a dash, digits, `.parquet`.
pub fn is_file_name(name: &str) -> bool {
    name.strip_suffix(".parquet").is_some_and(|stem| {
        !stem.is_empty() && stem.chars().all(|c| c.is_ascii_digit() || c == '-')
    })
}

/// Replaces the manifest at once (a temporary file, flushed, renamed over it).
pub fn write_manifest(data_dir: &Path, manifest: &Manifest) -> Result<(), String> {
    let path = data_dir.join(MANIFEST);
    let temp = data_dir.join(format!("{MANIFEST}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(&temp)
        .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    std::fs::rename(&temp, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    sync_dir(data_dir)
}

/// Removes the Parquet files in `dbs/` the manifest does not name: left by a snapshot
/// that did not finish.
pub fn remove_orphans(data_dir: &Path, manifest: &Manifest) {
    let live: std::collections::HashSet<(String, String)> = manifest
        .files
        .iter()
        .map(|f| (f.database.clone(), f.file.clone()))
        .collect();
    let Ok(databases) = std::fs::read_dir(data_dir.join("dbs")) else {
        return;
    };
    for db in databases.filter_map(Result::ok) {
        let name = db.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(db.path()) else {
            continue;
        };
        for file in files.filter_map(Result::ok) {
            let file_name = file.file_name().to_string_lossy().into_owned();
            if is_file_name(&file_name) && !live.contains(&(name.clone(), file_name.clone())) {
                tracing::info!(
                    "removing {}: a snapshot wrote it but did not finish",
                    file.path().display()
                );
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
}

/// The Arrow schema a Parquet file holds.
pub fn schema_of(path: &Path) -> Result<arrow::datatypes::SchemaRef, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(|e| {
            format!(
                "cannot open {} (the snapshot manifest names it): {e}",
                path.display()
            )
        })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map(|b| b.schema().clone())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The earliest and latest `time` of a batch.
pub fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampNanosecondType;
    let time = batch
        .column_by_name(super::schema::TIME)?
        .as_primitive_opt::<TimestampNanosecondType>()?;
    let min = arrow::compute::min(time)?;
    let max = arrow::compute::max(time)?;
    Some((min, max))
}
