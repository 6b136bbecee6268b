//! Queries: DataFusion's SQL over one database's tables (schema `iox`, as InfluxDB 3 names
//! it), `information_schema` and the `system` tables. A query may only read, and is
//! bounded in rows, bytes, memory and time, each a clear error naming the bound.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use tokio_stream::StreamExt;

use super::{Db, StoreError};

/// Rows one query may return.
pub const MAX_ROWS: usize = 100_000;
/// Bytes of Arrow data one query may return.
pub const MAX_RESULT_BYTES: usize = 64 << 20;
/// Memory one query may use while it runs (sorts, aggregates, joins).
pub const MAX_QUERY_MEMORY: usize = 512 << 20;
/// How long one query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Queries run at once; more wait their turn.
pub const MAX_CONCURRENT_QUERIES: usize = 8;
/// The database every trigger's system tables are visible from, as in InfluxDB 3.
pub const INTERNAL_DATABASE: &str = "_internal";

/// A query's parameters: `$1, $2, …` or `$name`.
#[derive(Debug, Clone, Default)]
pub enum Params {
    #[default]
    None,
    Positional(Vec<ScalarValue>),
    Named(Vec<(String, ScalarValue)>),
}

/// A query's answer.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What `system.*` holds for a query in a database.
pub type SystemTables = Arc<dyn Fn(&str) -> Arc<dyn SchemaProvider> + Send + Sync>;

/// Whether a database without data exists (made by the configure API or a trigger).
pub type KnownDatabases = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct Queries {
    system: RwLock<Option<SystemTables>>,
    known: RwLock<Option<KnownDatabases>>,
    running: tokio::sync::Semaphore,
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            system: RwLock::new(None),
            known: RwLock::new(None),
            running: tokio::sync::Semaphore::new(MAX_CONCURRENT_QUERIES),
        }
    }
}

impl Queries {
    pub fn set_system_tables(&self, tables: SystemTables) {
        *self.system.write().unwrap_or_else(|p| p.into_inner()) = Some(tables);
    }

    pub fn set_known_databases(&self, known: KnownDatabases) {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Some(known);
    }

    fn known(&self, name: &str) -> bool {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner()).clone();
        known.is_some_and(|known| known(name))
    }

    fn system_tables(&self) -> Option<SystemTables> {
        self.system
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// DataFusion's error as a client reads it, the bound named where one was reached.
fn query_error(e: DataFusionError) -> StoreError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(what) => StoreError::Query(format!(
            "the query needs more than the {} MiB of memory a query may use ({what}); narrow it (WHERE time > ..., LIMIT)",
            MAX_QUERY_MEMORY >> 20
        )),
        root => StoreError::Query(root.to_string()),
    }
}

pub async fn run(
    db: &Db,
    name: &str,
    sql: &str,
    params: Params,
) -> Result<QueryOutput, StoreError> {
    super::check_database_name(name)?;
    let views = match db.views(name) {
        Some(views) => views,
        None if name == INTERNAL_DATABASE || db.inner.queries.known(name) => Vec::new(),
        None => {
            return Err(StoreError::Database(format!(
                "database not found: no database named {name:?}"
            )));
        }
    };
    let queries = &db.inner.queries;
    let _turn = queries
        .running
        .acquire()
        .await
        .map_err(|_| StoreError::Query("tsdb is shutting down".into()))?;
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("public", "iox")
        .with_target_partitions(2);
    // Tags read back as written (Dictionary, Utf8), not as the view types DataFusion
    // would pick for Parquet strings.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(MAX_QUERY_MEMORY)))
        .build_arc()
        .map_err(query_error)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for view in views {
        ctx.register_table(TableReference::bare(view.name.clone()), Arc::new(view))
            .map_err(query_error)?;
    }
    if let (Some(system), Some(catalog)) = (queries.system_tables(), ctx.catalog("public")) {
        catalog
            .register_schema("system", system(name))
            .map_err(query_error)?;
    }
    let work = async {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut frame = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(read_only_error)?;
        frame = match params {
            Params::None => Ok(frame),
            Params::Positional(values) => frame.with_param_values(values),
            Params::Named(values) => frame.with_param_values(values),
        }
        .map_err(query_error)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await.map_err(query_error)?;
        let (mut rows, mut bytes) = (0usize, 0usize);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(query_error)?;
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
            if rows > MAX_ROWS {
                return Err(StoreError::Query(format!(
                    "the query returns more than {MAX_ROWS} rows, the most a query may; narrow it (LIMIT, WHERE time > ...)"
                )));
            }
            if bytes > MAX_RESULT_BYTES {
                return Err(StoreError::Query(format!(
                    "the query's result is larger than {} MiB, the most a query may return; narrow it (fewer columns, LIMIT)",
                    MAX_RESULT_BYTES >> 20
                )));
            }
            batches.push(batch);
        }
        Ok(QueryOutput { schema, batches })
    };
    match tokio::time::timeout(QUERY_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Query(format!(
            "the query ran longer than {QUERY_TIMEOUT:?}, the most a query may; it was stopped"
        ))),
    }
}

/// A statement refused for not being a read says so, and how to write.
fn read_only_error(e: DataFusionError) -> StoreError {
    let text = e.find_root().to_string();
    if text.contains("DDL not supported")
        || text.contains("DML not supported")
        || text.contains("Statement not supported")
    {
        StoreError::Query(format!(
            "a query may only read ({text}); write with line protocol"
        ))
    } else {
        query_error(e)
    }
}
