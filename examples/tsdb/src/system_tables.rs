//! `system.processing_engine_triggers` and `system.processing_engine_logs`, as InfluxDB 3
//! names them: from a database, its own triggers; from `_internal`, every trigger, and
//! `system.tokens` (the admin tokens: names and hashes, never a token).
//!
//! The logs are what each trigger's plugin printed or sent to baton's `Log` service,
//! baton's lifecycle events for its plugin (started, crashed, restarted, reloaded, rolled
//! back), and tsdb's own lines about the trigger (a call that failed, the trigger
//! disabled). They are kept in memory, a bounded ring per plugin and per trigger: a plugin
//! that logs without pause pushes out its own old lines, never another's.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use tracing::field::{Field as TraceField, Visit};
use tracing_subscriber::layer::Context;

use crate::catalog::Catalog;
use crate::db::INTERNAL_DATABASE;
use crate::triggers::Engine;

/// Lines kept per plugin and per trigger.
pub const KEPT_LINES: usize = 1_000;
/// The longest line kept; the rest is cut, marked.
pub const MAX_LINE_BYTES: usize = 4 << 10;
/// Plugins and triggers whose lines are kept: each is a ring; lines of more are dropped.
const MAX_SOURCES: usize = 1_024;

pub const TRIGGERS_TABLE: &str = "processing_engine_triggers";
pub const LOGS_TABLE: &str = "processing_engine_logs";
/// The admin tokens, in `_internal` only (what `influxdb3 show tokens` reads).
pub const TOKENS_TABLE: &str = "tokens";

#[derive(Debug, Clone)]
struct Line {
    unix_ns: i64,
    level: &'static str,
    text: String,
}

#[derive(Debug, Default)]
struct Rings {
    by_plugin: HashMap<String, VecDeque<Line>>,
    by_trigger: HashMap<String, VecDeque<Line>>,
    /// When each plugin's latest checkpoint was taken (Unix ns): what a crash keeps.
    /// Not a line: a plugin checkpointed every second would push out its own lines.
    checkpoints: HashMap<String, i64>,
}

/// The processing engine's log lines, by plugin and by trigger.
#[derive(Debug, Default)]
pub struct EngineLogs {
    rings: Mutex<Rings>,
}

fn push(rings: &mut HashMap<String, VecDeque<Line>>, key: &str, line: Line) {
    if !rings.contains_key(key) && rings.len() >= MAX_SOURCES {
        return;
    }
    let ring = rings.entry(key.to_owned()).or_default();
    if ring.len() == KEPT_LINES {
        ring.pop_front();
    }
    ring.push_back(line);
}

fn line(level: &'static str, text: &str) -> Line {
    let text = if text.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… (cut at {MAX_LINE_BYTES} bytes)", &text[..end])
    } else {
        text.to_owned()
    };
    Line {
        unix_ns: crate::line_protocol::now_ns(),
        level,
        text,
    }
}

impl EngineLogs {
    pub fn plugin_line(&self, plugin: &str, level: &'static str, text: &str) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        push(&mut rings.by_plugin, plugin, line(level, text));
    }

    pub fn trigger_line(&self, trigger: &str, level: &'static str, text: &str) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        push(&mut rings.by_trigger, trigger, line(level, text));
    }

    /// When plugin `plugin`'s latest checkpoint was taken, in Unix ns.
    fn last_checkpoint(&self, plugin: &str) -> Option<i64> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.checkpoints.get(plugin).copied()
    }

    fn checkpoint_taken(&self, plugin: &str, unix_ms: u64) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        if !rings.checkpoints.contains_key(plugin) && rings.checkpoints.len() >= MAX_SOURCES {
            return;
        }
        let unix_ns = i64::try_from(unix_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        rings.checkpoints.insert(plugin.to_owned(), unix_ns);
    }

    /// The lines of `trigger`, whose plugin is `plugin`, oldest first.
    fn lines_of(&self, trigger: &str, plugin: &str) -> Vec<Line> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<Line> = rings
            .by_plugin
            .get(plugin)
            .into_iter()
            .chain(rings.by_trigger.get(trigger))
            .flatten()
            .cloned()
            .collect();
        lines.sort_by_key(|l| l.unix_ns);
        lines
    }

    /// Keeps baton's lifecycle events for each plugin, until the host stops.
    pub fn follow(self: &Arc<Self>, host: &baton_host::Host) {
        let mut events = host.subscribe();
        let logs = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) if event.kind == "checkpoint" => {
                        logs.checkpoint_taken(&event.plugin, event.unix_ms);
                    }
                    Ok(event) => {
                        let level = match &*event.kind {
                            "crashed" | "start_failed" | "failed" | "rollback" => "ERROR",
                            "over_limit" => "WARN",
                            _ => "INFO",
                        };
                        let text = if event.message.is_empty() {
                            format!("baton: {} (generation {})", event.kind, event.generation)
                        } else {
                            format!(
                                "baton: {} (generation {}): {}",
                                event.kind, event.generation, event.message
                            )
                        };
                        logs.plugin_line(&event.plugin, level, &text);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("processing engine logs: {n} lifecycle events missed");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// A tracing layer that keeps, for the system table, the lines baton logs for a plugin
/// (its captured output and its `Log` calls, target `baton::plugin`, field `plugin`) and
/// tsdb's lines about a trigger (field `trigger`).
pub struct LogLayer(pub Arc<EngineLogs>);

#[derive(Default)]
struct Fields {
    plugin: Option<String>,
    trigger: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &TraceField, value: &str) {
        match field.name() {
            "plugin" => self.plugin = Some(value.to_owned()),
            "trigger" => self.trigger = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            name => self.rest.push_str(&format!(" {name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &TraceField, value: &dyn Debug) {
        match field.name() {
            "plugin" => self.plugin = Some(format!("{value:?}")),
            "trigger" => self.trigger = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            // The generation is in the lifecycle events already.
            "generation" => {}
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            tracing::Level::INFO => "INFO",
            // Debug and trace lines are for tsdb's own log, not the table.
            _ => return,
        };
        let from_plugin = meta.target() == "baton::plugin";
        if !from_plugin && !meta.target().starts_with("tsdb") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let text = format!("{}{}", fields.message, fields.rest);
        if let (true, Some(plugin)) = (from_plugin, &fields.plugin) {
            self.0.plugin_line(plugin, level, &text);
        } else if let Some(trigger) = &fields.trigger {
            self.0.trigger_line(trigger, level, &text);
        }
    }
}

/// The `system` schema a query in database `database` sees.
pub struct SystemSchema {
    pub database: String,
    pub engine: Arc<Engine>,
    pub catalog: Arc<Catalog>,
    pub logs: Arc<EngineLogs>,
}

impl Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemSchema")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl SystemSchema {
    fn triggers(&self) -> Vec<crate::triggers::TriggerStatus> {
        let all = self.database == INTERNAL_DATABASE;
        self.engine
            .status()
            .into_iter()
            .filter(|t| all || t.database == self.database)
            .collect()
    }

    fn triggers_table(&self) -> Result<RecordBatch, DataFusionError> {
        let triggers = self.triggers();
        let defined = self.catalog.state().triggers;
        let text = |f: &dyn Fn(&crate::triggers::TriggerStatus) -> Option<String>| -> ArrayRef {
            Arc::new(triggers.iter().map(f).collect::<StringArray>())
        };
        let count = |f: &dyn Fn(&crate::triggers::TriggerStatus) -> u64| -> ArrayRef {
            Arc::new(triggers.iter().map(|t| Some(f(t))).collect::<UInt64Array>())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("trigger_name", DataType::Utf8, false),
            Field::new("plugin_filename", DataType::Utf8, false),
            Field::new("trigger_specification", DataType::Utf8, false),
            Field::new("disabled", DataType::Boolean, false),
            Field::new("database_name", DataType::Utf8, false),
            Field::new("error_behavior", DataType::Utf8, false),
            Field::new("plugin_state", DataType::Utf8, false),
            Field::new("plugin_generation", DataType::UInt64, false),
            Field::new("calls", DataType::UInt64, false),
            Field::new("batches", DataType::UInt64, false),
            Field::new("errors", DataType::UInt64, false),
            Field::new("last_error", DataType::Utf8, true),
            Field::new(
                "last_checkpoint",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            text(&|t| Some(t.name.clone())),
            // A trigger made over the API names its file; one of tsdb.toml, its plugin.
            text(&|t| {
                Some(
                    defined
                        .get(&t.name)
                        .map_or_else(|| t.plugin.clone(), |d| d.plugin_filename.clone()),
                )
            }),
            text(&|t| Some(t.on.clone())),
            Arc::new(
                triggers
                    .iter()
                    .map(|t| Some(!t.enabled))
                    .collect::<BooleanArray>(),
            ),
            text(&|t| Some(t.database.clone())),
            text(&|t| Some(t.error_policy.clone())),
            text(&|t| Some(t.plugin_state.clone())),
            count(&|t| t.plugin_generation),
            count(&|t| t.calls),
            count(&|t| t.batches),
            count(&|t| t.errors),
            text(&|t| t.last_error.clone().or_else(|| t.plugin_last_error.clone())),
            Arc::new(
                triggers
                    .iter()
                    .map(|t| self.logs.last_checkpoint(&t.plugin))
                    .collect::<TimestampNanosecondArray>(),
            ),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn tokens_table(&self) -> Result<RecordBatch, DataFusionError> {
        let tokens: Vec<(String, crate::tokens::TokenEntry)> = self
            .catalog
            .read(|s| s.tokens.clone().into_iter().collect());
        let time = |ms: i64| ms.saturating_mul(1_000_000);
        let schema = Arc::new(Schema::new(vec![
            Field::new("token_id", DataType::UInt64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("hash", DataType::Utf8, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new(
                "expiry",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("permissions", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                tokens.iter().map(|(_, t)| t.id),
            )),
            Arc::new(StringArray::from_iter_values(tokens.iter().map(|(n, _)| n))),
            Arc::new(StringArray::from_iter_values(
                tokens.iter().map(|(_, t)| t.hash.as_str()),
            )),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                tokens.iter().map(|(_, t)| time(t.created_at_ms)),
            )),
            Arc::new(
                tokens
                    .iter()
                    .map(|(_, t)| t.expiry_ms.map(time))
                    .collect::<TimestampNanosecondArray>(),
            ),
            // Every token here is an admin token: all actions on all resources.
            Arc::new(StringArray::from_iter_values(
                tokens.iter().map(|_| "*:*:*"),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn logs_table(&self) -> Result<RecordBatch, DataFusionError> {
        let mut rows: Vec<(String, Line)> = Vec::new();
        for t in self.triggers() {
            rows.extend(
                self.logs
                    .lines_of(&t.name, &t.plugin)
                    .into_iter()
                    .map(|l| (t.name.clone(), l)),
            );
        }
        rows.sort_by_key(|(_, l)| l.unix_ns);
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("trigger_name", DataType::Utf8, false),
            Field::new("log_level", DataType::Utf8, false),
            Field::new("log_text", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|(_, l)| l.unix_ns),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(t, _)| t))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, l)| l.level),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, l)| l.text.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[tonic::async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = vec![TRIGGERS_TABLE.to_owned(), LOGS_TABLE.to_owned()];
        if self.database == INTERNAL_DATABASE {
            names.push(TOKENS_TABLE.to_owned());
        }
        names
    }

    // Built when a query names it, from the engine as it is then.
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let batch = match name {
            TRIGGERS_TABLE => self.triggers_table()?,
            LOGS_TABLE => self.logs_table()?,
            TOKENS_TABLE if self.database == INTERNAL_DATABASE => self.tokens_table()?,
            _ => return Ok(None),
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == TRIGGERS_TABLE
            || name == LOGS_TABLE
            || (name == TOKENS_TABLE && self.database == INTERNAL_DATABASE)
    }
}
