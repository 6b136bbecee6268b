//! Replacing a plugin's file the ways deploys, cargo and `cp` do.

use std::path::Path;

/// Replaces `path` with `content` the way deploys do: write a temp file beside it, rename over.
pub fn replace_by_rename(path: &Path, content: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, content).expect("write the new file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Replaces `path` by a hard link to `source`, as cargo does (remove, then link).
pub fn replace_by_hard_link(path: &Path, source: &Path) {
    let _ = std::fs::remove_file(path);
    std::fs::hard_link(source, path).expect("hard link");
}

/// Rewrites `path` in place (same inode), as `cp` over an existing file does.
pub fn rewrite_in_place(path: &Path, content: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open for rewrite");
    f.write_all(content).expect("rewrite");
}

/// A shell script that runs `command` (for plugins replaced by a wrapper).
pub fn script(body: &str) -> Vec<u8> {
    format!("#!/bin/sh\n{body}\n").into_bytes()
}
