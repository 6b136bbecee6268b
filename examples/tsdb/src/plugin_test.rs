//! InfluxDB 3's plugin tests (`POST /api/v3/plugin_test/wal` and `/schedule`): the
//! plugin run once by the runner (`python -m influxdb3_runner --test`) on the given
//! input, in a process of its own on the plugin's environment, its writes returned and
//! never applied, its queries read from the real database. A test's cache is kept by
//! tsdb under its `cache_name` for 30 minutes, as InfluxDB keeps it.
//!
//! tsdb and the runner speak in JSON lines: the request to the runner's stdin; then the
//! runner's `{"query": ...}` lines, each answered on its stdin (`plugin_test_query`);
//! and last its `{"answer": ...}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::PluginDatabases;
use crate::db::Db;
use crate::line_child::{LineChild, Said};
use crate::line_protocol::{self, FieldValue, Precision};
use crate::plugin_dir::PluginDir;
use crate::plugin_launch::{PythonRunner, is_influxdb_plugin, runner_command};
use crate::plugin_test_query::{QueryLine, TestQueries};
use crate::processing_engine::Refused;

/// How long one test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest line read from the runner: its answer (writes and log lines), or a query
/// (refused past `plugin_test_query::MAX_QUERY_LINE`).
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

/// What the runner says on a line.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FromRunner {
    Query(QueryLine),
    Answer(TestAnswer),
}

/// The test caches, by `cache_name`; and which databases a test may query.
#[derive(Debug, Default)]
pub struct PluginTests {
    caches: Mutex<HashMap<String, (Instant, String)>>,
    reach: PluginDatabases,
}

fn failed(message: impl Into<String>) -> Refused {
    Refused(StatusCode::INTERNAL_SERVER_ERROR, message.into())
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
    /// With tsdb.toml's `plugin_databases`: `own` keeps a test's queries to its
    /// `database`.
    pub fn new(reach: PluginDatabases) -> Self {
        Self {
            caches: Mutex::default(),
            reach,
        }
    }

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
        db: &Db,
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
            db,
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
        db: &Db,
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
                db,
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
        db: &Db,
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
        request["protocol"] = json!(TEST_PROTOCOL);
        request["plugin"] = json!(path.to_string_lossy());
        request["trigger"] = json!(format!("plugin_test:{filename}"));
        request["cache"] = json!(self.cache(cache_name));
        let mut command = tokio::process::Command::new(&plugin.command);
        command.args(&plugin.args).envs(&plugin.env);
        if let Some(cwd) = &plugin.cwd {
            command.current_dir(cwd);
        }
        let database = request["database"].as_str().unwrap_or_default().to_owned();
        let request = request.to_string();
        let talk = converse(
            command,
            request.as_bytes(),
            TestQueries::new(db, &database, self.reach),
        );
        // Past its time the conversation is dropped, and the runner with it (killed).
        let mut answer = tokio::time::timeout(TEST_TIMEOUT, talk)
            .await
            .map_err(|_| {
                failed(format!(
                    "plugin test: the runner did not finish within {TEST_TIMEOUT:?} and was killed"
                ))
            })??;
        self.keep(cache_name, answer.cache.take());
        Ok(answer)
    }
}

/// The version of the conversation with the runner (`"protocol"` in the request): 1
/// was one request and one bare answer, 2 adds the queries and wraps the answer.
pub const TEST_PROTOCOL: u32 = 2;

/// Whether `line` is a whole answer of protocol 1 (`{"log_lines": ...}`).
fn is_bare_answer(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line).is_ok_and(|v| v.get("log_lines").is_some())
}

/// Sends `request` to the runner, answers its queries, and reads its answer.
async fn converse(
    command: tokio::process::Command,
    request: &[u8],
    mut queries: TestQueries<'_>,
) -> Result<TestAnswer, Refused> {
    let mut child =
        LineChild::start(command, MAX_STDERR).map_err(|e| failed(format!("plugin test: {e}")))?;
    child.send(request).await;
    // Each turn reads a line or ends; the queries are capped, and the whole by the
    // caller's timeout.
    loop {
        let line = match child.next_line(MAX_ANSWER).await {
            Said::Line(line) => line,
            Said::TooLong => {
                let stderr = child.abandon().await;
                return Err(failed(format!(
                    "plugin test: the answer is larger than {MAX_ANSWER} bytes: {}",
                    stderr.trim()
                )));
            }
            Said::End => {
                let (status, stderr) = child
                    .finish()
                    .await
                    .map_err(|e| failed(format!("plugin test: {e}")))?;
                return Err(failed(format!(
                    "plugin test: the runner gave no answer ({status}): {}",
                    stderr.trim()
                )));
            }
        };
        match serde_json::from_slice::<FromRunner>(&line) {
            Ok(FromRunner::Query(query)) => {
                let reply = queries.answer(query, line.len()).await;
                child.send(&reply).await;
            }
            // The runner has nothing more to say: it is killed as `child` drops, should
            // the plugin have left a thread that keeps it from exiting.
            Ok(FromRunner::Answer(answer)) => return Ok(answer),
            // A runner of before the conversation answers at once, its answer bare.
            Err(_) if is_bare_answer(&line) => {
                let _ = child.abandon().await;
                return Err(failed(format!(
                    "plugin test: the runner answered in an older protocol (1); this tsdb \
                     speaks {TEST_PROTOCOL}: run the runner of this tsdb's version \
                     (python_path in tsdb.toml, or pip install examples/tsdb/influxdb3_runner)"
                )));
            }
            Err(e) => {
                let stderr = child.abandon().await;
                return Err(failed(format!(
                    "plugin test: the runner said a line that is neither a query nor an answer ({e}): {:?}: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)]),
                    stderr.trim()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("sh");
        command.args(["-c", script]);
        command
    }

    /// A runner played by sh: the request, a query and its answer, the final answer;
    /// and one that says something else, killed with its stderr kept.
    #[tokio::test]
    async fn the_conversation_answers_queries_and_ends_at_the_answer_or_a_stray_line() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Db::open(dir.path(), crate::db::Options::default()).expect("a database");
        crate::http::store(&db, "metrics", "cpu v=1i 5", Precision::Nanoseconds, false)
            .await
            .expect("a write");
        let queries = || TestQueries::new(&db, "metrics", PluginDatabases::Any);
        let runner = sh(
            r#"read request; echo '{"query":{"sql":"SELECT v FROM cpu"}}'; read reply
            printf '{"answer":{"log_lines":["%s","%s"],"database_writes":{},"errors":[]}}\n' \
                "$request" "$(printf %s "$reply" | sed 's/"/\\"/g')"
            exec cat"#,
        );
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            converse(runner, b"the request", queries()),
        )
        .await
        .expect("in time")
        .expect("an answer");
        assert_eq!(
            answer.log_lines,
            vec![
                "the request".to_owned(),
                r#"{"rows":{"names":["v"],"rows":[[1]]}}"#.to_owned()
            ]
        );

        let runner = sh("read request; echo why >&2; echo not a line of the protocol; exec cat");
        let refused = tokio::time::timeout(
            Duration::from_secs(20),
            converse(runner, b"the request", queries()),
        )
        .await
        .expect("in time");
        let Err(Refused(status, message)) = refused else {
            panic!("a stray line was taken: {refused:?}");
        };
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            message.starts_with(
                "plugin test: the runner said a line that is neither a query nor an answer ("
            ) && message.ends_with(": \"not a line of the protocol\": why"),
            "{message}"
        );

        // A runner of protocol 1 answers at once, bare.
        let runner = sh(
            r#"read request; echo '{"log_lines":[],"database_writes":{},"errors":[]}'; exec cat"#,
        );
        let Err(Refused(_, message)) = converse(runner, b"the request", queries()).await else {
            panic!("an old runner's answer was taken");
        };
        assert!(
            message.starts_with(
                "plugin test: the runner answered in an older protocol (1); this tsdb speaks 2"
            ),
            "{message}"
        );

        let runner = sh("read request; echo gone >&2; exit 4");
        let gone = converse(runner, b"the request", queries()).await;
        let Err(Refused(_, message)) = gone else {
            panic!("no answer was taken: {gone:?}");
        };
        assert_eq!(
            message,
            "plugin test: the runner gave no answer (exit status: 4): gone"
        );
    }
}
