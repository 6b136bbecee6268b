//! Queries: DataFusion's SQL over one database's tables (schema `iox`, as InfluxDB 3 names
//! it), `information_schema` and the `system` tables. A query may only read, and is
//! bounded in rows, bytes, memory and time, each a clear error naming the bound.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use tokio_stream::StreamExt;

use super::{Db, StoreError};

/// Rows one query may return.
pub const MAX_ROWS: usize = 100_000;
/// Bytes of Arrow data one query may return, unless tsdb.toml's `max_result_bytes` says.
pub const MAX_RESULT_BYTES: usize = 64 << 20;
/// Memory one query may use while it runs (sorts, aggregates, joins), unless tsdb.toml's
/// `max_query_memory_bytes` says.
pub const MAX_QUERY_MEMORY: usize = 512 << 20;
/// How long one query may run, unless tsdb.toml's `query_timeout_ms` says.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Queries run at once; more wait their turn.
pub const MAX_CONCURRENT_QUERIES: usize = 8;
/// The database every trigger's system tables are visible from, as in InfluxDB 3.
pub const INTERNAL_DATABASE: &str = "_internal";

/// What one query may take.
#[derive(Debug, Clone)]
pub struct QueryBounds {
    pub timeout: Duration,
    pub max_result_bytes: usize,
    pub max_memory: usize,
}

impl Default for QueryBounds {
    fn default() -> Self {
        Self {
            timeout: QUERY_TIMEOUT,
            max_result_bytes: MAX_RESULT_BYTES,
            max_memory: MAX_QUERY_MEMORY,
        }
    }
}

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
    running: Arc<tokio::sync::Semaphore>,
    bounds: QueryBounds,
    threads: QueryThreads,
}

impl Queries {
    pub fn new(bounds: QueryBounds) -> Result<Self, String> {
        Ok(Self {
            system: RwLock::new(None),
            known: RwLock::new(None),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_QUERIES)),
            bounds,
            threads: QueryThreads::start()?,
        })
    }

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

/// The threads queries run on, apart from the ones that serve HTTP and writes: a query
/// busy on every core of its own runtime still leaves the others free to answer, as
/// InfluxDB 3 keeps DataFusion on an executor of its own.
struct QueryThreads(Option<tokio::runtime::Runtime>);

impl QueryThreads {
    fn start() -> Result<Self, String> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tsdb-query")
            .on_thread_start(yield_to_writes)
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
            .map_err(|e| format!("cannot start the query threads: {e}"))
    }

    fn spawn<F>(&self, work: F) -> Result<Running<F::Output>, StoreError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => Ok(Running(runtime.spawn(work))),
            None => Err(StoreError::Query("tsdb is shutting down".into())),
        }
    }
}

/// Nice value of the query threads: past the runtime, a core both want goes to the
/// threads that answer and commit writes first.
const QUERY_NICENESS: nix::libc::c_int = 10;

/// Lowers the calling thread's CPU priority (on Linux the nice value is per thread).
fn yield_to_writes() {
    // SAFETY: setpriority takes plain integers and changes only the scheduling priority
    // of the calling thread (who = 0); it touches no memory.
    let failed = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, QUERY_NICENESS) };
    if failed != 0 {
        tracing::warn!(
            "query threads: cannot lower their priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for QueryThreads {
    fn drop(&mut self) {
        // Dropped from within tsdb's own runtime at exit, where waiting is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A query running on the query threads: dropped (its client gone, its time up), it is
/// aborted at its next yield.
struct Running<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes every operator of `plan` yield to the runtime once its task's budget is spent.
/// DataFusion 55's joins never do, so an aggregate over a cross join would hold its
/// thread until done, deaf to an abort and to its time limit
/// (apache/datafusion#19358).
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    plan.transform_up(|node| {
        let any: &dyn std::any::Any = node.as_ref();
        if node.children().is_empty() || any.is::<CooperativeExec>() {
            Ok(Transformed::no(node))
        } else {
            Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as _))
        }
    })
    .map(|t| t.data)
}

/// DataFusion's error as a client reads it, the bound named where one was reached.
fn query_error(e: DataFusionError, bounds: &QueryBounds) -> StoreError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(what) => StoreError::Query(format!(
            "the query needs more than the {} of memory a query may use (max_query_memory_bytes: {what}); narrow it (WHERE time > ..., LIMIT)",
            size(bounds.max_memory)
        )),
        root => StoreError::Query(root.to_string()),
    }
}

/// A byte count as a reader takes it in.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
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
    let bounds = queries.bounds.clone();
    let turn = queries
        .running
        .clone()
        .acquire_owned()
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
    // Without a disk manager a query over its memory fails instead of spilling: no
    // client's query fills the disk or leaves files behind.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(bounds.max_memory)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| query_error(e, &bounds))?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for function in super::big_values::bounded(bounds.max_result_bytes) {
        ctx.register_udf(function);
    }
    for view in views {
        ctx.register_table(TableReference::bare(view.name.clone()), Arc::new(view))
            .map_err(|e| query_error(e, &bounds))?;
    }
    if let (Some(system), Some(catalog)) = (queries.system_tables(), ctx.catalog("public")) {
        catalog
            .register_schema("system", system(name))
            .map_err(|e| query_error(e, &bounds))?;
    }
    let work = execute(ctx, sql.to_owned(), params, bounds.clone());
    // The turn is held by the work itself: an abandoned query keeps its slot until it
    // has actually stopped, so the bound on queries at once holds.
    let mut running = queries.threads.spawn(async move {
        let answer = work.await;
        drop(turn);
        answer
    })?;
    match tokio::time::timeout(bounds.timeout, &mut running.0).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(StoreError::Query(format!("the query failed: {e}"))),
        Err(_) => Err(StoreError::Query(format!(
            "the query ran longer than {:?} (query_timeout_ms), the most a query may; it was stopped",
            bounds.timeout
        ))),
    }
}

/// Plans and runs `sql` read-only, collecting its answer within the bounds.
async fn execute(
    ctx: SessionContext,
    sql: String,
    params: Params,
    bounds: QueryBounds,
) -> Result<QueryOutput, StoreError> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let mut frame = ctx
        .sql_with_options(&sql, options)
        .await
        .map_err(|e| read_only_error(e, &bounds))?;
    frame = match params {
        Params::None => Ok(frame),
        Params::Positional(values) => frame.with_param_values(values),
        Params::Named(values) => frame.with_param_values(values),
    }
    .map_err(|e| query_error(e, &bounds))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let task = Arc::new(frame.task_ctx());
    let plan = frame
        .create_physical_plan()
        .await
        .and_then(cooperative)
        .map_err(|e| query_error(e, &bounds))?;
    let mut stream = execute_stream(plan, task).map_err(|e| query_error(e, &bounds))?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| query_error(e, &bounds))?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > MAX_ROWS {
            return Err(StoreError::Query(format!(
                "the query returns more than {MAX_ROWS} rows, the most a query may; narrow it (LIMIT, WHERE time > ...)"
            )));
        }
        if bytes > bounds.max_result_bytes {
            return Err(StoreError::Query(format!(
                "the query's result is larger than {}, the most a query may return (max_result_bytes); narrow it (fewer columns, LIMIT)",
                size(bounds.max_result_bytes)
            )));
        }
        batches.push(batch);
    }
    Ok(QueryOutput { schema, batches })
}

/// A statement refused for not being a read says so, and how to write.
fn read_only_error(e: DataFusionError, bounds: &QueryBounds) -> StoreError {
    let text = e.find_root().to_string();
    if text.contains("DDL not supported")
        || text.contains("DML not supported")
        || text.contains("Statement not supported")
    {
        StoreError::Query(format!(
            "a query may only read ({text}); write with line protocol"
        ))
    } else {
        query_error(e, bounds)
    }
}
