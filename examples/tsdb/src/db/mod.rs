//! tsdb's storage engine, laid out as InfluxDB 3 lays out its data: each write goes to
//! a write-ahead log (answered once it is on disk), then into an in-memory buffer per
//! table; snapshots persist the buffers as Parquet files and let the log go; queries
//! are Apache DataFusion's SQL over the files and the buffers together.

mod big_values;
mod buffer;
mod commit;
mod log_record;
mod persist;
mod query;
pub mod schema;
mod table;
pub mod value;
mod wal;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::catalog::MAX_DATABASES;
use crate::line_protocol::Point;

use buffer::Buffer;
pub use commit::SNAPSHOT_ROWS;
pub use query::{
    INTERNAL_DATABASE, KnownDatabases, MAX_QUERY_MEMORY, MAX_RESULT_BYTES, Params, QUERY_TIMEOUT,
    QueryBounds, QueryOutput, SystemTables,
};
use schema::{Kind, TableSchema};
use table::{Layer, ParquetFile};

/// Tables one database may hold, unless tsdb.toml's `max_tables` says: each is a
/// schema, a buffer and files.
pub const MAX_TABLES: usize = 10_000;
/// New tables one write may create.
pub const MAX_NEW_TABLES_PER_WRITE: usize = 1_000;
/// Columns one table may hold (tags and fields), InfluxDB 3's default.
pub const MAX_COLUMNS: usize = 500;

/// The engine's bounds that tsdb.toml may set.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows buffered before a snapshot.
    pub snapshot_rows: usize,
    /// Tables one database may hold.
    pub max_tables: usize,
    /// What one query may take.
    pub query: QueryBounds,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_rows: SNAPSHOT_ROWS,
            max_tables: MAX_TABLES,
            query: QueryBounds::default(),
        }
    }
}

/// What a write that may keep part of its batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// The points stored, timestamps filled in.
    pub points: Vec<Point>,
    /// The points refused: index into the batch, and why.
    pub refused: Vec<(usize, String)>,
}

/// Why a write or query failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch is wrong at this point (0-based index into the batch).
    #[error("{what}")]
    Point { index: usize, what: String },
    /// The statement is wrong, or not a read, or past a bound.
    #[error("{0}")]
    Query(String),
    /// The database name is not usable, or there is no such database.
    #[error("{0}")]
    Database(String),
    /// The disk failed: nothing of the write was acknowledged.
    #[error("storage: {0}")]
    Io(String),
}

/// A database name: it names a directory, so it is kept to a safe alphabet.
pub fn check_database_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "{name:?} is not a database name (1 to 64 of A-Z, a-z, 0-9, '_', '-')"
        )))
    }
}

/// One table: its schema, its persisted files (disjoint in time after each snapshot),
/// the rows being persisted, and the rows written since.
#[derive(Debug, Default)]
struct Table {
    schema: TableSchema,
    files: Vec<Arc<ParquetFile>>,
    frozen: Option<Layer>,
    buffer: Buffer,
}

impl Table {
    fn layers(&self) -> Vec<Layer> {
        let mut layers: Vec<Layer> = self.files.iter().cloned().map(Layer::File).collect();
        layers.extend(self.frozen.clone());
        layers.extend(self.buffer_layer());
        layers
    }

    fn buffer_layer(&self) -> Option<Layer> {
        let (min_time, max_time) = self.buffer.time_range()?;
        Some(Layer::Rows {
            batch: self.buffer.batch(&self.schema),
            min_time,
            max_time,
        })
    }
}

#[derive(Debug, Default)]
struct Database {
    tables: BTreeMap<String, Table>,
}

#[derive(Debug, Default)]
struct State {
    databases: BTreeMap<String, Database>,
    /// Rows in every buffer: past `commit::SNAPSHOT_ROWS` a snapshot starts.
    buffered_rows: usize,
}

/// The engine: cheap to clone, shared by the HTTP API, Flight and the plugins' API.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: RwLock<State>,
    committer: commit::Committer,
    queries: query::Queries,
    max_tables: usize,
}

impl Db {
    /// Opens the data in `dir`: the snapshot's Parquet files, then the log replayed on
    /// top. The log's torn tail (a crash mid-write: never acknowledged) is dropped with
    /// a warning naming the file and offset.
    pub fn open(dir: &Path, options: Options) -> Result<Self, String> {
        persist::private_dir(dir)?;
        let manifest = persist::load_manifest(dir)?;
        persist::remove_orphans(dir, &manifest);
        let mut state = State::default();
        for entry in &manifest.files {
            let path = persist::database_dir(dir, &entry.database).join(&entry.file);
            let file_schema = persist::schema_of(&path)?;
            let table = state
                .databases
                .entry(entry.database.clone())
                .or_default()
                .tables
                .entry(entry.table.clone())
                .or_default();
            for field in file_schema.fields() {
                if field.name() == schema::TIME {
                    continue;
                }
                if let Some(kind) = Kind::from_data_type(field.data_type()) {
                    table
                        .schema
                        .columns
                        .entry(field.name().clone())
                        .or_insert(kind);
                }
            }
            table.files.push(Arc::new(ParquetFile {
                path,
                min_time: entry.min_time,
                max_time: entry.max_time,
                rows: entry.rows,
                obsolete: false.into(),
            }));
        }
        for db in state.databases.values_mut() {
            for table in db.tables.values_mut() {
                table.files.sort_by_key(|f| f.min_time);
            }
        }
        let (committer, replayed) =
            commit::Committer::start(dir, manifest, &mut state, options.snapshot_rows)?;
        tracing::info!(
            "storage: {} databases, {} Parquet files, {} log records replayed",
            state.databases.len(),
            state
                .databases
                .values()
                .flat_map(|d| d.tables.values())
                .map(|t| t.files.len())
                .sum::<usize>(),
            replayed
        );
        let db = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                state: RwLock::new(state),
                committer,
                queries: query::Queries::new(options.query)?,
                max_tables: options.max_tables,
            }),
        };
        db.inner.committer.attach(Arc::downgrade(&db.inner));
        Ok(db)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether `name` holds data or was written to.
    pub fn exists(&self, name: &str) -> bool {
        self.read_state().databases.contains_key(name)
    }

    /// The databases, by name.
    pub fn databases(&self) -> Vec<String> {
        self.read_state().databases.keys().cloned().collect()
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `points` in database `name`, all or nothing, `now_ns` for points without a
    /// timestamp; answered once they are in the log (flushed to disk unless `sync` is
    /// false). Returns them as stored, timestamps filled in.
    pub async fn write(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
        sync: bool,
    ) -> Result<Vec<Point>, StoreError> {
        self.write_batch(name, points, now_ns, false, sync)
            .await
            .map(|w| w.points)
    }

    /// As `write`, but a point the table refuses (a field of another type, say) is left
    /// out and listed, and the rest is stored.
    pub async fn write_partial(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
        sync: bool,
    ) -> Result<Written, StoreError> {
        self.write_batch(name, points, now_ns, true, sync).await
    }

    async fn write_batch(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
        partial: bool,
        sync: bool,
    ) -> Result<Written, StoreError> {
        check_database_name(name)?;
        let written = self.admit(name, points, now_ns, partial)?;
        if written.points.is_empty() {
            return Ok(written);
        }
        self.inner
            .committer
            .commit(name, &written.points, sync)
            .await?;
        Ok(written)
    }

    /// Checks each point against its table's schema and bounds, and adds the columns and
    /// tables the accepted points need, so that a concurrent write sees them.
    fn admit(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
        partial: bool,
    ) -> Result<Written, StoreError> {
        let mut state = self.write_state();
        let existed = state.databases.contains_key(name);
        if !existed && state.databases.len() >= MAX_DATABASES {
            return Err(StoreError::Database(format!(
                "db: tsdb holds {MAX_DATABASES} databases already; {name:?} would be one more"
            )));
        }
        let mut database = state.databases.remove(name).unwrap_or_default();
        // The cap on new tables refuses the whole write, even one that may keep part of
        // its batch: which 1,000 of 4,000 tables to keep would be arbitrary.
        if let Err(e) = check_new_tables(&database, &points) {
            if existed || !database.tables.is_empty() {
                state.databases.insert(name.to_owned(), database);
            }
            return Err(e);
        }
        // All or nothing: the schemas as they were before the batch, to put back.
        let mut before: HashMap<String, Option<TableSchema>> = HashMap::new();
        let mut written = Written::default();
        let mut new_tables = 0usize;
        let mut refusal = None;
        for (index, mut point) in points.into_iter().enumerate() {
            point.time_ns.get_or_insert(now_ns);
            if !partial && !before.contains_key(&point.measurement) {
                let was = database
                    .tables
                    .get(&point.measurement)
                    .map(|t| t.schema.clone());
                before.insert(point.measurement.clone(), was);
            }
            match admit_point(
                &mut database,
                &point,
                &mut new_tables,
                self.inner.max_tables,
            ) {
                Ok(()) => written.points.push(point),
                Err(what) if partial => written.refused.push((index, what)),
                Err(what) => {
                    refusal = Some(StoreError::Point { index, what });
                    break;
                }
            }
        }
        if refusal.is_some() {
            for (table, schema) in before {
                match schema {
                    Some(schema) => {
                        if let Some(t) = database.tables.get_mut(&table) {
                            t.schema = schema;
                        }
                    }
                    None => {
                        database.tables.remove(&table);
                    }
                }
            }
        }
        if existed || !database.tables.is_empty() {
            state.databases.insert(name.to_owned(), database);
        }
        match refusal {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Makes an empty database `name` (the configure API's create), if it is not there.
    pub fn create_database(&self, name: &str) -> Result<(), StoreError> {
        check_database_name(name)?;
        let mut state = self.write_state();
        if !state.databases.contains_key(name) && state.databases.len() >= MAX_DATABASES {
            return Err(StoreError::Database(format!(
                "db: tsdb holds {MAX_DATABASES} databases already; {name:?} would be one more"
            )));
        }
        state.databases.entry(name.to_owned()).or_default();
        Ok(())
    }

    /// Runs one read-only SQL statement in database `name`.
    pub async fn query(
        &self,
        name: &str,
        sql: &str,
        params: Params,
    ) -> Result<QueryOutput, StoreError> {
        query::run(self, name, sql, params).await
    }

    /// Says which databases exist without data (queried, they hold no tables).
    pub fn set_known_databases(&self, known: KnownDatabases) {
        self.inner.queries.set_known_databases(known);
    }

    /// Sets what `system.*` shows.
    pub fn set_system_tables(&self, tables: SystemTables) {
        self.inner.queries.set_system_tables(tables);
    }

    /// The tables of `name` as queries see them now.
    fn views(&self, name: &str) -> Option<Vec<table::TableView>> {
        let state = self.read_state();
        let database = state.databases.get(name)?;
        Some(
            database
                .tables
                .iter()
                .map(|(table_name, t)| table::TableView {
                    name: table_name.clone(),
                    schema: t.schema.clone(),
                    layers: t.layers(),
                })
                .collect(),
        )
    }

    /// Deletes database `name` and its data (`table`: only that table), for good: a
    /// crash after the answer cannot bring it back. Whether it held data.
    pub async fn drop_data(&self, name: &str, table: Option<&str>) -> Result<bool, StoreError> {
        check_database_name(name)?;
        self.inner.committer.drop(name, table).await
    }

    /// Whether database `name` has table `table`.
    pub fn has_table(&self, name: &str, table: &str) -> bool {
        self.read_state()
            .databases
            .get(name)
            .is_some_and(|d| d.tables.contains_key(table))
    }

    /// Persists every buffer now (at shutdown, say), and waits for it.
    pub async fn snapshot(&self) -> Result<(), StoreError> {
        self.inner.committer.snapshot_now().await
    }
}

/// Refuses a batch naming more new tables than one write may create, before any is made.
fn check_new_tables(database: &Database, points: &[Point]) -> Result<(), StoreError> {
    let mut new = std::collections::HashSet::new();
    for (index, point) in points.iter().enumerate() {
        if !database.tables.contains_key(&point.measurement)
            && new.insert(point.measurement.as_str())
            && new.len() > MAX_NEW_TABLES_PER_WRITE
        {
            return Err(StoreError::Point {
                index,
                what: format!(
                    "table {:?} would be one more than the {MAX_NEW_TABLES_PER_WRITE} new tables one write may create (MAX_NEW_TABLES_PER_WRITE); nothing of this write was applied",
                    point.measurement
                ),
            });
        }
    }
    Ok(())
}

/// Checks one point and, if it is accepted, adds the table and columns it needs to
/// `database`'s schemas; a refused point changes nothing.
fn admit_point(
    database: &mut Database,
    point: &Point,
    new_tables: &mut usize,
    max_tables: usize,
) -> Result<(), String> {
    let name = &point.measurement;
    let empty = TableSchema::default();
    let (schema, is_new) = match database.tables.get(name) {
        Some(t) => (&t.schema, false),
        None => (&empty, true),
    };
    if is_new {
        if database.tables.len() >= max_tables {
            return Err(format!(
                "table {name:?} would be one more than the {max_tables} tables a database may hold (max_tables)"
            ));
        }
        if *new_tables >= MAX_NEW_TABLES_PER_WRITE {
            return Err(format!(
                "table {name:?} would be one more than the {MAX_NEW_TABLES_PER_WRITE} new tables one write may create"
            ));
        }
    }
    let wanted: Vec<(&String, Kind)> = point
        .tags
        .keys()
        .map(|k| (k, Kind::Tag))
        .chain(point.fields.iter().map(|(k, v)| (k, Kind::of(v))))
        .collect();
    let mut added = 0usize;
    for (column, kind) in &wanted {
        if schema.check(name, column, *kind)? {
            added += 1;
        }
    }
    if schema.columns.len() + added > MAX_COLUMNS {
        return Err(format!(
            "table {name:?} would have {} columns, more than the {MAX_COLUMNS} a table may hold",
            schema.columns.len() + added
        ));
    }
    if is_new {
        *new_tables += 1;
    }
    let table = database.tables.entry(name.clone()).or_default();
    for (column, kind) in wanted {
        table.schema.columns.entry(column.clone()).or_insert(kind);
    }
    Ok(())
}
