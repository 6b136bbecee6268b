//! Whether a plugin's own user can reach a directory the host hands it (its working
//! directory, the runtime directory its socket is in): checked before the fork, so that
//! a refusal names the closed directory and the fix instead of failing inside the plugin
//! as a crash.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory on the way that the user may not pass.
#[derive(Debug)]
pub struct Closed {
    /// The first directory (from `/`) it may not search.
    pub dir: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner.
    pub owner: u32,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (mode {:o}, owner uid {}) does not let it through",
            self.dir.display(),
            self.mode & 0o7777,
            self.owner
        )
    }
}

/// The first of `path` and its ancestors that `uid` (with only `gid`, as a plugin gets
/// no supplementary groups) may not search, read from their permission bits. ACLs are
/// not read: a directory they open is still reported closed, which errs on the side of
/// saying so. A directory that cannot be read at all is reported closed too.
pub fn first_closed(path: &Path, uid: u32, gid: u32) -> Option<Closed> {
    if uid == 0 {
        return None;
    }
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    for dir in ancestors {
        let closed = |mode, owner| Closed {
            dir: dir.to_owned(),
            mode,
            owner,
        };
        let Ok(meta) = std::fs::metadata(dir) else {
            return Some(closed(0, 0));
        };
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            return Some(closed(meta.mode(), meta.uid()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_first_directory_closed_to_the_user_is_named_and_root_passes_everywhere() {
        let top = tempfile::tempdir().expect("a temp dir");
        let inner = top.path().join("a/b");
        std::fs::create_dir_all(&inner).expect("mkdir");
        let chmod = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        chmod(top.path(), 0o711);
        chmod(&top.path().join("a"), 0o700);
        chmod(&inner, 0o755);
        let owner = std::fs::metadata(top.path()).expect("stat").uid();
        // Some uid that owns none of them and is in none of their groups.
        let stranger = owner.wrapping_add(12345);
        let closed = first_closed(&inner, stranger, stranger).expect("a closed directory");
        assert_eq!(closed.dir, top.path().join("a"));
        assert!(closed.to_string().contains("mode 700"), "{closed}");
        assert!(first_closed(&inner, 0, 0).is_none());
        assert!(first_closed(&inner, owner, owner).is_none());
        chmod(&top.path().join("a"), 0o701);
        assert!(first_closed(&inner, stranger, stranger).is_none());
    }
}
