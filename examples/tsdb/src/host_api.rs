//! What the database offers its plugins: `tsdb.engine.v1.Database` on baton's
//! host-services socket. The calling plugin is known from its launch token (baton's
//! `PluginIdentity`); it may work in any database, as in InfluxDB 3, or only in those of
//! its own triggers (`plugin_databases = "own"`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use baton_host::PluginIdentity;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::database_server::Database;
use crate::api::{QueryRequest, Row, Value, WriteRequest, WriteResponse, value};
use crate::config::PluginDatabases;
use crate::db::value::Cell;
use crate::db::{Db, Params, StoreError};
use crate::line_protocol::Precision;
use crate::triggers::Engine;
use datafusion::scalar::ScalarValue;

/// The `Database` service.
#[derive(Clone)]
pub struct HostApi {
    pub db: Db,
    /// Set once the plugins (and so the triggers) have started.
    pub engine: Arc<OnceLock<Arc<Engine>>>,
    pub reach: PluginDatabases,
}

impl HostApi {
    /// The calling plugin, if it may work in `database`.
    fn allowed<T>(&self, request: &Request<T>, database: &str) -> Result<String, Status> {
        let caller = PluginIdentity::of(request)?.name.to_string();
        let engine = self
            .engine
            .get()
            .ok_or_else(|| Status::unavailable("the database is still starting"))?;
        if self.reach == PluginDatabases::Own && !engine.databases_of(&caller).contains(database) {
            return Err(Status::permission_denied(format!(
                "plugin {caller} has no trigger in database {database:?}, so it may not use it \
                 ({})",
                crate::config::OWN_DATABASES_ONLY
            )));
        }
        Ok(caller)
    }
}

/// A parameter as SQL sees it (`$1` or `$name`): a string is coerced by where it is used.
pub fn to_scalar(v: Value) -> ScalarValue {
    match v.kind {
        None => ScalarValue::Null,
        Some(value::Kind::Float(f)) => ScalarValue::Float64(Some(f)),
        Some(value::Kind::Integer(i)) => ScalarValue::Int64(Some(i)),
        Some(value::Kind::Unsigned(u)) => ScalarValue::UInt64(Some(u)),
        Some(value::Kind::Text(t)) => ScalarValue::Utf8(Some(t)),
        Some(value::Kind::Boolean(b)) => ScalarValue::Boolean(Some(b)),
    }
}

/// `$name` parameters as a query takes them; none given is a query without any.
pub fn named_params(named: impl IntoIterator<Item = (String, Value)>) -> Params {
    let named: Vec<(String, ScalarValue)> = named
        .into_iter()
        .map(|(name, v)| (name, to_scalar(v)))
        .collect();
    if named.is_empty() {
        Params::None
    } else {
        Params::Named(named)
    }
}

/// A result cell as the API carries it: a timestamp as nanoseconds since the epoch.
pub fn from_cell(c: Cell) -> Value {
    Value {
        kind: match c {
            Cell::Null => None,
            Cell::Integer(i) | Cell::Time(i) => Some(value::Kind::Integer(i)),
            Cell::Unsigned(u) => Some(value::Kind::Unsigned(u)),
            Cell::Real(r) => Some(value::Kind::Float(r)),
            Cell::Text(t) => Some(value::Kind::Text(t)),
            Cell::Boolean(b) => Some(value::Kind::Boolean(b)),
        },
    }
}

/// A storage error as the status a plugin (or an HTTP client) gets.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Point { .. } | StoreError::Query(_) => Status::invalid_argument(e.to_string()),
        StoreError::Database(_) => Status::not_found(e.to_string()),
        StoreError::Io(_) => Status::internal(e.to_string()),
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
            named_params,
        } = request.into_inner();
        let params = match (params.is_empty(), named_params.is_empty()) {
            (true, true) => Params::None,
            (false, true) => Params::Positional(params.into_iter().map(to_scalar).collect()),
            (true, false) => crate::host_api::named_params(named_params),
            (false, false) => {
                return Err(Status::invalid_argument(
                    "params and named_params: give one or the other, not both",
                ));
            }
        };
        let output = self
            .db
            .query(&database, &sql, params)
            .await
            .map_err(store_status)?;
        let rows = crate::db::value::rows(&output);
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
            &self.db,
            &database,
            &line_protocol,
            Precision::Nanoseconds,
            true,
        )
        .await
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let points = tables.values().map(Vec::len).sum::<usize>() as u64;
        if let Some(engine) = self.engine.get() {
            engine.written(&database, tables, Some(&caller));
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
