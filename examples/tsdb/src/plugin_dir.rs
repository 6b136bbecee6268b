//! The plugin directory (`--plugin-dir`, `plugin_dir`): where a trigger's
//! `plugin_filename` is found and where plugin files are uploaded. A name is a relative
//! path of plain parts; nothing resolved or written here leaves the directory, through
//! `..`, an absolute path or a link.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// One uploaded file's largest size.
pub const MAX_FILE: usize = 1 << 20;
/// Files in one directory upload.
pub const MAX_FILES: usize = 64;
/// A name's longest length, and its deepest nesting.
const MAX_NAME: usize = 255;
const MAX_DEPTH: usize = 8;

/// The directory.
#[derive(Debug, Clone)]
pub struct PluginDir {
    root: PathBuf,
}

impl PluginDir {
    /// The directory at `root`, made if missing.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file `name` names, which must exist inside the directory once every link
    /// on the way is followed. `field` names the request's field in errors.
    pub fn resolve(&self, name: &str, field: &str) -> Result<PathBuf, String> {
        let relative = checked_name(name, field)?;
        let path = self.root.join(&relative);
        let real = path
            .canonicalize()
            .map_err(|_| format!("{field}: no plugin file {name:?} in the plugin directory"))?;
        if !real.starts_with(&self.root) {
            return Err(format!(
                "{field}: {name:?} leads out of the plugin directory (a link?)"
            ));
        }
        if !real.is_file() {
            return Err(format!("{field}: {name:?} is not a file"));
        }
        Ok(real)
    }

    /// Writes `content` as file `name`, whole (a temp file renamed over it: a link
    /// there is replaced, never followed), making its parent directories; a part of
    /// the way that is a link or a file is refused.
    pub fn put(&self, name: &str, content: &[u8], field: &str) -> Result<(), String> {
        let relative = checked_name(name, field)?;
        if content.len() > MAX_FILE {
            return Err(format!("{field}: {name:?} is larger than {MAX_FILE} bytes"));
        }
        let mut dir = self.root.clone();
        let parts: Vec<_> = relative.components().collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "{field}: {name:?}: {} is not a directory (a link or a file)",
                        dir.display()
                    ));
                }
                Err(_) => std::fs::create_dir(&dir)
                    .map_err(|e| format!("{field}: cannot make {}: {e}", dir.display()))?,
            }
        }
        let target = self.root.join(&relative);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{field}: {name:?} is a directory"));
        }
        let temp = dir.join(format!(".upload-{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .and_then(|mut f| f.write_all(content).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temp, &target));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("{field}: cannot write {name:?}: {e}")
        })
    }
}

/// `name` as a relative path of plain parts: no `..`, no root, no empty or hidden part.
pub fn checked_name(name: &str, field: &str) -> Result<PathBuf, String> {
    let bad = |why: &str| Err(format!("{field}: {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_NAME {
        return bad(&format!("must be 1 to {MAX_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return bad("holds a control character or a backslash");
    }
    let path = Path::new(name);
    let mut depth = 0;
    for part in path.components() {
        match part {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => depth += 1,
            Component::Normal(_) => return bad("has a hidden part (starting with '.')"),
            Component::ParentDir => return bad("leads out of the plugin directory ('..')"),
            Component::RootDir | Component::Prefix(_) => {
                return bad("is absolute: name a file inside the plugin directory");
            }
            Component::CurDir => return bad("has a '.' part"),
        }
    }
    if depth == 0 || depth > MAX_DEPTH {
        return bad(&format!("must have 1 to {MAX_DEPTH} parts"));
    }
    Ok(path.to_path_buf())
}
