//! Checkpoints: snapshots of a plugin's state that the host keeps, so a crash (or a
//! host restart) resumes from recent state instead of empty. In memory always; on disk
//! under `state_dir/<plugin>/` when configured, written atomically (temp file, fsync,
//! rename, fsync of the directory) with a checksum, keeping the last few.
//!
//! File format (little-endian): `BTNCKPT1` (8 bytes), schema version (u32), reserved
//! (u32, 0), state length (u64), CRC-32 of the state (u32), then the state.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"BTNCKPT1";
const HEADER: usize = 8 + 4 + 4 + 8 + 4;
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
    /// The newest valid checkpoint and its file.
    pub checkpoint: Option<(Checkpoint, PathBuf)>,
    /// Newer files that were not valid, with why.
    pub corrupt: Vec<(PathBuf, String)>,
}

/// The checkpoints of one plugin.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: Option<PathBuf>,
    latest: Option<Checkpoint>,
    /// Names sort by time: `<unix ms, 16 digits>-<sequence>.ckpt`.
    sequence: u64,
}

impl CheckpointStore {
    /// A store for one plugin; `dir` is `state_dir/<plugin>` or `None` for memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            latest: None,
            sequence: 0,
        }
    }

    /// The newest checkpoint taken by this host, if any.
    pub fn latest(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// Keeps `checkpoint` in memory and, with a directory, on disk. A failed write
    /// (a full disk, say) leaves every earlier file as it was.
    pub fn save(&mut self, checkpoint: Checkpoint) -> std::io::Result<Option<PathBuf>> {
        self.latest = Some(checkpoint.clone());
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir)?;
        self.sequence += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{now:016}-{:06}.ckpt", self.sequence);
        let path = dir.join(&name);
        // One writer per plugin (its supervisor), so one temp name is enough.
        let tmp = dir.join(".checkpoint.tmp");
        let written = write_file(&tmp, &checkpoint).and_then(|()| {
            std::fs::rename(&tmp, &path)?;
            // The rename itself must survive a power cut, too.
            std::fs::File::open(dir)?.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        for old in files(dir).into_iter().rev().skip(KEEP) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Some(path))
    }

    /// The newest valid checkpoint on disk, skipping (and naming) corrupt ones.
    pub fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        let Some(dir) = &self.dir else {
            return loaded;
        };
        for path in files(dir).into_iter().rev() {
            match read_file(&path) {
                Ok(checkpoint) => {
                    loaded.checkpoint = Some((checkpoint, path));
                    break;
                }
                Err(why) => loaded.corrupt.push((path, why)),
            }
        }
        loaded
    }
}

/// Checkpoint files in `dir`, oldest first.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "ckpt")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn write_file(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&checkpoint.schema_version.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(checkpoint.state.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&checkpoint.state).to_le_bytes());
    file.write_all(&header)?;
    file.write_all(&checkpoint.state)?;
    file.sync_all()
}

fn read_file(path: &Path) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a baton checkpoint (wrong magic bytes)".into());
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let schema_version = u32_at(8);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let len = u64::from_le_bytes(len);
    let crc = u32_at(24);
    let state = &bytes[HEADER..];
    if state.len() as u64 != len {
        return Err(format!(
            "truncated: the header says {len} bytes of state, the file holds {}",
            state.len()
        ));
    }
    let actual = crc32fast::hash(state);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: the header says {crc:08x}, the state hashes to {actual:08x}"
        ));
    }
    Ok(Checkpoint {
        schema_version,
        state: Bytes::copy_from_slice(state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(n: u8) -> Checkpoint {
        Checkpoint {
            schema_version: 1,
            state: Bytes::from(vec![n; 100]),
        }
    }

    #[test]
    fn saves_load_newest_and_keep_a_few() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut store = CheckpointStore::new(Some(dir.path().join("counter")));
        for n in 1..=5 {
            store.save(ckpt(n))?;
        }
        assert_eq!(files(&dir.path().join("counter")).len(), KEEP);
        let loaded = store.load();
        let (c, _) = loaded.checkpoint.expect("a checkpoint");
        assert_eq!(c.state[0], 5);
        assert!(loaded.corrupt.is_empty());
        Ok(())
    }

    #[test]
    fn corrupt_and_truncated_files_are_named_and_skipped() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut store = CheckpointStore::new(Some(dir.path().to_owned()));
        store.save(ckpt(1))?;
        let newest = store.save(ckpt(2))?.expect("a file");
        let mut bytes = std::fs::read(&newest)?;
        bytes[HEADER + 10] ^= 0xff;
        std::fs::write(&newest, &bytes)?;
        let loaded = store.load();
        assert_eq!(loaded.checkpoint.expect("the older one").0.state[0], 1);
        assert_eq!(loaded.corrupt.len(), 1);
        assert!(
            loaded.corrupt[0].1.contains("checksum mismatch"),
            "{:?}",
            loaded.corrupt
        );

        std::fs::write(&newest, &bytes[..HEADER + 5])?;
        assert!(store.load().corrupt[0].1.contains("truncated"));
        Ok(())
    }

    #[test]
    fn a_failed_write_keeps_the_last_good_checkpoint() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let plugin_dir = dir.path().join("p");
        let mut store = CheckpointStore::new(Some(plugin_dir.clone()));
        store.save(ckpt(7))?;
        // Writes to /dev/full fail with ENOSPC: a full disk, for real.
        std::os::unix::fs::symlink("/dev/full", plugin_dir.join(".checkpoint.tmp"))?;
        let refused = store.save(ckpt(8));
        let err = refused.expect_err("the disk is full");
        assert_eq!(err.raw_os_error(), Some(28), "{err}"); // ENOSPC
        assert_eq!(store.load().checkpoint.expect("still there").0.state[0], 7);
        assert_eq!(files(&plugin_dir).len(), 1);
        // And the next save, with space again, works.
        store.save(ckpt(9))?;
        assert_eq!(store.load().checkpoint.expect("newest").0.state[0], 9);
        Ok(())
    }
}
