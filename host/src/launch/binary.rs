//! What a plugin's binary must satisfy before it runs (production rules, SHA-256 pin),
//! and the private copy it runs from.

use std::path::{Path, PathBuf};

use super::StartError;

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

/// `<binary>.sha256`, the pin file a deploy may write beside the binary.
pub(super) fn pin_file(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
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

/// Copies the binary to `to` (mode 0700), refusing a file that changed during the copy:
/// it was still being written, and its settled version will come with the next change.
pub(super) fn copy_binary(from: &Path, to: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let fail = |what: &str, source: std::io::Error| StartError::Spawn {
        command: from.to_owned(),
        source: std::io::Error::new(source.kind(), format!("{what}: {source}")),
    };
    let stamp = |m: &std::fs::Metadata| (m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let before = std::fs::metadata(from).map_err(|e| fail("cannot read it", e))?;
    if let Some(dir) = to.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("cannot make the directory for private copies", e))?;
    }
    std::fs::copy(from, to).map_err(|e| fail("cannot copy it for private use", e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("cannot make the private copy executable", e))?;
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
