//! The catalog: the databases and the triggers made over the HTTP API, kept in
//! `DATA_DIR/catalog/catalog.json` so that they survive a restart. Every change is
//! written whole (a temp file, fsync, rename, fsync of the directory) before it is
//! applied in memory: a crash leaves the old catalog or the new one, never half.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::ErrorPolicy;

/// Databases the catalog holds; a create past this is refused.
pub const MAX_DATABASES: usize = 1000;
/// Triggers made over the API; each runs a plugin process, so they are few.
pub const MAX_TRIGGERS: usize = 64;
/// The catalog file's largest size, read at start (a hostile file is not read whole).
const MAX_FILE: u64 = 4 << 20;

/// A trigger as InfluxDB 3's API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDefinition {
    pub db: String,
    pub plugin_filename: String,
    pub trigger_specification: String,
    pub trigger_arguments: Option<BTreeMap<String, String>>,
    pub run_async: bool,
    pub error_behavior: ErrorPolicy,
    pub disabled: bool,
}

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogState {
    pub databases: BTreeSet<String>,
    pub triggers: BTreeMap<String, TriggerDefinition>,
}

/// The catalog file and its contents, changed one whole version at a time.
pub struct Catalog {
    path: PathBuf,
    state: Mutex<CatalogState>,
}

/// A catalog that cannot be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("catalog {}: {message}", path.display())]
pub struct CatalogError {
    pub path: PathBuf,
    pub message: String,
}

impl Catalog {
    /// Opens (or makes) the catalog in `data_dir`. Its directory is made private to
    /// tsdb, and one that others may write is refused: they could swap the file.
    pub fn open(data_dir: &Path) -> Result<Self, CatalogError> {
        let dir = data_dir.join("catalog");
        let path = dir.join("catalog.json");
        let fail = |message: String| CatalogError {
            path: path.clone(),
            message,
        };
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(fail(format!("cannot make its directory: {e}")));
        }
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| fail(format!("cannot stat its directory: {e}")))?;
        if !meta.is_dir() {
            return Err(fail("its directory is not a directory (a link?)".into()));
        }
        if meta.uid() != own_uid() || meta.permissions().mode() & 0o022 != 0 {
            return Err(fail(format!(
                "its directory {} must be tsdb's own and writable by no one else",
                dir.display()
            )));
        }
        let state = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogState::default(),
            Err(e) => return Err(fail(format!("cannot stat: {e}"))),
            Ok(m) if !m.is_file() => return Err(fail("not a regular file".into())),
            Ok(m) if m.len() > MAX_FILE => {
                return Err(fail(format!("larger than {MAX_FILE} bytes")));
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| fail(format!("cannot read: {e}")))?;
                serde_json::from_str(&text).map_err(|e| fail(format!("not a catalog: {e}")))?
            }
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    /// The catalog as it is now.
    pub fn state(&self) -> CatalogState {
        self.lock().clone()
    }

    /// Applies `change` to a copy, writes the copy, and only then keeps it: on an error
    /// (from `change` or the disk) nothing changed.
    pub fn update<E: From<CatalogError>>(
        &self,
        change: impl FnOnce(&mut CatalogState) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        let mut next = state.clone();
        change(&mut next)?;
        self.write(&next)?;
        *state = next;
        Ok(())
    }

    /// Records database `name` (a write made it); a no-op when known. A full catalog
    /// or a failed write is logged: the write itself has landed.
    pub fn note_database(&self, name: &str) {
        if self.lock().databases.contains(name) {
            return;
        }
        let outcome = self.update(|s| {
            if s.databases.len() >= MAX_DATABASES {
                return Err(CatalogError {
                    path: self.path.clone(),
                    message: format!("holds {MAX_DATABASES} databases already"),
                });
            }
            s.databases.insert(name.to_owned());
            Ok(())
        });
        if let Err(e) = outcome {
            tracing::warn!("database {name:?} not recorded: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CatalogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, state: &CatalogState) -> Result<(), CatalogError> {
        let fail = |message: String| CatalogError {
            path: self.path.clone(),
            message,
        };
        let text =
            serde_json::to_vec_pretty(state).map_err(|e| fail(format!("cannot encode: {e}")))?;
        let temp = self.path.with_extension("json.tmp");
        // A leftover from a crash; `create_new` below never follows a link put there.
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| fail(format!("cannot create {}: {e}", temp.display())))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|e| fail(format!("cannot write {}: {e}", temp.display())))?;
        std::fs::rename(&temp, &self.path).map_err(|e| fail(format!("cannot rename: {e}")))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail(format!("cannot sync its directory: {e}")))?;
        }
        Ok(())
    }
}

fn own_uid() -> u32 {
    // The owner of a file this process just made is this process's user.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}
