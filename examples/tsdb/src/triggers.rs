//! The processing engine: triggers that call plugins on writes, on schedules and on
//! HTTP requests, through the plugins' typed `Trigger` service (baton's
//! `PluginHandle::channel`, so a call waits out a reload or a restart instead of
//! failing), each with its error policy and a status the HTTP API shows.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use baton_host::{Host, PluginHandle};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::api::trigger_client::TriggerClient;
use crate::api::{HttpRequest, HttpResponse, WriteBatch};
use crate::config::{ErrorPolicy, TriggerConfig};
use crate::schedules::{every_interval, on_cron};
use crate::table_batches::Batch;
use crate::table_batches::ahead::Ahead;
pub use crate::trigger_spec::Spec;

/// Write batches waiting for one trigger; past this, batches are dropped and counted.
const QUEUE: usize = 1024;
/// Attempts of a call under the `retry` policy.
const ATTEMPTS: u32 = 4;
/// What the status shows of one trigger.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TriggerStatus {
    pub name: String,
    pub plugin: String,
    pub on: String,
    pub database: String,
    pub error_policy: String,
    pub enabled: bool,
    pub calls: u64,
    /// Writes delivered: a call may carry several that queued behind one another.
    pub batches: u64,
    pub errors: u64,
    /// Write batches dropped because the trigger's queue was full.
    pub dropped: u64,
    /// Batches sent again after the plugin came back with an older state (a crash
    /// and a restart from its last checkpoint), the latest last.
    pub replays: Vec<String>,
    /// From a call's (first) write accepted to the plugin's answer, over the last 4096
    /// calls.
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
    pub last_message: Option<String>,
    /// The plugin as baton sees it: state, generation, and its last error (a start
    /// that failed, a reload rolled back: where a syntax error in the plugin shows).
    pub plugin_state: String,
    pub plugin_generation: u64,
    pub plugin_pid: Option<u32>,
    pub plugin_last_error: Option<String>,
}

/// A write batch on its way to a trigger's plugin: when its (first) write was accepted,
/// and, for each write that waits for the trigger (`run_async = false`), what tells it
/// the call ended (dropped then).
pub(crate) type Queued = (Batch, Instant, Vec<oneshot::Sender<()>>);

/// One configured trigger.
pub struct Trigger {
    pub(crate) config: TriggerConfig,
    spec: Spec,
    pub(crate) plugin: PluginHandle,
    status: Mutex<TriggerStatus>,
    /// Write batches on their way to the plugin.
    queue: Option<mpsc::Sender<Queued>>,
    /// Its plugin's process reads the rows as a pickle (its delivery saw it say so):
    /// the writes it gets are pickled ahead.
    pub(crate) reads_pickle: AtomicBool,
    /// The longest one call may take; past it the call fails and the process is killed.
    pub(crate) call_timeout: Duration,
    /// The last sequence number given to a write batch; held while one is queued, so
    /// that the queue's order is the numbers' order.
    sequence: Mutex<u64>,
    /// Recent write-to-answer latencies, in µs.
    latencies: Mutex<std::collections::VecDeque<u64>>,
    /// Its delivery worker and timer, stopped when the trigger is deleted.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Trigger {
    pub(crate) fn client(&self) -> TriggerClient<baton_host::PluginChannel> {
        TriggerClient::new(self.plugin.channel())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut TriggerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Records one call answered, carrying `batches` writes, `latency` after its (first)
    /// write was accepted or after it began (a scheduled call, a request).
    pub(crate) fn answered(&self, message: String, latency: Duration, batches: u64) {
        {
            let mut recent = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == 4096 {
                recent.pop_front();
            }
            recent.push_back(latency.as_micros() as u64);
        }
        self.update(|s| {
            s.calls += 1;
            s.batches += batches;
            if !message.is_empty() {
                s.last_message = Some(message);
            }
        });
    }

    /// p50 and p99 of the recent latencies, sorted when the status is read: sorting
    /// 4096 of them at every answer cost each batch tens of µs on its way.
    fn latency_percentiles(&self) -> Option<(u64, u64)> {
        let mut sorted: Vec<u64> = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }

    /// What a call that failed for good does, by the trigger's error policy: counted
    /// and logged, and under `disable`, the trigger stops.
    pub(crate) fn failed(&self, status: &Status) {
        let error = format!("{:?}: {}", status.code(), status.message());
        let disable = self.config.error_policy == ErrorPolicy::Disable;
        self.update(|s| {
            s.calls += 1;
            s.errors += 1;
            s.last_error = Some(error.clone());
            s.last_error_unix_ms = Some(unix_ms(SystemTime::now()));
            if disable {
                s.enabled = false;
            }
        });
        if disable {
            tracing::error!(trigger = %self.config.name, "{error}; the trigger is disabled until enabled again");
        } else {
            tracing::warn!(trigger = %self.config.name, "{error}");
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enabled
    }

    /// Runs `call` under the trigger's error policy; the outcome is in its status.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        if !self.enabled() {
            return Err(Status::failed_precondition(format!(
                "trigger {} is disabled after an error; enable it with POST /api/v3/configure/processing_engine_trigger/enable?trigger_name={}",
                self.config.name, self.config.name
            )));
        }
        let attempts = match self.config.error_policy {
            ErrorPolicy::Retry => ATTEMPTS,
            ErrorPolicy::Log | ErrorPolicy::Disable => 1,
        };
        let started = std::time::Instant::now();
        let mut outcome = call().await;
        for attempt in 1..attempts {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            outcome = call().await;
        }
        match &outcome {
            // A scheduled call's or a request's latency: from its start to its answer.
            Ok(_) => self.answered(String::new(), started.elapsed(), 0),
            Err(status) => self.failed(status),
        }
        outcome
    }

    pub(crate) fn note(&self, message: String) {
        if !message.is_empty() {
            self.update(|s| s.last_message = Some(message));
        }
    }
}

/// Every trigger of the database: those of tsdb.toml, and those made over the API.
pub struct Engine {
    triggers: RwLock<Vec<Arc<Trigger>>>,
    /// Where a database a write makes is recorded.
    catalog: OnceLock<Arc<crate::catalog::Catalog>>,
    /// Pickles the writes of triggers whose process reads pickles.
    ahead: Ahead,
}

impl Engine {
    /// Starts the triggers of `configs` on `host`'s plugins: a worker per write
    /// trigger, a timer per schedule.
    pub fn start(
        configs: &[TriggerConfig],
        host: &Host,
        plugins: &baton_host::Config,
    ) -> Result<Arc<Self>, String> {
        let mut triggers = Vec::new();
        for config in configs {
            let plugin = host.plugin(&config.plugin).ok_or_else(|| {
                format!(
                    "trigger {:?}: no plugin named {:?} in the plugins' config",
                    config.name, config.plugin
                )
            })?;
            let call_timeout = plugins.plugins.get(&config.plugin).map_or(
                Duration::from_secs(30),
                baton_host::PluginConfig::call_timeout,
            );
            triggers.push(launch(config, plugin, true, call_timeout)?);
        }
        Ok(Arc::new(Self {
            triggers: RwLock::new(triggers),
            catalog: OnceLock::new(),
            ahead: Ahead::default(),
        }))
    }

    /// From now on, each database a write lands in is recorded in `catalog`.
    pub fn record_databases_in(&self, catalog: Arc<crate::catalog::Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// Starts one more trigger, on `plugin`; refused if its name is taken. `on_runner`:
    /// the plugin runs on the InfluxDB 3 runner, which reads the rows as a pickle, so its
    /// writes are pickled ahead from the first on (its first call, which says so, may
    /// be long: a plugin's first call often loads what it needs).
    pub fn add(
        &self,
        config: &TriggerConfig,
        plugin: PluginHandle,
        enabled: bool,
        call_timeout: Duration,
        on_runner: bool,
    ) -> Result<(), String> {
        let trigger = launch(config, plugin, enabled, call_timeout)?;
        trigger.reads_pickle.store(on_runner, Ordering::Relaxed);
        let mut triggers = self.triggers.write().unwrap_or_else(|p| p.into_inner());
        if triggers.iter().any(|t| t.config.name == config.name) {
            trigger.stop();
            return Err(format!("a trigger named {:?} exists", config.name));
        }
        triggers.push(trigger);
        Ok(())
    }

    /// Stops and forgets trigger `name`; false if there is none.
    pub fn remove(&self, name: &str) -> bool {
        let mut triggers = self.triggers.write().unwrap_or_else(|p| p.into_inner());
        let Some(at) = triggers.iter().position(|t| t.config.name == name) else {
            return false;
        };
        triggers.remove(at).stop();
        true
    }

    /// The database trigger `name` works in, if there is such a trigger.
    pub fn database_of(&self, name: &str) -> Option<String> {
        self.all()
            .iter()
            .find(|t| t.config.name == name)
            .map(|t| t.config.database.clone())
    }

    fn all(&self) -> Vec<Arc<Trigger>> {
        self.triggers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Trigger {
    fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.update(|s| s.enabled = false);
    }
}

/// Starts one trigger: its delivery worker (on writes) or its timer (on a schedule).
fn launch(
    config: &TriggerConfig,
    plugin: PluginHandle,
    enabled: bool,
    call_timeout: Duration,
) -> Result<Arc<Trigger>, String> {
    let spec = Spec::parse(&config.on)?;
    let (queue, batches) = if spec.fires_on_writes() {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let trigger = Arc::new(Trigger {
        status: Mutex::new(TriggerStatus {
            name: config.name.clone(),
            plugin: config.plugin.clone(),
            on: config.on.clone(),
            database: config.database.clone(),
            error_policy: format!("{:?}", config.error_policy).to_lowercase(),
            enabled,
            ..TriggerStatus::default()
        }),
        config: config.clone(),
        spec: spec.clone(),
        plugin,
        queue,
        reads_pickle: AtomicBool::new(false),
        call_timeout,
        sequence: Mutex::new(0),
        latencies: Mutex::default(),
        tasks: Mutex::default(),
    });
    let mut tasks = Vec::new();
    if let Some(batches) = batches {
        tasks.push(tokio::spawn(crate::delivery::deliver(
            trigger.clone(),
            batches,
        )));
    }
    match &spec {
        Spec::Every(every) => {
            tasks.push(tokio::spawn(every_interval(trigger.clone(), *every)));
        }
        Spec::Cron(schedule) => {
            tasks.push(tokio::spawn(on_cron(
                trigger.clone(),
                schedule.as_ref().clone(),
            )));
        }
        _ => {}
    }
    *trigger.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    Ok(trigger)
}

impl Engine {
    /// A write landed in `database`: each write trigger there whose tables it touched
    /// gets the rows (in order, through its queue); `by_plugin` names a plugin that
    /// wrote, whose own triggers are not fired by its writes (no feedback loops).
    /// Returns, for a write from outside (`by_plugin` `None`), one receiver per trigger
    /// with `run_async = false` that it fired, which ends when that trigger's call on
    /// these rows has ended.
    pub fn written(
        &self,
        database: &str,
        tables: BTreeMap<String, Vec<crate::api::Point>>,
        by_plugin: Option<&str>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::new();
        if let Some(catalog) = self.catalog.get() {
            catalog.note_database(database);
        }
        // Each table's points once, shared by every trigger (and pickled once).
        let tables = crate::table_batches::shared(tables);
        let mut pickle_ahead = Vec::new();
        for trigger in &self.all() {
            let Some(queue) = &trigger.queue else {
                continue;
            };
            if trigger.config.database != database
                || by_plugin == Some(trigger.config.plugin.as_str())
                || !trigger.enabled()
            {
                continue;
            }
            let tables: Vec<_> = tables
                .iter()
                .filter(|table| match &trigger.spec {
                    Spec::Table(wanted) => *wanted == table.name,
                    _ => true,
                })
                .cloned()
                .collect();
            if tables.is_empty() {
                continue;
            }
            let mut sequence = trigger.sequence.lock().unwrap_or_else(|p| p.into_inner());
            // Pickled ahead only once queued: a dropped batch is never sent.
            let ahead = trigger
                .reads_pickle
                .load(Ordering::Relaxed)
                .then(|| tables.clone());
            let batch = Batch::new(
                WriteBatch {
                    trigger: trigger.config.name.clone(),
                    args: trigger.config.args.clone().into_iter().collect(),
                    database: database.to_owned(),
                    sequence: *sequence + 1,
                    ..WriteBatch::default()
                },
                tables,
            );
            let (done, ended) = if trigger.config.run_async || by_plugin.is_some() {
                (Vec::new(), None)
            } else {
                let (done, ended) = oneshot::channel();
                (vec![done], Some(ended))
            };
            if queue.try_send((batch, Instant::now(), done)).is_ok() {
                *sequence += 1;
                waits.extend(ended);
                for table in ahead.into_iter().flatten() {
                    if !pickle_ahead.iter().any(|t| Arc::ptr_eq(t, &table)) {
                        pickle_ahead.push(table);
                    }
                }
            } else {
                drop(sequence);
                trigger.update(|s| s.dropped += 1);
                tracing::warn!(trigger = %trigger.config.name, "a write batch was dropped: the trigger's queue is full");
            }
        }
        if !pickle_ahead.is_empty() {
            self.ahead.pickle(pickle_ahead);
        }
        waits
    }

    /// The processes serving the triggers now.
    pub fn plugin_pids(&self) -> Vec<u32> {
        self.all()
            .iter()
            .filter_map(|t| t.plugin.status().pid)
            .collect()
    }

    /// The trigger whose plugin is `plugin`, if one is.
    pub(crate) fn by_plugin(&self, plugin: &str) -> Option<Arc<Trigger>> {
        self.all().into_iter().find(|t| t.config.plugin == plugin)
    }

    /// The request trigger serving `path`, called with `request`.
    pub async fn request(
        &self,
        path: &str,
        mut request: HttpRequest,
    ) -> Option<Result<HttpResponse, Status>> {
        let trigger = self
            .all()
            .into_iter()
            .find(|t| matches!(&t.spec, Spec::Request(p) if p == path))?;
        request.trigger = trigger.config.name.clone();
        request.args = trigger.config.args.clone().into_iter().collect();
        request.database = trigger.config.database.clone();
        let outcome = trigger
            .run(|| {
                let (mut client, request) = (trigger.client(), request.clone());
                let call = async move {
                    client
                        .on_request(request)
                        .await
                        .map(tonic::Response::into_inner)
                };
                trigger.bounded("process_request", call)
            })
            .await;
        Some(outcome)
    }

    /// Every trigger's status, with its plugin's.
    pub fn status(&self) -> Vec<TriggerStatus> {
        self.all()
            .iter()
            .map(|t| {
                let mut status = t.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some((p50, p99)) = t.latency_percentiles() {
                    status.latency_p50_us = Some(p50);
                    status.latency_p99_us = Some(p99);
                }
                let plugin = t.plugin.status();
                status.plugin_state = format!("{:?}", plugin.state).to_lowercase();
                status.plugin_generation = plugin.generation;
                status.plugin_pid = plugin.pid;
                status.plugin_last_error = plugin.last_error;
                status
            })
            .collect()
    }

    /// Enables (or disables) trigger `name`; false if there is none.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let all = self.all();
        let Some(trigger) = all.iter().find(|t| t.config.name == name) else {
            return false;
        };
        trigger.update(|s| s.enabled = enabled);
        true
    }

    /// The databases plugin `plugin` works in (those of its triggers).
    pub fn databases_of(&self, plugin: &str) -> HashSet<String> {
        self.all()
            .iter()
            .filter(|t| t.config.plugin == plugin)
            .map(|t| t.config.database.clone())
            .collect()
    }
}
