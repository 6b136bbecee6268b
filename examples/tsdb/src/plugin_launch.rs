//! How a trigger's plugin file runs: a baton-native Python plugin (tsdb's own, such as
//! `alerter.py`) runs as `python FILE`; an InfluxDB 3 plugin runs unchanged on the
//! `influxdb3_runner` package (`python -m influxdb3_runner FILE`).

use std::io::Read;
use std::path::{Path, PathBuf};

use baton_host::PluginConfig;

use crate::catalog::TriggerDefinition;
use crate::plugin_dir::PluginDir;
use crate::plugin_env::{EnvError, Environments};

/// How much of a file is read to tell an InfluxDB 3 plugin from a baton-native one;
/// the entry points sit at the top level, rarely past the first thousand lines.
const SNIFF_BYTES: u64 = 1 << 20;

/// The entry points InfluxDB 3 calls; a file defining one at top level is its plugin.
const ENTRY_POINTS: [&str; 3] = [
    "process_writes",
    "process_scheduled_call",
    "process_request",
];

/// The Python module that serves an InfluxDB 3 plugin's calls.
pub const RUNNER_MODULE: &str = "influxdb3_runner";
/// glibc's malloc in the runner: buffers under 16 MiB from the heap, and the heap's
/// top handed back to the system past 32 MiB free.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=33554432";

/// How often baton checkpoints an InfluxDB 3 plugin's cache (its state), so that a
/// crash loses at most this much of it. Calls wait while one is taken: a cache of
/// 5,000 small dicts pickles in about 6 ms (500 KB).
pub const CACHE_CHECKPOINT_MS: u64 = 1_000;

/// How a `.py` plugin file is run.
#[derive(Debug, Clone)]
pub struct PythonRunner {
    pub python: PathBuf,
    pub python_path: Vec<PathBuf>,
    /// Each call's bound (`trigger_call_timeout_ms`).
    pub call_timeout_ms: u64,
    /// The process's memory bound (`trigger_max_memory_mb`).
    pub max_memory_mb: u64,
    /// Where InfluxDB 3 plugins' environments are, made from `python`.
    pub envs: Environments,
}

/// Makes the environment `def`'s plugin will run on, if it is an InfluxDB 3 plugin
/// and the environment is missing (its package's `requirements.txt` installed on first
/// use). A plugin that cannot be found is left for [`plugin_for`] to name.
pub async fn prepare_environment(
    plugin_dir: Option<&PluginDir>,
    runner: &PythonRunner,
    def: &TriggerDefinition,
) -> Result<(), EnvError> {
    let Some(path) = plugin_dir.and_then(|dir| {
        dir.resolve_plugin(&def.plugin_filename, "plugin_filename")
            .ok()
    }) else {
        return Ok(());
    };
    if !is_influxdb_plugin(&path) {
        return Ok(());
    }
    runner.envs.prepare(&path).await
}

/// The command line and environment of the runner on `path`, an InfluxDB 3 plugin (a
/// file or package in `dir`), on the python of its environment; `args` go after the
/// module's name.
pub fn runner_command(
    dir: &PluginDir,
    runner: &PythonRunner,
    path: &Path,
    args: &[String],
) -> Result<PluginConfig, String> {
    let python = runner
        .envs
        .python_for(path)?
        .unwrap_or_else(|| runner.python.clone());
    let mut plugin = PluginConfig::new(&python);
    plugin.args = vec!["-m".into(), RUNNER_MODULE.into()];
    plugin.args.extend(args.iter().cloned());
    // InfluxDB's plugins turn the naive `call_time` into epoch seconds with the
    // local zone; InfluxDB runs in UTC.
    plugin.env.insert("TZ".into(), "UTC".into());
    // Python's own bytecode files, written at the first import, would change the
    // watched directory and reload the plugin once for nothing.
    plugin
        .env
        .insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    // A write trigger's call brings its rows in one message of up to a few MiB. glibc
    // maps every buffer past 128 KiB afresh and unmaps it when freed, so each call
    // faulted its pages in again (15% of the runner's time delivering 16,384-row calls);
    // kept in the heap, they are reused: 5–10% more rows a second, for at most
    // 32 MiB of freed heap held per process.
    plugin
        .env
        .insert("GLIBC_TUNABLES".into(), MALLOC_TUNABLES.into());
    in_plugin_dir(&mut plugin, dir, runner)?;
    Ok(plugin)
}

/// Whether `path` is an InfluxDB 3 plugin: a package directory (its entry points in
/// `__init__.py`), or a file that defines an entry point at top level.
pub fn is_influxdb_plugin(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES).read_to_string(&mut text).map(drop));
    // A file cut inside a UTF-8 character, or not text, is read as far as it goes.
    if read.is_err() {
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let end = bytes.len().min(SNIFF_BYTES as usize);
        text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    }
    text.lines().any(defines_entry_point)
}

fn defines_entry_point(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("def ") else {
        return false;
    };
    let name = rest.trim_start();
    ENTRY_POINTS.iter().any(|entry| {
        name.strip_prefix(entry)
            .is_some_and(|after| after.trim_start().starts_with('('))
    })
}

/// The plugin that runs `def`'s file or package, watched so that an upload over it
/// reloads it in `--dev`. The error names the request's field.
pub fn plugin_for(
    plugin_dir: Option<&PluginDir>,
    runner: &PythonRunner,
    def: &TriggerDefinition,
) -> Result<PluginConfig, String> {
    let Some(dir) = plugin_dir else {
        return Err(
            "plugin_filename: tsdb has no plugin directory (start it with --plugin-dir or set plugin_dir in tsdb.toml)".into(),
        );
    };
    if def.plugin_filename.starts_with("gh:") {
        return Err(
            "plugin_filename: plugins from GitHub (gh:) are not fetched; upload the file to the plugin directory".into(),
        );
    }
    let path = dir.resolve_plugin(&def.plugin_filename, "plugin_filename")?;
    if path.is_file() && path.extension().is_none_or(|e| e != "py") {
        return Err(format!(
            "plugin_filename: {:?} is not a .py file",
            def.plugin_filename
        ));
    }
    let shown = path.to_string_lossy().into_owned();
    if is_influxdb_plugin(&path) {
        let mut plugin = runner_command(dir, runner, &path, std::slice::from_ref(&shown))?;
        // A package's every file (helper modules, the config files it reads) is its
        // code: a change to any reloads it, so no helper is ever stale. A single file's
        // are the modules it imports from beside it.
        plugin.watch = vec![shown];
        if path.is_file() {
            plugin.watch.extend(
                crate::plugin_imports::helpers_of(dir, &path)
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned()),
            );
        }
        plugin.checkpoint_interval_ms = Some(CACHE_CHECKPOINT_MS);
        bounded(&mut plugin, runner);
        return Ok(plugin);
    }
    let mut plugin = PluginConfig::new(&runner.python);
    plugin.args = vec![shown.clone()];
    plugin.watch = vec![shown];
    bounded(&mut plugin, runner);
    in_plugin_dir(&mut plugin, dir, runner)?;
    Ok(plugin)
}

/// What every Python plugin of the plugin directory runs with, the runner's and tsdb's
/// own alike: the directory as its working directory and `PLUGIN_DIR`, and tsdb's
/// `python_path` on its `PYTHONPATH`.
fn in_plugin_dir(
    plugin: &mut PluginConfig,
    dir: &PluginDir,
    runner: &PythonRunner,
) -> Result<(), String> {
    plugin.cwd = Some(dir.root().to_owned());
    if !runner.python_path.is_empty() {
        let joined =
            std::env::join_paths(&runner.python_path).map_err(|e| format!("python_path: {e}"))?;
        plugin
            .env
            .insert("PYTHONPATH".into(), joined.to_string_lossy().into_owned());
    }
    plugin.env.insert(
        "PLUGIN_DIR".into(),
        dir.root().to_string_lossy().into_owned(),
    );
    Ok(())
}

/// A trigger's plugin file runs where it is (a script is not copied), its calls and its
/// memory bounded by tsdb.toml's `trigger_call_timeout_ms` and `trigger_max_memory_mb`.
fn bounded(plugin: &mut PluginConfig, runner: &PythonRunner) {
    plugin.copy_binary = false;
    plugin.call_timeout_ms = runner.call_timeout_ms;
    plugin.max_rss_mb = Some(runner.max_memory_mb);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_point_at_top_level_marks_an_influxdb_plugin() {
        for yes in [
            "def process_writes(influxdb3_local, table_batches, args=None):",
            "def process_request (a, b, c, d, e):",
            "def  process_scheduled_call(local, call_time, args):",
        ] {
            assert!(defines_entry_point(yes), "{yes}");
        }
        for no in [
            "    def process_writes(self, x):",
            "def process_writes_helper(x):",
            "# def process_writes(a, b, c):",
            "class Alerter(baton_plugin.Plugin):",
        ] {
            assert!(!defines_entry_point(no), "{no}");
        }
    }
}
