//! What the database offers its plugins: `tsdb.engine.v1.Database` on baton's
//! host-services socket. The calling plugin is known from its launch token (baton's
//! `PluginIdentity`), and may work only in the databases of its own triggers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use baton_host::PluginIdentity;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::database_server::Database;
use crate::api::{QueryRequest, Row, Value, WriteRequest, WriteResponse, value};
use crate::line_protocol::Precision;
use crate::storage::{Cell, Storage, StoreError};
use crate::triggers::Engine;

/// Rows one `Query` may return.
pub const MAX_QUERY_ROWS: usize = 100_000;

/// The `Database` service.
#[derive(Clone)]
pub struct HostApi {
    pub storage: Storage,
    /// Set once the plugins (and so the triggers) have started.
    pub engine: Arc<OnceLock<Arc<Engine>>>,
}

impl HostApi {
    /// The calling plugin, if it may work in `database`.
    fn allowed<T>(&self, request: &Request<T>, database: &str) -> Result<String, Status> {
        let caller = PluginIdentity::of(request)?.name.to_string();
        let engine = self
            .engine
            .get()
            .ok_or_else(|| Status::unavailable("the database is still starting"))?;
        if !engine.databases_of(&caller).contains(database) {
            return Err(Status::permission_denied(format!(
                "plugin {caller} has no trigger in database {database:?}, so it may not use it"
            )));
        }
        Ok(caller)
    }
}

fn to_cell(v: Value) -> Cell {
    match v.kind {
        None => Cell::Null,
        Some(value::Kind::Float(f)) => Cell::Real(f),
        Some(value::Kind::Integer(i)) => Cell::Integer(i),
        Some(value::Kind::Unsigned(u)) => {
            i64::try_from(u).map_or_else(|_| Cell::Real(u as f64), Cell::Integer)
        }
        Some(value::Kind::Text(t)) => Cell::Text(t),
        Some(value::Kind::Boolean(b)) => Cell::Integer(i64::from(b)),
    }
}

pub fn from_cell(c: Cell) -> Value {
    Value {
        kind: match c {
            Cell::Null => None,
            Cell::Integer(i) => Some(value::Kind::Integer(i)),
            Cell::Real(r) => Some(value::Kind::Float(r)),
            Cell::Text(t) => Some(value::Kind::Text(t)),
        },
    }
}

/// A storage error as the status a plugin (or an HTTP client) gets.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Point { .. } | StoreError::Query(_) | StoreError::Database(_) => {
            Status::invalid_argument(e.to_string())
        }
        StoreError::Sqlite(_) => Status::internal(e.to_string()),
    }
}

type RowStream = Pin<Box<dyn Stream<Item = Result<Row, Status>> + Send>>;

#[tonic::async_trait]
impl Database for HostApi {
    type QueryStream = RowStream;

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<RowStream>, Status> {
        self.allowed(&request, &request.get_ref().database)?;
        let QueryRequest {
            database,
            sql,
            params,
        } = request.into_inner();
        let storage = self.storage.clone();
        let params = params.into_iter().map(to_cell).collect();
        let rows = tokio::task::spawn_blocking(move || {
            storage.query(&database, &sql, params, MAX_QUERY_ROWS)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        let names = rows.names;
        let rows = rows.rows.into_iter().map(move |cells| {
            Ok(Row {
                names: names.clone(),
                values: cells.into_iter().map(from_cell).collect(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(rows))))
    }

    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let caller = self.allowed(&request, &request.get_ref().database)?;
        let WriteRequest {
            database,
            line_protocol,
        } = request.into_inner();
        let tables = crate::http::store(
            &self.storage,
            &database,
            &line_protocol,
            Precision::Nanoseconds,
        )
        .await
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let points = tables.values().map(Vec::len).sum::<usize>() as u64;
        if let Some(engine) = self.engine.get() {
            engine.written(&database, &tables, Some(&caller));
        }
        Ok(Response::new(WriteResponse { points }))
    }
}

/// Points as the plugin API carries them, by table.
pub fn by_table(
    points: Vec<crate::line_protocol::Point>,
) -> BTreeMap<String, Vec<crate::api::Point>> {
    use crate::line_protocol::FieldValue;
    let mut tables: BTreeMap<String, Vec<crate::api::Point>> = BTreeMap::new();
    for p in points {
        let fields = p
            .fields
            .into_iter()
            .map(|(k, v)| {
                let kind = match v {
                    FieldValue::Float(f) => value::Kind::Float(f),
                    FieldValue::Integer(i) => value::Kind::Integer(i),
                    FieldValue::Unsigned(u) => value::Kind::Unsigned(u),
                    FieldValue::Text(t) => value::Kind::Text(t),
                    FieldValue::Boolean(b) => value::Kind::Boolean(b),
                };
                (k, Value { kind: Some(kind) })
            })
            .collect();
        tables
            .entry(p.measurement)
            .or_default()
            .push(crate::api::Point {
                tags: p.tags.into_iter().collect(),
                fields,
                time_ns: p.time_ns.unwrap_or(0),
            });
    }
    tables
}
