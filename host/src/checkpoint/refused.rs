//! Checkpoints the plugin's `Restore` refused, kept aside in `<dir>/refused/`: out of
//! the files that are loaded, counted and pruned, so that a state a later build may read
//! again is never deleted to make room for newer ones (or for the empty state a start
//! without it produced). At most [`KEEP_REFUSED`] are kept: the first ones, which hold
//! the state from before the build that refused them; once full, a new refusal is removed.

use std::fs::DirBuilder;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Refused checkpoints kept per plugin. What is kept is never evicted: a build refusing
/// its own checkpoints while crash-looping, or a v1/v2 rollback cycle, would otherwise
/// push out the pre-upgrade state these are kept for. Each holds at most
/// `max_state_bytes` of state, so the directory holds at most this many times that.
pub const KEEP_REFUSED: usize = 8;

/// The subdirectory of a plugin's checkpoint directory that holds the refused ones.
pub const REFUSED_DIR: &str = "refused";

/// The sequence number in a refused file's name (the one it had among the good ones).
fn sequence_in_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?.strip_suffix(".ckpt")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// The refused files in `dir`'s refused directory, by sequence, oldest first.
fn listed(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir.join(REFUSED_DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let sequence = entry.file_name().to_str().and_then(sequence_in_name);
        if let Some(sequence) = sequence.filter(|_| entry.file_type().is_ok_and(|t| t.is_file())) {
            found.push((sequence, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The highest sequence number among the refused files, so that a new checkpoint never
/// takes the number of one kept aside (0 when there are none or they cannot be read).
pub fn highest_sequence(dir: &Path) -> u64 {
    listed(dir)
        .ok()
        .and_then(|found| found.last().map(|(sequence, _)| *sequence))
        .unwrap_or(0)
}

/// What setting a refused file aside did.
#[derive(Debug, PartialEq, Eq)]
pub enum SetAside {
    /// Moved into the refused directory, now at this path.
    Kept(PathBuf),
    /// The refused directory already held [`KEEP_REFUSED`], all kept: this file, which
    /// the plugin refused, was removed instead.
    Removed(PathBuf),
}

/// Moves `file`, one of the host's checkpoints in `dir`, into `dir/refused/` (made
/// private, and never through a symlink), unless that already holds [`KEEP_REFUSED`]:
/// then `file` is removed, and nothing kept there is touched.
pub fn set_aside(dir: &Path, file: &Path) -> Result<SetAside, String> {
    let aside = dir.join(REFUSED_DIR);
    let shown = aside.display();
    match DirBuilder::new().mode(0o700).create(&aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {shown}: {e}")),
    }
    // The checkpoint directory is private to this user, so only this user could have
    // planted something here; still, a link or a file is never written through.
    let meta =
        std::fs::symlink_metadata(&aside).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{shown} belongs to uid {}, not to uid {me}",
            meta.uid()
        ));
    }
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} has no file name", file.display()))?;
    let found = listed(dir).map_err(|e| format!("cannot list {shown}: {e}"))?;
    if found.len() >= KEEP_REFUSED {
        // Left in place it would be offered (and refused) at every start, and counted
        // among the good ones the pruner keeps.
        std::fs::remove_file(file).map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
        return Ok(SetAside::Removed(file.to_owned()));
    }
    let kept = aside.join(name);
    std::fs::rename(file, &kept)
        .map_err(|e| format!("cannot move {} into {shown}: {e}", file.display()))?;
    Ok(SetAside::Kept(kept))
}
