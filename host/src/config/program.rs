//! Whether each plugin's program can run before anything starts: a path that exists (or,
//! in dev mode with `reload = "watch"`, one the host may wait for), or a bare name found
//! in PATH; and, in production, a SHA-256 pin for it. A mistake here is the operator's to
//! fix, so it is refused with the config instead of being retried as a crash.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{Problem, plugin_field};
use super::{Config, Mode, PluginConfig, ReloadMode};

/// Whether `command` is a path (run as it is, relative to the config's directory) rather
/// than a bare name looked up in PATH, as a shell tells them apart.
pub(crate) fn is_path(command: &Path) -> bool {
    command.components().count() > 1
}

impl Config {
    /// Every plugin's program and pin, with paths already resolved against `base`, the
    /// config file's directory.
    pub(super) fn check_programs(&self, base: &Path) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, plugin) in &self.plugins {
            if plugin.command.as_os_str().is_empty() {
                continue; // refused with the other values already
            }
            let refuse = |key: &str, message: String| Problem::at(plugin_field(name, key), message);
            let found = if is_path(&plugin.command) {
                self.check_path(plugin)
            } else {
                check_bare_name(plugin, base)
            };
            match found {
                Err(why) => problems.push(refuse("command", why)),
                Ok(Some(binary)) if self.mode == Mode::Production && plugin.sha256.is_none() => {
                    let pin = pin_file(&binary);
                    if !pin.exists() {
                        problems.push(refuse(
                            "sha256",
                            format!(
                                "production mode runs only pinned binaries: add `sha256 = \"...\"` \
                                 for this plugin, or write {} beside the binary (sha256sum {} > {})",
                                pin.display(),
                                binary.display(),
                                pin.display()
                            ),
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        problems
    }

    /// The plugins whose program is not there yet, which the host will wait for (dev
    /// mode, `reload = "watch"`), each with the file it waits for.
    pub fn waiting_for(&self) -> Vec<(&str, PathBuf)> {
        self.plugins
            .iter()
            .filter(|(_, p)| is_path(&p.command))
            .filter(|(_, p)| matches!(self.check_path(p), Ok(None)))
            .map(|(name, p)| (name.as_str(), p.command.components().collect()))
            .collect()
    }

    /// The binary a path command names, or `None` when it is not there yet and the host
    /// will wait for it; why not, when it cannot run.
    fn check_path(&self, plugin: &PluginConfig) -> Result<Option<PathBuf>, String> {
        // Shown without the `./` a relative path brought into the joined one.
        let path: &PathBuf = &plugin.command.components().collect();
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                Err(format!("{} is a directory, not a program", path.display()))
            }
            Ok(_) => Ok(Some(plugin.command.clone())),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot read {}: {e}", path.display()))
            }
            // Start the daemon, then build: the file watcher starts it once it appears.
            Err(_)
                if self.mode == Mode::Dev && plugin.reload_mode(self.mode) == ReloadMode::Watch =>
            {
                Ok(None)
            }
            Err(_) => Err(match self.mode {
                Mode::Production => format!(
                    "{} does not exist; production mode starts only a binary that is in place \
                     (and pinned)",
                    path.display()
                ),
                Mode::Dev => format!(
                    "{} does not exist; with reload = \"watch\" the host would wait for it to \
                     appear",
                    path.display()
                ),
            }),
        }
    }
}

/// Looks a bare program name up in the PATH the plugin will get (its own `env.PATH`, or
/// the host's), as `execvp` will; `Ok(None)` when found (a program from PATH is an
/// interpreter or a tool, not the plugin's own build, so it is never pinned).
fn check_bare_name(plugin: &PluginConfig, base: &Path) -> Result<Option<PathBuf>, String> {
    let name = &plugin.command;
    let search: OsString = match plugin.env.get("PATH") {
        Some(path) => path.into(),
        None => std::env::var_os("PATH").unwrap_or_default(),
    };
    let cwd = plugin.cwd.as_deref().unwrap_or(base);
    let found = std::env::split_paths(&search).any(|dir| {
        // An empty or relative entry means the plugin's working directory.
        let candidate = cwd.join(dir).join(name);
        std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if found {
        return Ok(None);
    }
    let mut why = format!(
        "`{}` is not found in PATH (a bare name is looked up there, as a shell would)",
        name.display()
    );
    if base.join(name).is_file() {
        why.push_str(&format!(
            "; for the file beside this config, write command = \"./{}\"",
            name.display()
        ));
    }
    Err(why)
}

/// `<binary>.sha256`, the pin file a deploy may write beside the binary.
pub(crate) fn pin_file(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}
