//! The threshold alerter, a tsdb plugin (on write): for each point whose field crosses
//! the trigger's threshold upward, it writes a row to the `alerts` table and logs it.
//! Its state — the last value of each series, the count of alerts and of points seen,
//! and each trigger's last batch — moves to the new process at every reload, so a reload
//! never re-raises or forgets an alert; batches it has already are ignored, so one sent
//! again after a crash counts once. The state is JSON
//! (`{"alerts":N,"last":{SERIES:VALUE},"points":N,"positions":{TRIGGER:SEQ}}`), as the
//! Python alerter's.
//!
//! Trigger args: `field` (default `value`), `threshold` (default 90), `fail` (`always`:
//! every call fails, to see a trigger's error policy at work), `crash` (`always`: the
//! process exits on every batch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use baton_plugin_sdk::{
    Bytes, Description, HostClient, LogLevel, Plugin, Server, Status, async_trait,
};
use tokio::sync::OnceCell;
use tonic::{Request, Response};
use tsdb::api::database_client::DatabaseClient;
use tsdb::api::trigger_server::{Trigger, TriggerServer};
use tsdb::api::{
    HttpRequest, HttpResponse, PositionRequest, PositionResponse, ScheduledCall, TriggerResult,
    WriteBatch, WriteRequest, value,
};

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct State {
    alerts: u64,
    last: BTreeMap<String, f64>,
    #[serde(default)]
    points: u64,
    #[serde(default)]
    positions: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Alerter {
    state: Mutex<State>,
    host: OnceCell<HostClient>,
}

/// The plugin: one value serves `Plugin` and `Trigger`.
#[derive(Clone, Default)]
struct Shared(Arc<Alerter>);

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn host(&self) -> Result<&HostClient, Status> {
        self.0
            .host
            .get_or_try_init(HostClient::from_env)
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the database: {e}")))
    }
}

/// A tag value or key as line protocol needs it.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
        .replace(' ', "\\ ")
}

#[async_trait]
impl Plugin for Shared {
    fn describe(&self) -> Description {
        Description::new("tsdb-alerter", "1")
            .state_schema(1)
            .method("alerts", "how many alerts were raised")
    }

    async fn invoke(&self, method: &str, _payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "alerts" => Ok(Bytes::from(self.state().alerts.to_string())),
            other => Err(Status::unimplemented(format!(
                "the alerter has no method {other:?} (it has: alerts)"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        serde_json::to_vec(&*self.state())
            .map(Bytes::from)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn restore(&self, _schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        *self.state() = serde_json::from_slice(&state)
            .map_err(|e| Status::data_loss(format!("the alerter's state is not its JSON: {e}")))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Trigger for Shared {
    async fn on_write(&self, r: Request<WriteBatch>) -> Result<Response<TriggerResult>, Status> {
        let batch = r.into_inner();
        if batch.args.get("crash").map(String::as_str) == Some("always") {
            // A plugin that dies on every batch: the process exits mid-call.
            std::process::exit(3);
        }
        if batch.args.get("fail").map(String::as_str) == Some("always") {
            return Err(Status::internal(
                "the alerter was told to fail (fail = \"always\")",
            ));
        }
        let field = batch.args.get("field").map_or("value", String::as_str);
        let threshold: f64 = batch
            .args
            .get("threshold")
            .map_or(Ok(90.0), |t| t.parse())
            .map_err(|_| Status::invalid_argument("the threshold arg is not a number"))?;
        let mut lines = Vec::new();
        {
            let mut state = self.state();
            let position = state.positions.entry(batch.trigger.clone()).or_default();
            if batch.sequence != 0 && batch.sequence <= *position {
                // Had it already: sent again after a crash.
                let (alerts, points) = (state.alerts, state.points);
                return Ok(Response::new(TriggerResult {
                    message: format!("{alerts} alert(s) so far, {points} points"),
                    ..Default::default()
                }));
            }
            if *position != 0 && batch.previous != *position {
                // Batches were lost (a crash since the last checkpoint): say so, so
                // that the database sends them again.
                return Err(Status::failed_precondition(format!(
                    "batch {} follows batch {}, but this state stands at batch {}",
                    batch.sequence, batch.previous, *position
                )));
            }
            *position = batch.sequence;
            for table in &batch.tables {
                for point in &table.points {
                    let value = match point.fields.get(field).and_then(|v| v.kind.clone()) {
                        Some(value::Kind::Float(f)) => f,
                        Some(value::Kind::Integer(i)) => i as f64,
                        Some(value::Kind::Unsigned(u)) => u as f64,
                        _ => continue,
                    };
                    state.points += 1;
                    let tags: BTreeMap<_, _> = point.tags.iter().collect();
                    let mut series = table.table.clone();
                    for (k, v) in tags {
                        series.push_str(&format!(",{k}={v}"));
                    }
                    let before = state.last.insert(series.clone(), value);
                    if value > threshold && before.is_none_or(|b| b <= threshold) {
                        state.alerts += 1;
                        lines.push(format!(
                            "alerts,table={},series={} value={value},threshold={threshold} {}",
                            escape(&table.table),
                            escape(&series),
                            point.time_ns
                        ));
                    }
                }
            }
        }
        if !lines.is_empty() {
            let host = self.host().await?;
            DatabaseClient::new(host.channel())
                .write(WriteRequest {
                    database: batch.database.clone(),
                    line_protocol: lines.join("\n"),
                })
                .await?;
            let _ = host
                .log(
                    LogLevel::Warn,
                    format!("{} alert(s) raised", lines.len()),
                    [("trigger", batch.trigger.as_str())],
                )
                .await;
        }
        let (alerts, points) = {
            let state = self.state();
            (state.alerts, state.points)
        };
        Ok(Response::new(TriggerResult {
            message: format!("{alerts} alert(s) so far, {points} points"),
            ..Default::default()
        }))
    }

    async fn position(
        &self,
        r: Request<PositionRequest>,
    ) -> Result<Response<PositionResponse>, Status> {
        let sequence = self
            .state()
            .positions
            .get(&r.get_ref().trigger)
            .copied()
            .unwrap_or(0);
        Ok(Response::new(PositionResponse { sequence }))
    }

    async fn on_schedule(
        &self,
        _: Request<ScheduledCall>,
    ) -> Result<Response<TriggerResult>, Status> {
        Err(Status::unimplemented("the alerter runs on writes"))
    }

    async fn on_request(&self, _: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
        Err(Status::unimplemented("the alerter runs on writes"))
    }
}

fn main() -> std::process::ExitCode {
    let alerter = Shared::default();
    Server::new(alerter.clone())
        .add_service(TriggerServer::new(alerter))
        .with_reflection(tsdb::FILE_DESCRIPTOR_SET)
        .serve()
}
