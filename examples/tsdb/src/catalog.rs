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
/// The catalog file's largest size, read at start (a hostile file is not read whole);
/// a change that would write a larger one is refused, or tsdb could not start again.
pub const MAX_FILE: u64 = 4 << 20;
/// Arguments one trigger may carry, and each key's and value's longest length.
pub const MAX_ARGUMENTS: usize = 64;
pub const MAX_ARGUMENT: usize = 4096;
/// A trigger name's longest length (its plugin is named `trigger-NAME`, at most 64).
pub const MAX_TRIGGER_NAME: usize = 48;
/// A trigger specification's longest length: `table:NAME`, `cron:EXPR`, ... are short.
pub const MAX_SPECIFICATION: usize = 1024;

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

impl TriggerDefinition {
    /// Why trigger `name` cannot be kept, naming the field; the API's checks, made
    /// again on what the file holds.
    pub fn check(&self, name: &str) -> Result<(), String> {
        check_trigger_name(name)?;
        crate::db::check_database_name(&self.db).map_err(|e| format!("db: {e}"))?;
        check_trigger_database(&self.db).map_err(|e| format!("db: {e}"))?;
        check_specification(&self.trigger_specification)?;
        if let Some(args) = &self.trigger_arguments {
            check_arguments(args)?;
        }
        Ok(())
    }
}

/// A trigger's database: not `_internal`, whose system tables (every trigger's log,
/// the tokens' hashes) are tsdb's to show, not a plugin's to read.
pub fn check_trigger_database(db: &str) -> Result<(), String> {
    if db == crate::db::INTERNAL_DATABASE {
        return Err(format!(
            "{db:?} is tsdb's own (every trigger's system tables, the tokens); a trigger works in a database of data"
        ));
    }
    Ok(())
}

pub fn check_trigger_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TRIGGER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "trigger_name: {:?} is not a trigger name (1 to {MAX_TRIGGER_NAME} of A-Z, a-z, 0-9, '_', '-')",
            name.chars().take(64).collect::<String>()
        ))
    }
}

pub fn check_specification(spec: &str) -> Result<(), String> {
    if spec.len() > MAX_SPECIFICATION {
        return Err(format!(
            "trigger_specification: {} bytes, more than {MAX_SPECIFICATION}",
            spec.len()
        ));
    }
    crate::triggers::Spec::parse(spec)
        .map(drop)
        .map_err(|e| format!("trigger_specification: {e}"))
}

pub fn check_arguments(args: &BTreeMap<String, String>) -> Result<(), String> {
    if args.len() > MAX_ARGUMENTS {
        return Err(format!(
            "trigger_arguments: {} arguments, more than {MAX_ARGUMENTS}",
            args.len()
        ));
    }
    for (k, v) in args {
        if k.is_empty() || k.len() > MAX_ARGUMENT || v.len() > MAX_ARGUMENT {
            return Err(format!(
                "trigger_arguments: {:?}: a key must be 1 to {MAX_ARGUMENT} bytes, a value at most {MAX_ARGUMENT}",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogState {
    pub databases: BTreeSet<String>,
    pub triggers: BTreeMap<String, TriggerDefinition>,
    /// The admin tokens, by name (their hashes; see `tokens`). Absent from a catalog
    /// written before tokens were checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, crate::tokens::TokenEntry>,
    /// The next token's id: ids are not given again after a delete.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_token_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The catalog file and its contents, changed one whole version at a time.
pub struct Catalog {
    path: PathBuf,
    /// Held only to read or swap the state, never across the disk: every request's
    /// token check reads it.
    state: Mutex<CatalogState>,
    /// Held for a whole change, file written included: changes apply one at a time.
    changing: Mutex<()>,
}

/// A catalog that cannot be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("catalog {}: {message}", path.display())]
pub struct CatalogError {
    pub path: PathBuf,
    pub message: String,
    /// The change would make the file larger than [`MAX_FILE`]: the request's fault,
    /// not the disk's.
    pub too_large: bool,
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
            too_large: false,
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
        check_state(&state).map_err(fail)?;
        Ok(Self {
            path,
            state: Mutex::new(state),
            changing: Mutex::new(()),
        })
    }

    /// The catalog as it is now.
    pub fn state(&self) -> CatalogState {
        self.lock().clone()
    }

    /// Reads the catalog without copying it (a token check on every request).
    pub fn read<R>(&self, f: impl FnOnce(&CatalogState) -> R) -> R {
        f(&self.lock())
    }

    /// Applies `change` to a copy, writes the copy, and only then keeps it: on an error
    /// (from `change` or the disk) nothing changed.
    pub fn update<E: From<CatalogError>>(
        &self,
        change: impl FnOnce(&mut CatalogState) -> Result<(), E>,
    ) -> Result<(), E> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.lock().clone();
        change(&mut next)?;
        self.write(&next)?;
        *self.lock() = next;
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
                    too_large: false,
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
        // Two fsyncs: on a slow disk, tens of milliseconds. On a runtime's worker the
        // other tasks queued there move to another worker meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.write_now(state))
            }
            _ => self.write_now(state),
        }
    }

    fn write_now(&self, state: &CatalogState) -> Result<(), CatalogError> {
        let fail = |message: String| CatalogError {
            path: self.path.clone(),
            message,
            too_large: false,
        };
        let text =
            serde_json::to_vec_pretty(state).map_err(|e| fail(format!("cannot encode: {e}")))?;
        // `open` refuses a larger file, so writing one would stop tsdb from starting.
        if text.len() as u64 > MAX_FILE {
            return Err(CatalogError {
                too_large: true,
                ..fail(format!(
                    "the change would make it {} bytes, more than {MAX_FILE}; nothing was changed",
                    text.len()
                ))
            });
        }
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

/// Why a catalog read from the file cannot be used, naming the entry and its field.
fn check_state(state: &CatalogState) -> Result<(), String> {
    if state.databases.len() > MAX_DATABASES {
        return Err(format!(
            "databases: {} of them, more than {MAX_DATABASES}",
            state.databases.len()
        ));
    }
    for db in &state.databases {
        crate::db::check_database_name(db).map_err(|e| format!("databases: {e}"))?;
    }
    if state.triggers.len() > MAX_TRIGGERS {
        return Err(format!(
            "triggers: {} of them, more than {MAX_TRIGGERS}",
            state.triggers.len()
        ));
    }
    crate::tokens::check_entries(&state.tokens)?;
    for (name, def) in &state.triggers {
        def.check(name).map_err(|e| {
            format!(
                "triggers.{}: {e}",
                name.chars().take(64).collect::<String>()
            )
        })?;
    }
    Ok(())
}

fn own_uid() -> u32 {
    // The owner of a file this process just made is this process's user.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(spec: &str) -> TriggerDefinition {
        TriggerDefinition {
            db: "metrics".into(),
            plugin_filename: "alerts.py".into(),
            trigger_specification: spec.into(),
            trigger_arguments: None,
            run_async: false,
            error_behavior: ErrorPolicy::Log,
            disabled: false,
        }
    }

    /// Writes `state` as the catalog file of `data_dir`, unchecked, as a hand edit would.
    fn write_by_hand(data_dir: &Path, state: &CatalogState) -> PathBuf {
        let dir = data_dir.join("catalog");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("mkdir");
        let path = dir.join("catalog.json");
        std::fs::write(&path, serde_json::to_vec(state).expect("encode")).expect("write");
        path
    }

    #[test]
    fn a_catalog_with_a_bad_entry_is_refused_naming_the_file_and_the_entry() {
        for (name, def, says) in [
            (
                "bad name",
                trigger("table:cpu"),
                "triggers.bad name: trigger_name:",
            ),
            (
                "long",
                trigger(&format!("table:{}", "x".repeat(MAX_SPECIFICATION))),
                "triggers.long: trigger_specification:",
            ),
            (
                "often",
                trigger("every:1ms"),
                "triggers.often: trigger_specification:",
            ),
            (
                "args",
                TriggerDefinition {
                    trigger_arguments: Some(BTreeMap::from([(
                        "k".to_owned(),
                        "v".repeat(MAX_ARGUMENT + 1),
                    )])),
                    ..trigger("table:cpu")
                },
                "triggers.args: trigger_arguments:",
            ),
        ] {
            let data = tempfile::tempdir().expect("a temp dir");
            let mut state = CatalogState::default();
            state.triggers.insert(name.to_owned(), def);
            let path = write_by_hand(data.path(), &state);
            let err = Catalog::open(data.path())
                .err()
                .unwrap_or_else(|| panic!("{name}: opened"));
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(says), "{name}: {text}");
        }
    }

    #[test]
    fn a_change_past_the_largest_file_is_refused_and_nothing_changes() {
        let data = tempfile::tempdir().expect("a temp dir");
        let catalog = Catalog::open(data.path()).expect("a new catalog");
        let args: BTreeMap<String, String> = (0..MAX_ARGUMENTS)
            .map(|i| (format!("k{i}"), "\u{1}".repeat(MAX_ARGUMENT)))
            .collect();
        let big = TriggerDefinition {
            trigger_arguments: Some(args),
            ..trigger("table:cpu")
        };
        let mut outcome: Result<(), CatalogError> = Ok(());
        for i in 0..MAX_TRIGGERS {
            outcome = catalog.update(|s| {
                s.triggers.insert(format!("t{i}"), big.clone());
                Ok(())
            });
            if outcome.is_err() {
                break;
            }
        }
        let err = outcome.expect_err("the catalog grew past MAX_FILE");
        assert!(err.too_large, "{err}");
        let kept = catalog.state().triggers.len();
        let reopened = Catalog::open(data.path()).expect("the file still loads");
        assert_eq!(reopened.state().triggers.len(), kept, "nothing was applied");
    }
}
