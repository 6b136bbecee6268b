//! Whether a plugin's user can reach a directory the host hands it (its working
//! directory, the runtime directory its socket is in) or execute its binary, judged with
//! exactly the groups it will run with: checked before the fork, so that a refusal
//! names the closed directory and the fix instead of failing inside the plugin.

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

/// Who will run a plugin, with exactly the groups it will hold: its own group alone
/// when the host switches to its user (the switch drops every supplementary group), or
/// the host's groups when it runs as the host.
#[derive(Clone, Debug)]
pub(super) struct Runner {
    pub(super) uid: u32,
    pub(super) gid: u32,
    groups: Vec<u32>,
}

impl Runner {
    /// The host itself, with its supplementary groups.
    pub(super) fn host() -> Self {
        let gid = nix::unistd::getegid().as_raw();
        let mut groups = vec![gid];
        groups.extend(
            nix::unistd::getgroups()
                .unwrap_or_default()
                .iter()
                .map(|g| g.as_raw()),
        );
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            gid,
            groups,
        }
    }

    /// A plugin's own user: `gid` and no supplementary groups.
    pub(super) fn user(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            groups: vec![gid],
        }
    }

    /// Whether the OS would let this runner execute (files) or search (directories)
    /// something with this owner and mode, read from the permission bits: one class of
    /// bits applies, as in the kernel. ACLs are not read.
    pub(super) fn may_execute(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        if self.uid == 0 {
            return meta.is_dir() || mode & 0o111 != 0;
        }
        let bit = if meta.uid() == self.uid {
            0o100
        } else if self.groups.contains(&meta.gid()) {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }

    /// The first of `path` and its ancestors (from `/`) this runner may not search. A
    /// directory that cannot be read at all is reported closed too, and one an ACL
    /// opens is still reported closed: it errs on the side of saying so.
    pub(super) fn first_closed(&self, path: &Path) -> Option<Closed> {
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
            if !self.may_execute(&meta) {
                return Some(closed(meta.mode(), meta.uid()));
            }
        }
        None
    }
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
        let first_closed = |uid, gid| Runner::user(uid, gid).first_closed(&inner);
        let closed = first_closed(stranger, stranger).expect("a closed directory");
        assert_eq!(closed.dir, top.path().join("a"));
        assert!(closed.to_string().contains("mode 700"), "{closed}");
        assert!(first_closed(0, 0).is_none());
        assert!(first_closed(owner, owner).is_none());
        chmod(&top.path().join("a"), 0o701);
        assert!(first_closed(stranger, stranger).is_none());
        // Only the group it runs with counts: a group of the host's opens nothing.
        chmod(&top.path().join("a"), 0o710);
        let group = std::fs::metadata(top.path().join("a")).expect("stat").gid();
        assert!(first_closed(stranger, group).is_none());
        assert!(first_closed(stranger, group.wrapping_add(1)).is_some());
    }
}
