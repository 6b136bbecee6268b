//! The write-ahead log: numbered files `<20 digits>.wal`, each a run of records
//! `[length u32 LE][crc32 u32 LE][payload]`. A write is answered once its record is in the
//! current file (and flushed, unless the client asked for no sync). A snapshot starts a new
//! file; the files it covers are removed once its Parquet files and manifest are on disk.
//!
//! After a crash the newest file may end in a record that was being written: that torn tail
//! is dropped (and the file truncated) with a warning naming the file and offset. A bad
//! record anywhere else is not a crash's doing, so tsdb refuses to start rather than drop
//! what lies after it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::persist;

/// A record longer than this is read as damage: the largest write body is far smaller.
const MAX_RECORD: usize = 1 << 30;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WalError(String);

/// What `open` read back: the records after the manifest's point, in order.
pub struct Replayed {
    pub records: Vec<Vec<u8>>,
    pub warnings: Vec<String>,
}

pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    bytes: u64,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

fn seq_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    persist::sync_dir(dir).map_err(WalError)
}

/// The log files in `dir`, by number; a link or anything but a plain file under a log
/// file's name is refused.
fn list(dir: &Path) -> Result<Vec<u64>, WalError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| WalError(format!("cannot list {}: {e}", dir.display())))?;
    let mut seqs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(seq_of) else {
            continue;
        };
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| WalError(format!("cannot read {}: {e}", path.display())))?;
        if !meta.file_type().is_file() {
            return Err(WalError(format!(
                "{} is not a plain file (a link?); tsdb reads its log only from its own files",
                path.display()
            )));
        }
        seqs.push(seq);
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Where the records of `data` end: the offset just past the last whole, intact record,
/// and the records up to it. `None` as the reason when every byte was read.
fn parse(data: &[u8]) -> (Vec<Vec<u8>>, usize, Option<String>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER {
            return (
                records,
                at,
                Some(format!("{} bytes of a record header", rest.len())),
            );
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return (records, at, Some(format!("a record length of {len} bytes")));
        }
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            return (
                records,
                at,
                Some(format!(
                    "a record of {len} bytes with {} present",
                    rest.len() - HEADER
                )),
            );
        };
        if crc32fast::hash(payload) != crc {
            return (
                records,
                at,
                Some("a record whose checksum does not match".into()),
            );
        }
        records.push(payload.to_vec());
        at += HEADER + len;
    }
    (records, at, None)
}

impl Wal {
    /// Reads back every file numbered after `through` (the manifest's point) and starts a
    /// new file for the writes to come. Files up to `through` are removed: a crash came
    /// between a snapshot's manifest and their removal.
    pub fn open(dir: &Path, through: u64) -> Result<(Self, Replayed), WalError> {
        let seqs = list(dir)?;
        let mut replayed = Replayed {
            records: Vec::new(),
            warnings: Vec::new(),
        };
        let mut removed = false;
        for &seq in seqs.iter().filter(|&&s| s <= through) {
            let path = dir.join(file_name(seq));
            std::fs::remove_file(&path)
                .map_err(|e| WalError(format!("cannot remove {}: {e}", path.display())))?;
            removed = true;
        }
        let live: Vec<u64> = seqs.iter().copied().filter(|&s| s > through).collect();
        for (i, &seq) in live.iter().enumerate() {
            let path = dir.join(file_name(seq));
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(persist::libc_nofollow())
                .open(&path)
                .map_err(|e| WalError(format!("cannot open {}: {e}", path.display())))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .map_err(|e| WalError(format!("cannot read {}: {e}", path.display())))?;
            let (records, end, damage) = parse(&data);
            replayed.records.extend(records);
            let Some(damage) = damage else {
                continue;
            };
            if i + 1 < live.len() {
                return Err(WalError(format!(
                    "{}: {damage} at offset {end}, and newer log files follow it, so this is \
                     not a torn tail from a crash; tsdb will not start and drop the {} bytes \
                     after it (move the file aside to start without them)",
                    path.display(),
                    data.len() - end
                )));
            }
            replayed.warnings.push(format!(
                "{}: a torn tail ({damage}) at offset {end}; dropping its {} bytes (a write \
                 cut off by a crash, never acknowledged)",
                path.display(),
                data.len() - end
            ));
            file.set_len(end as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| WalError(format!("cannot truncate {}: {e}", path.display())))?;
        }
        if removed {
            sync_dir(dir)?;
        }
        let seq = live.last().copied().unwrap_or(through).max(through) + 1;
        let file = Self::create(dir, seq)?;
        Ok((
            Self {
                dir: dir.to_owned(),
                file,
                seq,
                bytes: 0,
            },
            replayed,
        ))
    }

    fn create(dir: &Path, seq: u64) -> Result<File, WalError> {
        let path = dir.join(file_name(seq));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(persist::libc_nofollow())
            .open(&path)
            .map_err(|e| WalError(format!("cannot create {}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| WalError(format!("cannot read {}: {e}", path.display())))?;
        if meta.nlink() != 1 {
            return Err(WalError(format!("{} has other links", path.display())));
        }
        sync_dir(dir)?;
        Ok(file)
    }

    /// Appends `records` to the current file in one write (not yet flushed).
    pub fn append(&mut self, records: &[&[u8]]) -> Result<(), WalError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + HEADER).sum());
        for record in records {
            let len = u32::try_from(record.len())
                .ok()
                .filter(|&n| n as usize <= MAX_RECORD)
                .ok_or_else(|| WalError(format!("a log record of {} bytes", record.len())))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
            buf.extend_from_slice(record);
        }
        self.file.write_all(&buf).map_err(|e| {
            WalError(format!(
                "cannot write {}: {e}",
                self.dir.join(file_name(self.seq)).display()
            ))
        })?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Flushes what was appended to the disk.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file.sync_data().map_err(|e| {
            WalError(format!(
                "cannot sync {}: {e}",
                self.dir.join(file_name(self.seq)).display()
            ))
        })
    }

    /// Flushes the current file and starts the next; answers the number of the file closed
    /// (everything logged so far is in files up to it).
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        self.sync()?;
        let file = Self::create(&self.dir, self.seq + 1)?;
        self.file = file;
        self.seq += 1;
        self.bytes = 0;
        Ok(self.seq - 1)
    }

    /// Removes the files up to `through` (never the current one).
    pub fn remove_through(&mut self, through: u64) -> Result<(), WalError> {
        let mut removed = false;
        for seq in list(&self.dir)? {
            if seq <= through && seq < self.seq {
                let path = self.dir.join(file_name(seq));
                std::fs::remove_file(&path)
                    .map_err(|e| WalError(format!("cannot remove {}: {e}", path.display())))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes appended since the last snapshot started a file.
    pub fn bytes_since_rotate(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(dir: &Path, through: u64, records: &[&[u8]]) -> u64 {
        let (mut wal, _) = Wal::open(dir, through).expect("open");
        wal.append(records).expect("append");
        wal.sync().expect("sync");
        wal.seq
    }

    #[test]
    fn records_come_back_in_order_across_files_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_all(dir.path(), 0, &[b"one", b"two"]);
        write_all(dir.path(), 0, &[b"three"]);
        let (_, replayed) = Wal::open(dir.path(), 0).expect("open");
        assert_eq!(
            replayed.records,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(replayed.warnings.is_empty(), "{:?}", replayed.warnings);
    }

    #[test]
    fn files_a_snapshot_covered_are_skipped_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), 0).expect("open");
        wal.append(&[b"old"]).expect("append");
        let through = wal.rotate().expect("rotate");
        wal.append(&[b"new"]).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (_, replayed) = Wal::open(dir.path(), through).expect("open");
        assert_eq!(replayed.records, vec![b"new".to_vec()]);
        assert!(!dir.path().join(file_name(through)).exists());
    }

    #[test]
    fn a_torn_tail_is_dropped_with_a_warning_naming_file_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seq = write_all(dir.path(), 0, &[b"kept", b"cut off"]);
        let path = dir.path().join(file_name(seq));
        let full = std::fs::metadata(&path).expect("meta").len();
        let torn = full - 3;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(torn))
            .expect("tear");
        let (mut wal, replayed) = Wal::open(dir.path(), 0).expect("open");
        assert_eq!(replayed.records, vec![b"kept".to_vec()]);
        let kept_end = (HEADER + 4) as u64;
        assert_eq!(replayed.warnings.len(), 1);
        let warning = &replayed.warnings[0];
        assert!(warning.contains(&path.display().to_string()), "{warning}");
        assert!(warning.contains(&format!("offset {kept_end}")), "{warning}");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), kept_end);
        // The log goes on: a later write and the kept one both come back.
        wal.append(&[b"later"]).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (_, replayed) = Wal::open(dir.path(), 0).expect("open");
        assert_eq!(replayed.records, vec![b"kept".to_vec(), b"later".to_vec()]);
        assert!(replayed.warnings.is_empty(), "{:?}", replayed.warnings);
    }

    #[test]
    fn damage_before_the_newest_file_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = write_all(dir.path(), 0, &[b"first"]);
        write_all(dir.path(), 0, &[b"second"]);
        let path = dir.path().join(file_name(first));
        let mut data = std::fs::read(&path).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).expect("write");
        let err = Wal::open(dir.path(), 0).err().expect("refused").to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert!(err.contains("offset 0"), "{err}");
    }

    #[test]
    fn a_link_under_a_log_name_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"x").expect("write");
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir(&wal_dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, wal_dir.join(file_name(1))).expect("link");
        let err = Wal::open(&wal_dir, 0).err().expect("refused").to_string();
        assert!(err.contains("not a plain file"), "{err}");
    }
}
