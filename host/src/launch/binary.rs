//! What a plugin's binary must satisfy before it runs (production rules, SHA-256 pin),
//! and the private copy it runs from.

use std::path::Path;

use super::StartError;
use super::access::Runner;
use crate::config::pin_file;

/// What a binary must satisfy before it runs.
pub(super) struct BinaryPolicy {
    pub(super) production: bool,
    pub(super) pin: Option<String>,
}

/// Whether `path` starts with `#!`: run by an interpreter that reads it by name.
pub(super) fn is_script(path: &Path) -> bool {
    use std::io::Read;
    let mut start = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut start))
        .is_ok_and(|()| &start == b"#!")
}

/// Refuses a binary that anyone but its owner could have changed (production), or
/// whose SHA-256 differs from its pin (a pin is required in production). `copy` is
/// the file that will actually run, if it is a private copy.
pub(super) fn verify_binary(
    program: &Path,
    copy: Option<&Path>,
    policy: &BinaryPolicy,
) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    if program.components().count() <= 1 {
        return Ok(()); // a bare name from PATH: the interpreter, not the plugin's code
    }
    let refuse = |why: String| StartError::Refused {
        path: program.to_owned(),
        why,
    };
    if policy.production {
        let mut checked = vec![program.to_owned()];
        checked.extend(program.parent().map(Path::to_owned));
        for path in checked {
            let mode = std::fs::metadata(&path)
                .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?
                .permissions()
                .mode();
            if mode & 0o022 != 0 {
                let who = if mode & 0o002 != 0 { "world" } else { "group" };
                return Err(refuse(format!(
                    "{} is {who}-writable (mode {:o}); in production a plugin's binary and its \
                     directory may be writable by their owner only (chmod go-w {})",
                    path.display(),
                    mode & 0o7777,
                    path.display()
                )));
            }
        }
    }
    let pin_path = pin_file(program);
    let pin = match &policy.pin {
        Some(pin) => Some(pin.to_ascii_lowercase()),
        None => match std::fs::read_to_string(&pin_path) {
            // `sha256sum` output works as it is: the hash is the first word.
            Ok(text) => Some(
                text.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(refuse(format!(
                    "cannot read its pin {}: {e}",
                    pin_path.display()
                )));
            }
        },
    };
    let Some(pin) = pin else {
        if policy.production {
            return Err(refuse(format!(
                "no SHA-256 pin: production mode requires `sha256 = \"...\"` for this plugin or a {} file",
                pin_path.display()
            )));
        }
        return Ok(());
    };
    let actual =
        sha256_hex(copy.unwrap_or(program)).map_err(|e| refuse(format!("cannot hash it: {e}")))?;
    if actual != pin {
        return Err(refuse(format!(
            "its SHA-256 is {actual}, but the pin says {pin}"
        )));
    }
    Ok(())
}

fn sha256_hex(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Refuses a binary that its runner could not execute itself: a private copy is
/// executable by construction, so without this check a file that was never meant
/// to run (no execute bit, or behind a directory the runner cannot enter) would.
fn check_executable(from: &Path, meta: &std::fs::Metadata, runner: &Runner) -> Result<(), String> {
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if !runner.may_execute(meta) {
        use std::os::unix::fs::MetadataExt;
        return Err(format!(
            "uid {} may not execute it (mode {:o}, owner {}:{}); the plugin would not run without \
             baton's private copy either (chmod +x {})",
            runner.uid,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            from.display()
        ));
    }
    let full = std::fs::canonicalize(from).map_err(|e| format!("cannot resolve its path: {e}"))?;
    if let Some(dir) = full.parent()
        && let Some(closed) = runner.first_closed(dir)
    {
        return Err(format!(
            "uid {} may not enter {}, so it could not run the binary itself: {closed}",
            runner.uid,
            closed.dir.display()
        ));
    }
    Ok(())
}

/// Makes the host-owned directory that holds private copies. It lives in the host's
/// runtime directory, which no one else can write, and is searchable (0711) so that a
/// plugin running as another user can execute its copy without listing the others.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "{} exists and is not a directory of the host's",
                    dir.display()
                )))
            }
        }
        Err(e) => Err(e),
    }
}

/// Copies the binary to `to` for `runner`, refusing a file the runner could not execute
/// and a file that changed during the copy (it was still being written; its settled
/// version comes with the next change).
///
/// The copy is created new (`O_EXCL`, `O_NOFOLLOW`) in a directory only the host can
/// write, and its owner and mode are set on the open file, never by path: nothing
/// another user planted there can redirect the write or the chown.
pub(super) fn copy_binary(from: &Path, to: &Path, runner: &Runner) -> Result<(), StartError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let fail = |what: &str, source: std::io::Error| StartError::spawn(from, what, source);
    let stamp = |m: &std::fs::Metadata| (m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let mut source = std::fs::File::open(from).map_err(|e| fail("cannot read it", e))?;
    let before = source.metadata().map_err(|e| fail("cannot read it", e))?;
    check_executable(from, &before, runner).map_err(|why| StartError::Refused {
        path: from.to_owned(),
        why,
    })?;
    if let Some(dir) = to.parent() {
        private_dir(dir).map_err(|e| fail("cannot make the directory for private copies", e))?;
    }
    // Left by a host killed mid-copy; the directory is the host's own, so this is ours.
    let _ = std::fs::remove_file(to);
    let written = (|| {
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(to)?;
        std::io::copy(&mut source, &mut copy)?;
        if runner.uid != nix::unistd::geteuid().as_raw() {
            nix::unistd::fchown(&copy, Some(runner.uid.into()), Some(runner.gid.into()))?;
        }
        // Read and execute for its owner only: a script's interpreter reads it by name.
        nix::sys::stat::fchmod(&copy, nix::sys::stat::Mode::from_bits_truncate(0o500))?;
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(to);
        return Err(fail("cannot make its private copy", e));
    }
    let after = std::fs::metadata(from).map_err(|e| fail("cannot read it", e))?;
    if stamp(&before) != stamp(&after) {
        let _ = std::fs::remove_file(to);
        return Err(fail(
            "it changed while being copied",
            std::io::Error::other("still being written?"),
        ));
    }
    Ok(())
}
