//! The plugin directory (`--plugin-dir`, `plugin_dir`): where a trigger's
//! `plugin_filename` is found and where plugin files are uploaded. A name is a relative
//! path of plain parts; nothing resolved or written here leaves the directory, through
//! `..`, an absolute path or a link.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// One uploaded file's largest size.
pub const MAX_FILE: usize = 1 << 20;
/// Files in one directory upload.
pub const MAX_FILES: usize = 64;
/// The most files the whole directory may hold, and their largest total size: uploads
/// are open to whoever reaches the port, so without these they could fill the disk.
pub const MAX_DIR_FILES: usize = 1000;
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// A name's longest length, and its deepest nesting.
const MAX_NAME: usize = 255;
const MAX_DEPTH: usize = 8;

/// The directory.
#[derive(Debug, Clone)]
pub struct PluginDir {
    root: PathBuf,
    /// Held by an upload from its first check to its last write, so that two uploads
    /// cannot both pass the bounds, or clash on disk after both were checked.
    writing: Arc<Mutex<()>>,
}

/// One file of an upload: its name in the directory, its bytes, and the request's
/// field that named it (for errors).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub name: &'a str,
    pub content: &'a [u8],
    pub field: &'a str,
}

impl PluginDir {
    /// The directory at `root`, made if missing. Like the catalog's, it must be
    /// tsdb's own and writable by no one else: whoever can write in it chooses the code
    /// triggers run.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        let (uid, mode) = (meta.uid(), meta.permissions().mode() & 0o7777);
        if !meta.is_dir() || uid != own_uid() || mode & 0o022 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "plugin_dir {}: must be a directory of tsdb's own user (uid {}) that \
                     no one else may write, not uid {uid} with mode {mode:04o} (chmod go-w \
                     it, or choose another plugin_dir)",
                    root.display(),
                    own_uid()
                ),
            ));
        }
        Ok(Self {
            root,
            writing: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file `name` names, which must exist inside the directory once every link
    /// on the way is followed. `field` names the request's field in errors.
    pub fn resolve(&self, name: &str, field: &str) -> Result<PathBuf, String> {
        let real = self.resolve_entry(name, field)?;
        if !real.is_file() {
            return Err(format!("{field}: {name:?} is not a file"));
        }
        Ok(real)
    }

    /// The plugin `name` names: a file, or a directory holding `__init__.py` (an
    /// InfluxDB 3 plugin as a package), inside the directory as [`Self::resolve`] wants.
    pub fn resolve_plugin(&self, name: &str, field: &str) -> Result<PathBuf, String> {
        let real = self.resolve_entry(name.trim_end_matches('/'), field)?;
        if real.is_dir() && !real.join("__init__.py").is_file() {
            return Err(format!(
                "{field}: {name:?} is a directory without __init__.py, so not a plugin package"
            ));
        }
        if !real.is_file() && !real.is_dir() {
            return Err(format!("{field}: {name:?} is not a file"));
        }
        Ok(real)
    }

    fn resolve_entry(&self, name: &str, field: &str) -> Result<PathBuf, String> {
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
        Ok(real)
    }

    /// Writes `content` as file `name`, as [`put_all`](Self::put_all) does.
    pub fn put(&self, name: &str, content: &[u8], field: &str) -> Result<(), String> {
        self.put_all(&[Upload {
            name,
            content,
            field,
        }])
    }

    /// Writes each file whole (a temp file renamed over it: a link there is replaced,
    /// never followed), making its parent directories. Everything is checked before
    /// the first write, so a refused upload writes nothing: each name, that no two
    /// name the same file or one the other's folder, that no part of the way is a link
    /// or a file on disk, and the directory's bounds.
    pub fn put_all(&self, files: &[Upload<'_>]) -> Result<(), String> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut planned: Vec<(PathBuf, Upload<'_>)> = Vec::with_capacity(files.len());
        for file in files {
            let relative = checked_name(file.name, file.field)?;
            if file.content.len() > MAX_FILE {
                return Err(format!(
                    "{}: {:?} is larger than {MAX_FILE} bytes",
                    file.field, file.name
                ));
            }
            for (earlier, other) in &planned {
                clash(file, &relative, other, earlier)?;
            }
            self.walk(&relative, file, false)?;
            planned.push((relative, *file));
        }
        self.check_bounds(&planned)?;
        for (relative, file) in &planned {
            let dir = self.walk(relative, file, true)?;
            write_whole(&dir, &self.root.join(relative), file)?;
        }
        Ok(())
    }

    /// Goes down to `relative`'s folder, each part of the way a real directory (made
    /// when `make`, else the first missing part ends the check), and refuses a
    /// directory where the file goes. Errors name parts relative to the plugin
    /// directory: its place on the server is not the caller's business.
    fn walk(&self, relative: &Path, file: &Upload<'_>, make: bool) -> Result<PathBuf, String> {
        let Upload { name, field, .. } = file;
        let mut dir = self.root.clone();
        let mut way = PathBuf::new();
        let parts: Vec<_> = relative.components().collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            way.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "{field}: {name:?}: {} is not a directory (a link or a file)",
                        way.display()
                    ));
                }
                Err(_) if !make => return Ok(dir),
                Err(_) => std::fs::create_dir(&dir).map_err(|e| {
                    format!("{field}: cannot make {}: {}", way.display(), plain(&e))
                })?,
            }
        }
        if std::fs::symlink_metadata(self.root.join(relative)).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{field}: {name:?} is a directory"));
        }
        Ok(dir)
    }

    /// Refuses the upload if, with its files written, the directory would hold more
    /// than [`MAX_DIR_FILES`] files or [`MAX_DIR_BYTES`] bytes (a file replaced counts
    /// once, at its new size).
    fn check_bounds(&self, planned: &[(PathBuf, Upload<'_>)]) -> Result<(), String> {
        let Some((_, first)) = planned.first() else {
            return Ok(());
        };
        let (mut files, mut bytes) = usage(&self.root).map_err(|e| {
            format!(
                "{}: cannot read the plugin directory: {}",
                first.field,
                plain(&e)
            )
        })?;
        for (relative, file) in planned {
            match std::fs::symlink_metadata(self.root.join(relative)) {
                Ok(m) => bytes = bytes.saturating_sub(m.len()),
                Err(_) => files += 1,
            }
            bytes += file.content.len() as u64;
            if files > MAX_DIR_FILES || bytes > MAX_DIR_BYTES {
                return Err(format!(
                    "{}: {:?}: the plugin directory would hold {files} files of {bytes} \
                     bytes, past its bounds ({MAX_DIR_FILES} files, {MAX_DIR_BYTES} bytes)",
                    file.field, file.name
                ));
            }
        }
        Ok(())
    }
}

/// Refuses two files of one upload that name the same file, or one the other's folder.
fn clash(
    file: &Upload<'_>,
    path: &Path,
    other: &Upload<'_>,
    other_path: &Path,
) -> Result<(), String> {
    let (field, name) = (file.field, file.name);
    if path == other_path {
        return Err(format!(
            "{field}: {name:?} is uploaded twice (also as {})",
            other.field
        ));
    }
    if path.starts_with(other_path) || other_path.starts_with(path) {
        return Err(format!(
            "{field}: {name:?} and {:?} ({}) would be a file and a folder of the same name",
            other.name, other.field
        ));
    }
    Ok(())
}

/// Writes `file` whole at `target` in `dir`, through a temp file of its own: two
/// uploads at once never share one, so neither can delete or rename the other's.
fn write_whole(dir: &Path, target: &Path, file: &Upload<'_>) -> Result<(), String> {
    let Upload {
        name,
        content,
        field,
    } = file;
    let failed = |e: &std::io::Error| format!("{field}: cannot write {name:?}: {}", plain(e));
    // create_new is O_CREAT|O_EXCL, which also refuses to follow a link at the temp
    // name; tempfile retries with another random name if one is there.
    let mut temp = tempfile::Builder::new()
        .prefix(".upload-")
        .suffix(".tmp")
        .make_in(dir, |path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
        })
        .map_err(|e| failed(&e))?;
    temp.as_file_mut()
        .write_all(content)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| failed(&e))?;
    // On an error the temp file is dropped, and so removed.
    temp.persist(target).map_err(|e| failed(&e.error))?;
    Ok(())
}

/// The files under `root` and their total size, links counted as files, never followed.
fn usage(root: &Path) -> std::io::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// `e` without the paths tempfile adds to its errors, which are the server's own.
fn plain(e: &std::io::Error) -> std::io::Error {
    e.raw_os_error()
        .map_or_else(|| e.kind().into(), std::io::Error::from_raw_os_error)
}

fn own_uid() -> u32 {
    // The owner of /proc/self is this process's (effective) user, as catalog.rs reads it.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// `name` as a relative path of plain parts: no `..`, no root, no empty or hidden part.
pub fn checked_name(name: &str, field: &str) -> Result<PathBuf, String> {
    let bad = |why: &str| Err(format!("{field}: {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_NAME {
        return bad(&format!("must be 1 to {MAX_NAME} bytes"));
    }
    // Only a conservative set: anything else (invisible format characters such as
    // U+202E or zero-width ones, lookalikes, controls) lets a name read as another.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return bad("may hold only ASCII letters, digits, '_', '-' and '.', in parts split by '/'");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_dir() -> (tempfile::TempDir, PluginDir) {
        let temp = tempfile::tempdir().expect("a temp dir");
        let dir = PluginDir::open(&temp.path().join("plugins")).expect("a plugin dir");
        (temp, dir)
    }

    fn upload<'a>(name: &'a str, content: &'a str) -> Upload<'a> {
        Upload {
            name,
            content: content.as_bytes(),
            field: "files",
        }
    }

    fn tree(dir: &PluginDir) -> Vec<String> {
        let mut names = Vec::new();
        let mut dirs = vec![dir.root().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).expect("read_dir") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    dirs.push(path.clone());
                }
                let relative = path.strip_prefix(dir.root()).expect("inside");
                names.push(relative.display().to_string());
            }
        }
        names.sort();
        names
    }

    #[test]
    fn concurrent_uploads_each_end_with_their_own_content() {
        let (_temp, dir) = plugin_dir();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let name = format!("t{t}_{i}.py");
                        dir.put(&name, format!("x = {t}{i:04}").as_bytes(), "plugin_name")
                            .expect("an upload");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread");
        }
        for t in 0..4 {
            for i in 0..100 {
                let content =
                    std::fs::read_to_string(dir.root().join(format!("t{t}_{i}.py"))).expect("read");
                assert_eq!(content, format!("x = {t}{i:04}"), "t{t}_{i}.py");
            }
        }
        assert_eq!(tree(&dir).len(), 400, "no temp file is left behind");
    }

    #[test]
    fn a_plugin_dir_others_may_write_is_refused_naming_it() {
        let temp = tempfile::tempdir().expect("a temp dir");
        let root = temp.path().join("shared");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = PluginDir::open(&root).expect_err("a 0777 plugin dir is refused");
        let message = e.to_string();
        assert!(message.contains("plugin_dir"), "{message}");
        assert!(message.contains(&root.display().to_string()), "{message}");
        assert!(message.contains("0777"), "{message}");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        PluginDir::open(&root).expect("a 0755 plugin dir of its own is used");
    }

    #[test]
    fn an_upload_that_fails_any_check_writes_nothing() {
        let (_temp, dir) = plugin_dir();
        std::fs::write(dir.root().join("taken"), "a file").expect("write");
        for (files, says) in [
            // Each part passes alone, the joined name has 9 parts.
            (
                vec![upload("p/a.py", "1"), upload("p/b/c/d/e/f/g/h/i.py", "2")],
                "1 to 8 parts",
            ),
            (
                vec![upload("p/a", "1"), upload("p/a/b.py", "2")],
                "a file and a folder",
            ),
            (
                vec![upload("p/a/b.py", "1"), upload("p/a", "2")],
                "a file and a folder",
            ),
            (vec![upload("p/a.py", "1"), upload("p/a.py", "2")], "twice"),
            (
                vec![upload("p/a.py", "1"), upload("taken/b.py", "2")],
                "taken is not a directory",
            ),
        ] {
            let e = dir.put_all(&files).expect_err("refused");
            assert!(e.contains(says), "{e}");
            assert_eq!(tree(&dir), ["taken"], "{e}: nothing was written");
        }
        std::fs::create_dir(dir.root().join("folder")).expect("mkdir");
        let e = dir
            .put_all(&[upload("p/a.py", "1"), upload("folder", "2")])
            .expect_err("refused");
        assert!(e.contains("is a directory"), "{e}");
        assert!(!dir.root().join("p").exists(), "{e}: nothing was written");
    }

    #[test]
    fn names_with_invisible_or_non_ascii_characters_are_refused() {
        let (_temp, dir) = plugin_dir();
        for name in [
            "evil\u{202E}yp.py",
            "a\u{200B}.py",
            "\u{FEFF}a.py",
            "é.py",
            "a b.py",
            "a\tb.py",
        ] {
            let e = dir.put(name, b"x = 1", "plugin_name").expect_err(name);
            assert!(e.starts_with("plugin_name: "), "{e}");
            assert!(checked_name(name, "plugin_filename").is_err(), "{name:?}");
        }
        assert!(tree(&dir).is_empty());
        dir.put("my_plugins-2/alerts.v1.py", b"x = 1", "plugin_name")
            .expect("a plain name");
    }

    #[test]
    fn errors_name_the_relative_path_not_the_servers() {
        let (_temp, dir) = plugin_dir();
        std::fs::create_dir(dir.root().join("pkg")).expect("mkdir");
        std::fs::write(dir.root().join("pkg/file"), "a file").expect("write");
        let e = dir
            .put("pkg/file/x.py", b"x = 1", "plugin_name")
            .expect_err("refused");
        assert!(e.contains("pkg/file is not a directory"), "{e}");
        let root = dir.root().display().to_string();
        assert!(!e.contains(&root), "{e} shows {root}");
    }

    #[test]
    fn uploads_past_the_directorys_bounds_are_refused_before_writing() {
        let (_temp, dir) = plugin_dir();
        let big = std::fs::File::create(dir.root().join("big.bin")).expect("create");
        big.set_len(MAX_DIR_BYTES - 10).expect("set_len");
        let e = dir
            .put("more.py", &[b'x'; 11], "plugin_name")
            .expect_err("past the bytes");
        assert!(e.contains("plugin_name") && e.contains("bounds"), "{e}");
        assert!(!dir.root().join("more.py").exists());
        // Replacing a file counts it at its new size only.
        dir.put("more.py", &[b'x'; 10], "plugin_name")
            .expect("up to the bound");
        dir.put("more.py", &[b'y'; 10], "plugin_name")
            .expect("replaced");
        std::fs::remove_file(dir.root().join("big.bin")).expect("rm");

        for i in 0..MAX_DIR_FILES - 1 {
            std::fs::write(dir.root().join(format!("f{i}")), "").expect("write");
        }
        let e = dir
            .put_all(&[upload("p/a.py", "1"), upload("p/b.py", "2")])
            .expect_err("past the files");
        assert!(e.contains("1000 files"), "{e}");
        assert!(!dir.root().join("p").exists(), "{e}: nothing was written");
    }
}
