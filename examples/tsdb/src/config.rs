//! `tsdb.toml`: where the database listens and keeps its files, which baton config runs
//! its plugins, and the triggers that connect the two.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP API's address (loopback by default).
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Where the write-ahead log, the Parquet files and their manifest live, relative to this file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Rows held in memory (and in the write-ahead log) before they are written out as
    /// Parquet files and the log is cut.
    #[serde(default = "default_snapshot_rows")]
    pub snapshot_rows: usize,
    /// Tables one database may hold.
    #[serde(default = "default_max_tables")]
    pub max_tables: usize,
    /// How long one query may run, in milliseconds.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Bytes of Arrow data one query may return.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
    /// Bytes of DataFusion's memory pool one query may use (sorts, aggregates, joins);
    /// past it the query fails rather than spill to disk.
    #[serde(default = "default_max_query_memory_bytes")]
    pub max_query_memory_bytes: usize,
    /// The baton config that runs the plugins (`[plugins.NAME]` tables), relative to
    /// this file.
    pub plugins: PathBuf,
    /// The triggers.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Where `plugin_filename` of a trigger made over the HTTP API is found, and where
    /// plugin files are uploaded, relative to this file (`--plugin-dir` overrides it).
    /// Without one, triggers cannot be made over the API.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// The Python that runs a `.py` plugin file, relative to this file.
    #[serde(default = "default_python")]
    pub python: PathBuf,
    /// Directories put on such a plugin's `PYTHONPATH` (tsdb's plugin module
    /// `tsdb_plugin.py` and its stubs), relative to this file.
    #[serde(default)]
    pub python_path: Vec<PathBuf>,
    /// The longest one call of a trigger made over the HTTP API may take (a write
    /// batch, a scheduled call, a request), in milliseconds, waiting for its plugin to
    /// (re)start included; past it the call fails and the plugin's process is killed, so
    /// baton starts it again. InfluxDB has no such bound: a hung plugin stays hung.
    #[serde(default = "default_trigger_call_timeout_ms")]
    pub trigger_call_timeout_ms: u64,
    /// The resident memory a trigger made over the HTTP API may use, in MiB: past it
    /// baton moves the plugin to a fresh process (its cache kept where it can be), and
    /// one that will not move is killed and restarted.
    #[serde(default = "default_trigger_max_memory_mb")]
    pub trigger_max_memory_mb: u64,
    /// Which databases a plugin may query and write: `own` (the default: only those of
    /// its own triggers) or `any` (InfluxDB 3's rule, so that a downsampling plugin
    /// writes into its target database, made by the write if need be).
    #[serde(default)]
    pub plugin_databases: PluginDatabases,
    /// `true`: no request needs a token (InfluxDB 3's `--without-auth`; the command
    /// line's flag sets it too). By default every request but the one making the first
    /// token needs an admin token.
    #[serde(default)]
    pub without_auth: bool,
    /// InfluxDB 3's offline admin token file (`{"token", "name"?, "expiry_millis"?}`),
    /// relative to this file: its token becomes the first one when the catalog holds
    /// none (`--admin-token-file` overrides it).
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Paths served without a token: `health`, `ping` (InfluxDB 3's `--disable-authz`).
    #[serde(default)]
    pub disable_authz: Vec<String>,
}

/// See [`Config::plugin_databases`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginDatabases {
    Any,
    #[default]
    Own,
}

/// What a plugin refused another database is told, after the refusal itself.
pub const OWN_DATABASES_ONLY: &str = "tsdb.toml's plugin_databases is \"own\", the default; \
     plugin_databases = \"any\" lets plugins use every database, as InfluxDB 3 does";

/// One trigger: when it fires, which plugin it calls, and what a failure does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Unique; shown in the status and passed to the plugin.
    pub name: String,
    /// The plugin (a name in the plugins' baton config).
    pub plugin: String,
    /// `table:NAME`, `all_tables`, `every:10s` (s, m, h, ms), `cron:SEC MIN HOUR DAY
    /// MONTH WEEKDAY`, or `request:PATH` (served at /api/v3/engine/PATH).
    pub on: String,
    /// The database it watches and its plugin works in.
    pub database: String,
    /// `log` (the default), `retry` (a few times, with backoff, then log) or
    /// `disable` (until enabled again through the HTTP API).
    #[serde(default)]
    pub error_policy: ErrorPolicy,
    /// Passed to the plugin with every call.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// `false`: a write over HTTP is answered once this trigger's call on its rows has
    /// ended; `true` (the default in this file, as tsdb always did): at once. Over the
    /// HTTP API the default is InfluxDB's, `false`.
    #[serde(default = "default_run_async")]
    pub run_async: bool,
}

fn default_run_async() -> bool {
    true
}

/// What a failed trigger call does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    #[default]
    Log,
    Retry,
    Disable,
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8181))
}

fn default_python() -> PathBuf {
    PathBuf::from("python3")
}

fn default_snapshot_rows() -> usize {
    crate::db::SNAPSHOT_ROWS
}

fn default_max_tables() -> usize {
    crate::db::MAX_TABLES
}

fn default_query_timeout_ms() -> u64 {
    u64::try_from(crate::db::QUERY_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}

fn default_max_result_bytes() -> usize {
    crate::db::MAX_RESULT_BYTES
}

fn default_max_query_memory_bytes() -> usize {
    crate::db::MAX_QUERY_MEMORY
}

/// Long enough for a plugin that queries a large table; short enough that a hung one
/// is noticed while someone is still looking.
fn default_trigger_call_timeout_ms() -> u64 {
    30_000
}

/// Several times what the runner and a plugin with pandas need (about 150 MiB).
fn default_trigger_max_memory_mb() -> u64 {
    1024
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

impl Config {
    /// The engine's bounds this file sets.
    pub fn db_options(&self) -> crate::db::Options {
        crate::db::Options {
            snapshot_rows: self.snapshot_rows,
            max_tables: self.max_tables,
            query: crate::db::QueryBounds {
                timeout: std::time::Duration::from_millis(self.query_timeout_ms),
                max_result_bytes: self.max_result_bytes,
                max_memory: self.max_query_memory_bytes,
            },
        }
    }

    /// Reads and checks `path`. The error holds every mistake found, a line each, with
    /// `file:line:column`, the field, and the nearest known key for a misspelt one.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let (mut config, positions): (Self, _) =
            baton_host::config::read_toml_located(path, &text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        let at = |key: &str| match positions.at(&[key]) {
            Some((line, column)) => format!("{}:{line}:{column}", path.display()),
            None => path.display().to_string(),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute: a plugin's environment (`DATA_DIR/plugin_envs/...`) is run from the
        // plugin directory, not from where tsdb started.
        config.data_dir = std::path::absolute(base.join(&config.data_dir))
            .unwrap_or_else(|_| base.join(&config.data_dir));
        config.plugins = base.join(&config.plugins);
        config.plugin_dir = config.plugin_dir.map(|d| base.join(d));
        config.admin_token_file = config.admin_token_file.map(|f| base.join(f));
        if let Err(e) = open_paths(&config.disable_authz) {
            problems.push(format!(
                "{}: field `disable_authz`: {e}",
                at("disable_authz")
            ));
        }
        // Absolute: a plugin runs in the plugin directory, not where tsdb started.
        let absolute = |p: &Path| std::path::absolute(base.join(p)).unwrap_or(base.join(p));
        if config.python.components().count() > 1 {
            config.python = absolute(&config.python);
        }
        config.python_path = config.python_path.iter().map(|p| absolute(p)).collect();
        for (key, value) in [
            ("max_tables", config.max_tables as u64),
            ("query_timeout_ms", config.query_timeout_ms),
            ("trigger_call_timeout_ms", config.trigger_call_timeout_ms),
            ("trigger_max_memory_mb", config.trigger_max_memory_mb),
            ("max_result_bytes", config.max_result_bytes as u64),
            (
                "max_query_memory_bytes",
                config.max_query_memory_bytes as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!(
                    "{}: field `{key}`: is 0: no table or query could pass it",
                    at(key)
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in config.triggers.iter().enumerate() {
            let field = |key: &str| format!("{}: field `triggers[{i}].{key}`", path.display());
            if !names.insert(&t.name) {
                problems.push(format!(
                    "{}: two triggers are named {:?}",
                    field("name"),
                    t.name
                ));
            }
            if let Err(e) = crate::triggers::Spec::parse(&t.on) {
                problems.push(format!("{} (trigger {:?}): {e}", field("on"), t.name));
            }
            if let Err(e) = crate::db::check_database_name(&t.database)
                .map_err(|e| e.to_string())
                .and_then(|()| crate::catalog::check_trigger_database(&t.database))
            {
                problems.push(format!("{} (trigger {:?}): {e}", field("database"), t.name));
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// The paths `disable_authz` opens, or the first value that is not one of them.
pub fn open_paths(names: &[String]) -> Result<Vec<&'static str>, String> {
    names
        .iter()
        .map(|name| match name.as_str() {
            "health" => Ok("/health"),
            "ping" => Ok("/ping"),
            other => Err(format!(
                "{:?} is not `health` or `ping`, the paths that may be served without a token",
                other.chars().take(64).collect::<String>()
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plugins run in the plugin directory, so a data directory (where their Python
    /// environments are) read relative to where tsdb started named a python that was
    /// not there: `tsdb --config tsdb.toml` failed every InfluxDB plugin on an
    /// environment. Unit tests run in the package's directory, beside its tsdb.toml.
    #[test]
    fn a_config_named_by_a_relative_path_gives_an_absolute_data_directory() {
        let config = Config::load(Path::new("tsdb.toml")).expect("the example tsdb.toml");
        assert!(
            config.data_dir.is_absolute(),
            "{}",
            config.data_dir.display()
        );
        assert!(
            config.data_dir.ends_with("data"),
            "{}",
            config.data_dir.display()
        );
    }
}
