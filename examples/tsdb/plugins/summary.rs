//! The summary endpoint, a tsdb plugin (on HTTP request): `GET
//! /api/v3/engine/summary?table=cpu` answers with the table's row count, and the mean,
//! minimum and maximum of a field, computed with the database's `Query`. Keeps no state.
//!
//! Trigger args: `field` (default `value`), `table` (the default for the query's).

use std::sync::Arc;

use baton_plugin_sdk::{Bytes, Description, HostClient, Plugin, Server, Status, async_trait};
use tokio::sync::OnceCell;
use tonic::{Request, Response};
use tsdb::api::database_client::DatabaseClient;
use tsdb::api::trigger_server::{Trigger, TriggerServer};
use tsdb::api::{
    HttpRequest, HttpResponse, PositionRequest, PositionResponse, QueryRequest, ScheduledCall,
    TriggerResult, WriteBatch, value,
};

#[derive(Clone, Default)]
struct Summary(Arc<OnceCell<HostClient>>);

/// A table or column name safe to put in SQL as it is.
fn identifier(name: &str) -> Result<&str, Status> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
        .ok_or_else(|| Status::invalid_argument(format!("{name:?} is not a table or field name")))
}

fn json_of(v: Option<value::Kind>) -> serde_json::Value {
    match v {
        Some(value::Kind::Float(f)) => f.into(),
        Some(value::Kind::Integer(i)) => i.into(),
        Some(value::Kind::Unsigned(u)) => u.into(),
        Some(value::Kind::Text(t)) => t.into(),
        Some(value::Kind::Boolean(b)) => b.into(),
        None => serde_json::Value::Null,
    }
}

#[async_trait]
impl Plugin for Summary {
    fn describe(&self) -> Description {
        Description::new("tsdb-summary", "1")
    }

    async fn invoke(&self, method: &str, _payload: Bytes) -> Result<Bytes, Status> {
        Err(Status::unimplemented(format!(
            "the summary has no method {method:?}"
        )))
    }
}

#[tonic::async_trait]
impl Trigger for Summary {
    async fn on_request(&self, r: Request<HttpRequest>) -> Result<Response<HttpResponse>, Status> {
        let request = r.into_inner();
        let table = request
            .query
            .get("table")
            .or_else(|| request.args.get("table"))
            .map_or("cpu", String::as_str);
        let table = identifier(table)?;
        let field = identifier(request.args.get("field").map_or("value", String::as_str))?;
        let host = self
            .0
            .get_or_try_init(HostClient::from_env)
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the database: {e}")))?;
        let sql = format!(
            "SELECT COUNT(*) AS points, AVG({field}) AS mean, MIN({field}) AS min, MAX({field}) AS max FROM {table}"
        );
        let mut rows = DatabaseClient::new(host.channel())
            .query(QueryRequest {
                database: request.database.clone(),
                sql,
                ..QueryRequest::default()
            })
            .await?
            .into_inner();
        let mut summary = serde_json::Map::new();
        summary.insert("table".into(), table.into());
        if let Some(row) = rows.message().await? {
            for (name, value) in row.names.into_iter().zip(row.values) {
                summary.insert(name, json_of(value.kind));
            }
        }
        Ok(Response::new(HttpResponse {
            status: 200,
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            body: serde_json::Value::Object(summary).to_string().into_bytes(),
        }))
    }

    async fn on_write(&self, _: Request<WriteBatch>) -> Result<Response<TriggerResult>, Status> {
        Err(Status::unimplemented("the summary answers HTTP requests"))
    }

    async fn on_schedule(
        &self,
        _: Request<ScheduledCall>,
    ) -> Result<Response<TriggerResult>, Status> {
        Err(Status::unimplemented("the summary answers HTTP requests"))
    }

    async fn position(
        &self,
        _: Request<PositionRequest>,
    ) -> Result<Response<PositionResponse>, Status> {
        Err(Status::unimplemented("the summary takes no write batches"))
    }
}

fn main() -> std::process::ExitCode {
    let summary = Summary::default();
    Server::new(summary.clone())
        .add_service(TriggerServer::new(summary))
        .with_reflection(tsdb::FILE_DESCRIPTOR_SET)
        .serve()
}
