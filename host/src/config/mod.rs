//! `baton.toml`: what the host runs and how. Every mistake in it is reported with the
//! file, line and column, and the field's path, before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod cpus;
mod diff;
mod error;
mod limits;
mod load;
mod program;
mod read;
mod settled;
mod spans;
mod suggest;
mod validate;

pub use cpus::{CPU_LIMIT, CpuList};
pub(crate) use diff::{PluginChange, fixed_keys_changed, plugin_change};
pub use error::ConfigError;
pub(crate) use limits::Limits;
pub(crate) use program::{is_path, pin_file};
pub use read::{KeyPositions, read_toml, read_toml_located};
pub use settled::{CONFIG_SETTLE, CONFIG_SETTLE_LIMIT, SettleError, load_settled};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the control API (`baton ctl`) listens: a Unix socket path, relative to the
    /// config file's directory. Default `baton.sock`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// `dev` (reload on every change, verbose) or `production`.
    #[serde(default)]
    pub mode: Mode,
    /// How file changes are noticed: `native` (inotify; falls back to polling if it
    /// cannot start) or `poll` (for network and overlay filesystems that send no events).
    #[serde(default)]
    pub watcher: WatcherKind,
    /// With `watcher = "poll"`, how often watched files are checked.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Where checkpoints are persisted (`<state_dir>/<plugin>/`), relative to this file.
    /// Without it, checkpoints live in memory only and do not survive a host restart.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Threads of the daemon's async runtime; default: half the CPUs, at least one
    /// (the daemon forwards calls; its plugins need the cores more).
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// How often the plugins' memory and CPU are measured (only their own pids).
    #[serde(default = "default_resource_interval_ms")]
    pub resource_interval_ms: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`), such as `127.0.0.1:9464`; an IP
    /// address and port, port 0 for any free one. No endpoint when absent.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Allow `metrics_addr` beyond loopback. The endpoint has no authentication, and its
    /// metrics name the plugins and their methods.
    #[serde(default)]
    pub metrics_public: bool,
    /// Microseconds the daemon's control socket keeps polling for a caller's next call,
    /// once it has answered one, before its thread sleeps: with the plugins' own
    /// `spin_us`, the daemon's half of trading CPU for latency. 0 (the default) never
    /// spins; at most 1000.
    #[serde(default)]
    pub control_spin_us: u64,
    /// The plugins, by name. A name is used in file names, so it may hold only ASCII
    /// letters, digits, `-` and `_`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
}

/// How file changes are noticed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatcherKind {
    /// The OS's file events (inotify).
    #[default]
    Native,
    /// Checking metadata at `poll_interval_ms`.
    Poll,
}

/// When a plugin is handed over to a new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadMode {
    /// On every settled change of the binary or a watched file.
    Watch,
    /// Only on `baton ctl reload`.
    Manual,
    /// Never; changes are ignored.
    Off,
}

/// How eagerly the host changes what runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// For plugin authors: reload on every settled change.
    #[default]
    Dev,
    /// For operators: changes are taken deliberately.
    Production,
}

/// One plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The program to run: a path (relative to the config file's directory) or a bare
    /// name looked up in `PATH` (such as `python3`).
    pub command: PathBuf,
    /// Arguments passed to the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// The plugin's working directory, where a plugin that writes relative paths keeps
    /// its files; default: the config file's directory, so that relative paths in `args`
    /// mean the same as in this file. Never a directory the host deletes.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables for the plugin.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long a new process may take to print its handshake line and report SERVING.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// How long a call may take, including any time spent waiting for a restart.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// At a handover or checkpoint, how long response streams of application-service
    /// calls still open on the old generation may take to end by themselves; the rest
    /// are then ended with UNAVAILABLE saying the plugin moved and the stream should be
    /// reopened, so that the state can move. Default 1000.
    #[serde(default = "default_stream_drain_ms")]
    pub stream_drain_ms: u64,
    /// After `Shutdown`, how long the process has to exit before SIGTERM, then SIGKILL.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// What to do when the process exits unasked.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Take a checkpoint (a snapshot kept by the host) this often, to restore after a
    /// crash or, with `state_dir`, after a host restart. Calls are held while it is taken.
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
    /// The largest state the host accepts from the plugin, in bytes, in a checkpoint
    /// or a handover; a larger (or endless) `Snapshot` is cut off there and fails,
    /// naming this key. Default 1 GiB. It bounds what a checkpoint costs the host in
    /// memory (without `state_dir`) or on disk (with it).
    #[serde(default = "default_max_state_bytes")]
    pub max_state_bytes: u64,
    /// The largest message sent to or accepted from the plugin, in bytes (payloads plus a
    /// little framing); larger ones fail with OUT_OF_RANGE naming both sizes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Lines of the plugin's output (stderr, stray stdout) and `Log` calls together that
    /// reach the host's log per second; more are dropped from the host's log (still
    /// kept in `baton ctl logs`), and a line a second says how many. Default 1000.
    #[serde(default = "default_log_lines_per_sec")]
    pub log_lines_per_sec: u32,
    /// Bytes of those lines per second, the same way; a second's first line always
    /// passes, whatever its length (at most 16 KiB). Default 1 MiB.
    #[serde(default = "default_log_bytes_per_sec")]
    pub log_bytes_per_sec: u64,
    /// At most this many calls wait for the plugin while it is handed over or restarts;
    /// more are refused with RESOURCE_EXHAUSTED instead of piling up.
    #[serde(default = "default_max_held_calls")]
    pub max_held_calls: usize,
    /// Run the plugin as this user (name), when the host runs as root. It binds its
    /// socket in a directory of its own that the host deletes, and works in `cwd`, which
    /// (with the directories above it) it must be able to enter.
    #[serde(default)]
    pub user: Option<String>,
    /// Run the plugin with this group (name); default: the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// The binary's expected SHA-256 (hex). Checked before every start; in production
    /// mode a pin is required, here or in a `<binary>.sha256` file beside the binary.
    #[serde(default)]
    pub sha256: Option<String>,
    /// In production mode plugins get a cleared environment: a short allow-list
    /// (PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ, TMPDIR, BATON_LOG, RUST_LOG), these
    /// names from the host's environment, and `env`.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Resident memory above which the plugin is handed over to a fresh process (its
    /// state kept), in MiB. Crossing it again right after counts as a crash.
    #[serde(default)]
    pub max_rss_mb: Option<u64>,
    /// Average CPU use (100 = one core) over `cpu_window_ms` above which the plugin is
    /// handed over to a fresh process.
    #[serde(default)]
    pub max_cpu_percent: Option<f64>,
    /// Processes and threads together the plugin may run at once (its forks fail with
    /// EAGAIN past it), held by a pids cgroup per generation where the host can make one,
    /// else, for a plugin with a `user` of its own, by RLIMIT_NPROC (which counts every
    /// process of that user). Default: not bounded.
    #[serde(default)]
    pub max_processes: Option<u64>,
    /// Descriptors the plugin may hold open (RLIMIT_NOFILE, soft and hard). Default: the
    /// soft limit the daemon was started with (not the one it raises for itself), under
    /// the daemon's hard limit.
    #[serde(default)]
    pub max_open_files: Option<u64>,
    /// The largest file the plugin may write, in bytes (RLIMIT_FSIZE): a write past it
    /// kills the plugin with SIGXFSZ, which its status names. Default: not bounded.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// The window `max_cpu_percent` is averaged over.
    #[serde(default = "default_cpu_window_ms")]
    pub cpu_window_ms: u64,
    /// `watch`, `manual` or `off`. Default: `watch` in dev mode, `manual` in production.
    #[serde(default)]
    pub reload: Option<ReloadMode>,
    /// More files, directories or globs (`src/*.py`, `lib/**/*.py`) whose changes reload
    /// the plugin, such as a script plugin's sources; relative to the config file.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Application services (full gRPC names, such as `mydb.trigger.v1.Trigger`) the
    /// plugin must serve: a generation whose `Describe` does not list one of them fails
    /// its start, and at a reload the handover rolls back naming what is missing.
    #[serde(default)]
    pub services: Vec<String>,
    /// The application's own descriptors of those services: an encoded
    /// `FileDescriptorSet` (`protoc -o`, `buf build -o`), relative to this file. With it,
    /// a new build must also describe (over gRPC reflection) the same methods and
    /// message types, field by field, or it never goes live.
    #[serde(default)]
    pub api_descriptors: Option<PathBuf>,
    /// How long a changed file must stay unchanged before it is loaded, so a file still
    /// being written is never started.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// The longest a handover may take, from starting the new process to switching
    /// calls to it; past it the new process is dropped and the old one keeps serving.
    #[serde(default = "default_handover_timeout_ms")]
    pub handover_timeout_ms: u64,
    /// For a plugin that declares incremental snapshots: copy its state while it keeps
    /// serving, then hold calls only for the last, small delta (docs/incremental-state.md).
    /// `false` holds calls for the whole copy, as for any other plugin. Default true.
    #[serde(default = "default_true")]
    pub pre_copy: bool,
    /// Microseconds to keep polling for an answer (host side) and for the next call
    /// (plugin side, passed as `BATON_SPIN_US`) before a thread sleeps: lower latency for
    /// a core's time while it waits. 0 (the default) never spins; at most 1000.
    #[serde(default)]
    pub spin_us: u64,
    /// The CPUs the plugin's process may run on (its scheduler affinity), as numbers or
    /// ranges: `[2, "4-7"]`. Each must be online. Default: any the host may use.
    #[serde(default)]
    pub cpus: Option<CpuList>,
    /// Run a private copy of the binary, so the original can be rewritten in place,
    /// even half-way, while the plugin runs. Only for commands given as a path.
    #[serde(default = "default_true")]
    pub copy_binary: bool,
}

/// Restart policy after crashes: exponential backoff and a crash-loop breaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// The delay before the second restart in a row; the first is immediate.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// The longest delay between restarts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// This many crashes within `crash_window_ms` mark the plugin `Failed`.
    #[serde(default = "default_max_crashes")]
    pub max_crashes: u32,
    /// The window for `max_crashes`.
    #[serde(default = "default_crash_window_ms")]
    pub crash_window_ms: u64,
    /// A process that served this long before crashing restarts the backoff from scratch.
    #[serde(default = "default_stable_after_ms")]
    pub stable_after_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_crashes: default_max_crashes(),
            crash_window_ms: default_crash_window_ms(),
            stable_after_ms: default_stable_after_ms(),
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from("baton.sock")
}
fn default_handshake_timeout_ms() -> u64 {
    5_000
}
fn default_stream_drain_ms() -> u64 {
    1000
}
fn default_call_timeout_ms() -> u64 {
    30_000
}
fn default_shutdown_grace_ms() -> u64 {
    3_000
}
fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_log_lines_per_sec() -> u32 {
    1000
}
fn default_log_bytes_per_sec() -> u64 {
    1 << 20
}
fn default_max_state_bytes() -> u64 {
    1 << 30
}
fn default_max_held_calls() -> usize {
    10_000
}
fn default_cpu_window_ms() -> u64 {
    10_000
}
fn default_resource_interval_ms() -> u64 {
    1_000
}
fn default_poll_interval_ms() -> u64 {
    500
}
fn default_settle_ms() -> u64 {
    100
}
fn default_handover_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_crashes() -> u32 {
    5
}
fn default_crash_window_ms() -> u64 {
    60_000
}
fn default_stable_after_ms() -> u64 {
    60_000
}

impl PluginConfig {
    /// A plugin running `command` with every other setting at its default.
    pub fn new(command: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            call_timeout_ms: default_call_timeout_ms(),
            stream_drain_ms: default_stream_drain_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            restart: RestartConfig::default(),
            checkpoint_interval_ms: None,
            max_state_bytes: default_max_state_bytes(),
            sha256: None,
            user: None,
            group: None,
            max_held_calls: default_max_held_calls(),
            max_message_bytes: default_max_message_bytes(),
            log_lines_per_sec: default_log_lines_per_sec(),
            log_bytes_per_sec: default_log_bytes_per_sec(),
            inherit_env: Vec::new(),
            max_rss_mb: None,
            max_cpu_percent: None,
            max_processes: None,
            max_open_files: None,
            max_file_bytes: None,
            cpu_window_ms: default_cpu_window_ms(),
            reload: None,
            watch: Vec::new(),
            services: Vec::new(),
            api_descriptors: None,
            settle_ms: default_settle_ms(),
            handover_timeout_ms: default_handover_timeout_ms(),
            pre_copy: true,
            spin_us: 0,
            cpus: None,
            copy_binary: true,
        }
    }

    /// The reload mode in effect under `mode`.
    pub fn reload_mode(&self, mode: Mode) -> ReloadMode {
        self.reload.unwrap_or(match mode {
            Mode::Dev => ReloadMode::Watch,
            Mode::Production => ReloadMode::Manual,
        })
    }

    /// `handover_timeout_ms` as a duration.
    pub fn handover_timeout(&self) -> Duration {
        Duration::from_millis(self.handover_timeout_ms)
    }

    /// `settle_ms` as a duration.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// `stream_drain_ms` as a duration.
    pub fn stream_drain(&self) -> Duration {
        Duration::from_millis(self.stream_drain_ms)
    }
    /// `call_timeout_ms` as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
    /// `log_lines_per_sec` and `log_bytes_per_sec`.
    pub(crate) fn log_limit(&self) -> crate::io::log_limit::LogLimit {
        crate::io::log_limit::LogLimit {
            lines_per_sec: self.log_lines_per_sec,
            bytes_per_sec: self.log_bytes_per_sec,
        }
    }
    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Config {
    /// An empty configuration (no plugins) with defaults, for embedders building one in code.
    pub fn empty() -> Self {
        Self {
            socket: default_socket(),
            mode: Mode::default(),
            watcher: WatcherKind::default(),
            poll_interval_ms: default_poll_interval_ms(),
            resource_interval_ms: default_resource_interval_ms(),
            state_dir: None,
            worker_threads: None,
            metrics_addr: None,
            metrics_public: false,
            control_spin_us: 0,
            plugins: BTreeMap::new(),
        }
    }
}
