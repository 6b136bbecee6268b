//! InfluxDB 3's plugin tests (`POST /api/v3/plugin_test/wal` and `/schedule`): the
//! plugin run once by the runner (`python -m influxdb3_runner --test`) on the given
//! input, in a process of its own on the plugin's environment, its writes returned and
//! never applied. A test's cache is kept by tsdb under its `cache_name` for 30 minutes,
//! as InfluxDB keeps it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bounded_child;
use crate::line_protocol::{self, FieldValue, Precision};
use crate::plugin_dir::PluginDir;
use crate::plugin_launch::{PythonRunner, is_influxdb_plugin, runner_command};
use crate::processing_engine::Refused;

/// How long one test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the runner (its writes and log lines).
const MAX_ANSWER: usize = 8 << 20;
/// What is kept of the runner's stderr for an error.
const MAX_STDERR: usize = 8 << 10;
/// How long a test cache is kept after its last use, and how many are kept.
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);
const MAX_CACHES: usize = 64;
const MAX_NAME: usize = 128;

/// `POST /api/v3/plugin_test/wal`'s body, as InfluxDB's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalTest {
    pub filename: String,
    pub database: String,
    pub input_lp: String,
    #[serde(default)]
    pub cache_name: Option<String>,
    #[serde(default)]
    pub input_arguments: Option<BTreeMap<String, String>>,
}

/// `POST /api/v3/plugin_test/schedule`'s body, as InfluxDB's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTest {
    pub filename: String,
    pub database: String,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub cache_name: Option<String>,
    #[serde(default)]
    pub input_arguments: Option<BTreeMap<String, String>>,
}

/// InfluxDB's answer: what the plugin logged, wrote (per database) and raised.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TestAnswer {
    pub log_lines: Vec<String>,
    pub database_writes: BTreeMap<String, Vec<String>>,
    pub errors: Vec<String>,
    /// The test's cache after the call, pickled and hex'd; kept by tsdb, not answered.
    #[serde(default, skip_serializing)]
    pub cache: Option<String>,
}

/// The test caches, by `cache_name`.
#[derive(Debug, Default)]
pub struct PluginTests {
    caches: Mutex<HashMap<String, (Instant, String)>>,
}

fn bad(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

fn check_name(value: &str, field: &str) -> Result<(), Refused> {
    if value.trim().is_empty() {
        return Err(bad(format!("{field}: empty")));
    }
    if value.len() > MAX_NAME {
        return Err(bad(format!("{field}: longer than {MAX_NAME} bytes")));
    }
    Ok(())
}

/// `input_lp` as InfluxDB's `table_batches`: per table in the order first seen, each
/// row its line's tags and fields and `time` (now where the line has none).
fn table_batches(input_lp: &str) -> Result<Value, Refused> {
    let points = line_protocol::parse(input_lp, Precision::Auto)
        .map_err(|e| bad(format!("input_lp: {e}")))?;
    if points.is_empty() {
        return Err(bad("input_lp: no line"));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut tables: Vec<(String, Vec<Value>)> = Vec::new();
    for point in points {
        let mut row = serde_json::Map::new();
        for (k, v) in &point.tags {
            row.insert(k.clone(), json!(v));
        }
        for (k, v) in &point.fields {
            let value = match v {
                FieldValue::Float(f) => json!(f),
                FieldValue::Integer(i) => json!(i),
                FieldValue::Unsigned(u) => json!(u),
                FieldValue::Text(s) => json!(s),
                FieldValue::Boolean(b) => json!(b),
            };
            row.insert(k.clone(), value);
        }
        row.insert("time".into(), json!(point.time_ns.unwrap_or(now)));
        match tables.iter_mut().find(|(t, _)| *t == point.measurement) {
            Some((_, rows)) => rows.push(Value::Object(row)),
            None => tables.push((point.measurement, vec![Value::Object(row)])),
        }
    }
    Ok(Value::Array(
        tables
            .into_iter()
            .map(|(table, rows)| json!({ "table_name": table, "rows": rows }))
            .collect(),
    ))
}

/// The slot a schedule test runs at: the next of `schedule` (`every:D`, `cron:EXPR`, or
/// a bare cron expression as InfluxDB takes it) after now, or now.
fn trigger_time(schedule: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>, Refused> {
    let now = chrono::Utc::now();
    let Some(text) = schedule.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(now);
    };
    let spec = if text.starts_with("every:") || text.starts_with("cron:") {
        text.to_owned()
    } else {
        format!("cron:{text}")
    };
    match crate::triggers::Spec::parse(&spec).map_err(|e| bad(format!("schedule: {e}")))? {
        crate::triggers::Spec::Every(every) => {
            let step = every.as_nanos().max(1) as i128;
            let since = now.timestamp_nanos_opt().unwrap_or(0) as i128;
            let next = (since / step + 1) * step;
            Ok(chrono::DateTime::from_timestamp_nanos(
                i64::try_from(next).unwrap_or(i64::MAX),
            ))
        }
        crate::triggers::Spec::Cron(cron) => cron
            .upcoming(chrono::Utc)
            .next()
            .ok_or_else(|| bad(format!("schedule: {text:?} never fires again"))),
        _ => Err(bad(format!(
            "schedule: {text:?} is not a schedule (every:10s, cron:EXPR or a cron expression)"
        ))),
    }
}

impl PluginTests {
    fn cache(&self, name: Option<&str>) -> Option<String> {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|_, (used, _)| used.elapsed() < CACHE_TTL);
        caches.get(name?).map(|(_, state)| state.clone())
    }

    fn keep(&self, name: Option<&str>, state: Option<String>) {
        let (Some(name), Some(state)) = (name, state) else {
            return;
        };
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        if caches.len() >= MAX_CACHES && !caches.contains_key(name) {
            // The one used longest ago makes room.
            if let Some(oldest) = caches
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                caches.remove(&oldest);
            }
        }
        caches.insert(name.to_owned(), (Instant::now(), state));
    }

    /// Runs a WAL test.
    pub async fn wal(
        &self,
        dir: Option<&PluginDir>,
        runner: &PythonRunner,
        test: WalTest,
    ) -> Result<TestAnswer, Refused> {
        check_name(&test.database, "database")?;
        if let Some(name) = &test.cache_name {
            check_name(name, "cache_name")?;
        }
        let batches = table_batches(&test.input_lp)?;
        let request = json!({
            "entry": "process_writes",
            "database": test.database,
            "args": test.input_arguments,
            "table_batches": batches,
        });
        self.run(
            dir,
            runner,
            &test.filename,
            test.cache_name.as_deref(),
            request,
        )
        .await
    }

    /// Runs a schedule test; its slot (RFC 3339) and the answer.
    pub async fn schedule(
        &self,
        dir: Option<&PluginDir>,
        runner: &PythonRunner,
        test: ScheduleTest,
    ) -> Result<(String, TestAnswer), Refused> {
        check_name(&test.database, "database")?;
        if let Some(name) = &test.cache_name {
            check_name(name, "cache_name")?;
        }
        let at = trigger_time(test.schedule.as_deref())?;
        let request = json!({
            "entry": "process_scheduled_call",
            "database": test.database,
            "args": test.input_arguments,
            "call_time_ns": at.timestamp_nanos_opt().unwrap_or(0),
        });
        let answer = self
            .run(
                dir,
                runner,
                &test.filename,
                test.cache_name.as_deref(),
                request,
            )
            .await?;
        Ok((
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            answer,
        ))
    }

    async fn run(
        &self,
        dir: Option<&PluginDir>,
        runner: &PythonRunner,
        filename: &str,
        cache_name: Option<&str>,
        mut request: Value,
    ) -> Result<TestAnswer, Refused> {
        let Some(dir) = dir else {
            return Err(bad(
                "filename: tsdb has no plugin directory (start it with --plugin-dir or set plugin_dir in tsdb.toml)",
            ));
        };
        let path = dir.resolve_plugin(filename, "filename").map_err(bad)?;
        if !is_influxdb_plugin(&path) {
            return Err(bad(format!(
                "filename: {filename:?} defines none of process_writes, process_scheduled_call, process_request, so it is not an InfluxDB 3 plugin"
            )));
        }
        runner.envs.prepare(&path).await.map_err(|e| match e {
            crate::plugin_env::EnvError::Refused(m) => {
                bad(m.replace("plugin_filename", "filename"))
            }
            crate::plugin_env::EnvError::Failed(m) => Refused(StatusCode::INTERNAL_SERVER_ERROR, m),
        })?;
        let plugin = runner_command(dir, runner, &path, &["--test".to_owned()])
            .map_err(|e| bad(e.replace("plugin_filename", "filename")))?;
        request["plugin"] = json!(path.to_string_lossy());
        request["trigger"] = json!(format!("plugin_test:{filename}"));
        request["cache"] = json!(self.cache(cache_name));
        let mut command = tokio::process::Command::new(&plugin.command);
        command.args(&plugin.args).envs(&plugin.env);
        if let Some(cwd) = &plugin.cwd {
            command.current_dir(cwd);
        }
        let done = bounded_child::run(
            command,
            request.to_string().as_bytes(),
            TEST_TIMEOUT,
            MAX_ANSWER,
            MAX_STDERR,
        )
        .await
        .map_err(|e| {
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("plugin test: {e}"),
            )
        })?;
        if done.stdout_cut {
            return Err(Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("plugin test: the answer is larger than {MAX_ANSWER} bytes"),
            ));
        }
        let mut answer: TestAnswer = serde_json::from_slice(&done.stdout).map_err(|e| {
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "plugin test: the runner gave no answer ({}, {e}): {}",
                    done.status,
                    done.stderr.trim()
                ),
            )
        })?;
        self.keep(cache_name, answer.cache.take());
        Ok(answer)
    }
}
