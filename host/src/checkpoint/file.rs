//! Checkpoint files on disk: their names and header, the private directory they live
//! in, and writing and reading them. All of it blocks: it runs off the async workers.
//!
//! Format (little-endian): `BTNCKPT2` (8 bytes), schema version (u32), reserved (u32,
//! 0), sequence (u64, the same as in the file's name), state length (u64), CRC-32 of the
//! state (u32), then the state. Name: `ckpt-<sequence, 20 digits>.ckpt`. Files of the
//! previous format (`BTNCKPT1`, named `<unix ms>-<n>.ckpt`) are still read, as older
//! than any file of this one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nix::fcntl::OFlag;

use super::Checkpoint;

const MAGIC: &[u8; 8] = b"BTNCKPT2";
pub(super) const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 4;
const LEGACY_MAGIC: &[u8; 8] = b"BTNCKPT1";
const LEGACY_HEADER: usize = 8 + 4 + 4 + 8 + 4;

/// What a checkpoint file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub schema_version: u32,
    pub sequence: u64,
    pub len: u64,
    pub crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.schema_version.to_le_bytes());
        h[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        h[24..32].copy_from_slice(&self.len.to_le_bytes());
        h[32..36].copy_from_slice(&self.crc.to_le_bytes());
        h
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

/// The file name of checkpoint number `sequence`.
pub(super) fn file_name(sequence: u64) -> String {
    format!("ckpt-{sequence:020}.ckpt")
}

fn temp_name(sequence: u64) -> String {
    format!(".ckpt-{sequence:020}.tmp")
}

fn all_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

fn sequence_in_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?.strip_suffix(".ckpt")?;
    all_digits(digits, 20).then(|| digits.parse().ok())?
}

fn is_legacy_name(name: &str) -> bool {
    name.strip_suffix(".ckpt")
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(ms, n)| all_digits(ms, 16) && all_digits(n, 6))
}

/// One of this host's checkpoint files (its name and header say so; its state may
/// still be damaged).
#[derive(Debug, Clone)]
pub(super) struct OwnFile {
    pub path: PathBuf,
    /// 0 for a file of the previous format.
    pub sequence: u64,
    legacy: bool,
}

/// What a plugin's checkpoint directory holds.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// This host's files, oldest first.
    pub own: Vec<OwnFile>,
    /// Files that look like checkpoints but are not this host's, with why.
    pub strangers: Vec<(PathBuf, String)>,
    /// The highest sequence among the refused files kept aside.
    refused_highest: u64,
}

impl Listing {
    /// The highest number in use, refused files included: a new checkpoint never
    /// takes the name of one kept aside.
    pub fn highest_sequence(&self) -> u64 {
        self.own
            .last()
            .map_or(0, |f| f.sequence)
            .max(self.refused_highest)
    }
}

/// Opens a file for reading without following a symlink in its last component.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Sorts the directory's entries into this host's files and strangers. Only names
/// ending in `.ckpt` are looked at; the host's own temp files are not listed.
pub(super) fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.ends_with(".ckpt")) else {
            continue;
        };
        let sequence = sequence_in_name(name);
        let legacy = sequence.is_none() && is_legacy_name(name);
        if sequence.is_none() && !legacy {
            let why = "its name is not of the host's form, ckpt-<sequence>.ckpt";
            listing.strangers.push((path, why.into()));
            continue;
        }
        if !entry.file_type()?.is_file() {
            listing
                .strangers
                .push((path, "it is not a regular file".into()));
            continue;
        }
        match check_header(&path, sequence) {
            Ok(()) => listing.own.push(OwnFile {
                path,
                sequence: sequence.unwrap_or(0),
                legacy,
            }),
            Err(why) => listing.strangers.push((path, why)),
        }
    }
    listing
        .own
        .sort_by(|a, b| (a.sequence, &a.path).cmp(&(b.sequence, &b.path)));
    listing.strangers.sort();
    listing.refused_highest = super::refused::highest_sequence(dir);
    Ok(listing)
}

/// Whether the file's header is the host's, for the format its name says
/// (`sequence`: `None` for the previous format).
fn check_header(path: &Path, sequence: Option<u64>) -> Result<(), String> {
    let mut head = [0u8; HEADER];
    let mut file = open_nofollow(path).map_err(|e| format!("it cannot be read: {e}"))?;
    let mut got = 0;
    while got < HEADER {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("it cannot be read: {e}")),
        }
    }
    let (magic, header) = match sequence {
        Some(_) => (MAGIC, HEADER),
        None => (LEGACY_MAGIC, LEGACY_HEADER),
    };
    if got < header || &head[..8] != magic {
        return Err("its header is not the one its name calls for".into());
    }
    match sequence {
        Some(seq) if u64_at(&head, 16) != seq => Err(format!(
            "its header says checkpoint {}, its name {seq}",
            u64_at(&head, 16)
        )),
        _ => Ok(()),
    }
}

/// Why a file of the host's could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Truncated, damaged or unreadable.
    Corrupt(String),
    /// Holds more state than `max_state_bytes` allows.
    TooLarge {
        /// The state's length, from the header.
        len: u64,
    },
}

/// Reads one of the host's files, refusing one whose state is over `limit` bytes
/// before reading it.
pub(super) fn read(file: &OwnFile, limit: u64) -> Result<Checkpoint, Unusable> {
    let corrupt = Unusable::Corrupt;
    let mut f = open_nofollow(&file.path).map_err(|e| corrupt(format!("cannot read it: {e}")))?;
    let size = f
        .metadata()
        .map_err(|e| corrupt(format!("cannot read it: {e}")))?
        .len();
    let header = if file.legacy { LEGACY_HEADER } else { HEADER };
    if size < header as u64 {
        return Err(corrupt(format!(
            "truncated: {size} bytes, shorter than the {header}-byte header"
        )));
    }
    let mut head = vec![0u8; header];
    f.read_exact(&mut head)
        .map_err(|e| corrupt(format!("cannot read it: {e}")))?;
    let schema_version = u32_at(&head, 8);
    let (len, crc) = if file.legacy {
        (u64_at(&head, 16), u32_at(&head, 24))
    } else {
        (u64_at(&head, 24), u32_at(&head, 32))
    };
    if len > limit {
        return Err(Unusable::TooLarge { len });
    }
    let held = size - header as u64;
    if held != len {
        return Err(corrupt(format!(
            "truncated: the header says {len} bytes of state, the file holds {held}"
        )));
    }
    let mut state = Vec::new();
    state
        .try_reserve_exact(len as usize)
        .map_err(|e| corrupt(format!("no memory for its {len} bytes: {e}")))?;
    f.take(len)
        .read_to_end(&mut state)
        .map_err(|e| corrupt(format!("cannot read it: {e}")))?;
    let actual = crc32fast::hash(&state);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch: the header says {crc:08x}, the state hashes to {actual:08x}"
        )));
    }
    Ok(Checkpoint {
        schema_version,
        state: Bytes::from(state),
    })
}

/// Makes `dir` (`state_dir/<plugin>`) a private directory of this user: created 0700
/// (`state_dir` too, when it is missing), or an existing one checked and tightened to
/// 0700. Returns what it had to tighten. A symlink, a non-directory or another user's
/// directory is refused: the files hold the plugin's state.
pub(super) fn prepare_dir(dir: &Path) -> Result<Option<String>, String> {
    let shown = dir.display();
    let open = || {
        OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
            .open(dir)
    };
    let handle = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create the checkpoint directory {shown}: {e}"))?;
            open()
        }
        other => other,
    };
    let handle = handle.map_err(|e| {
        let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
        match e.raw_os_error().map(nix::errno::Errno::from_raw) {
            Some(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) if link => format!(
                "the checkpoint directory {shown} is a symbolic link; checkpoints are only kept in a real directory (point state_dir at the real path)"
            ),
            Some(nix::errno::Errno::ENOTDIR) => {
                format!("the checkpoint directory {shown} is not a directory")
            }
            _ => format!("cannot open the checkpoint directory {shown}: {e}"),
        }
    })?;
    let meta = handle
        .metadata()
        .map_err(|e| format!("cannot inspect the checkpoint directory {shown}: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "the checkpoint directory {shown} belongs to uid {}, not to this host's user (uid {me}); it would let that user read or replace the plugin's state",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    // fchmod on the directory opened above: the path cannot be swapped in between.
    handle
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| {
            format!(
                "the checkpoint directory {shown} is mode {mode:04o}, open to other users, and cannot be made 0700: {e}"
            )
        })?;
    Ok(Some(format!(
        "the checkpoint directory {shown} was mode {mode:04o}, open to other users; it is now 0700"
    )))
}

/// A checkpoint being written: a private (0600) temp file beside its final name,
/// renamed into place only once complete and synced. Dropped unfinished, it is removed.
pub(super) struct TempFile {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    sequence: u64,
    done: bool,
}

impl TempFile {
    /// Creates the temp file of checkpoint `sequence`. It is created new and never
    /// through a symlink (O_EXCL, O_NOFOLLOW), so nothing planted at its name is written.
    pub fn create(dir: &Path, sequence: u64) -> std::io::Result<Self> {
        let path = dir.join(temp_name(sequence));
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OFlag::O_NOFOLLOW.bits())
                .open(&path)
        };
        let mut file = match open() {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Left by a write cut short by a crash, in a directory only this user
                // can write to. Unlinking removes a symlink itself, never its target.
                std::fs::remove_file(&path)?;
                open()?
            }
            other => other?,
        };
        // Filled in by `commit`, once the length and checksum are known.
        file.write_all(&[0u8; HEADER])?;
        Ok(Self {
            file,
            path,
            dir: dir.to_owned(),
            sequence,
            done: false,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)
    }

    /// Writes the header, syncs, renames the file into place and syncs the directory.
    pub fn commit(mut self, schema_version: u32, len: u64, crc: u32) -> std::io::Result<PathBuf> {
        let header = Header {
            schema_version,
            sequence: self.sequence,
            len,
            crc,
        };
        self.file.write_all_at(&header.encode(), 0)?;
        self.file.sync_all()?;
        let path = self.dir.join(file_name(self.sequence));
        std::fs::rename(&self.path, &path)?;
        self.done = true;
        // The rename itself must survive a power cut, too.
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// Sends the data to /dev/full from now on: writes then fail with a real ENOSPC.
    #[cfg(test)]
    pub fn fill_the_disk(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new().write(true).open("/dev/full")?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the host's own files beyond the newest `keep`; strangers are never touched.
pub(super) fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let listing = list(dir)?;
    let old = listing.own.len().saturating_sub(keep);
    for file in &listing.own[..old] {
        std::fs::remove_file(&file.path)?;
    }
    Ok(())
}
