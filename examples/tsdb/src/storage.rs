//! The storage layer, kept thin: one SQLite file per database, one table per
//! measurement (`time` in nanoseconds, a text column per tag, a column per field), and a
//! table of each column's kind, so that a field written as a number and later as text
//! is refused. A write is one transaction: all of a batch, or nothing (or, asked for,
//! the good points of it). A point with the series and time of a stored one replaces
//! the fields it names, as in InfluxDB (last write wins).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::ValueRef};

use crate::catalog::MAX_DATABASES;
use crate::line_protocol::{FieldValue, Point};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tag,
    Float,
    Integer,
    Unsigned,
    Text,
    Boolean,
}

impl Kind {
    fn of(value: &FieldValue) -> Self {
        match value {
            FieldValue::Float(_) => Self::Float,
            FieldValue::Integer(_) => Self::Integer,
            FieldValue::Unsigned(_) => Self::Unsigned,
            FieldValue::Text(_) => Self::Text,
            FieldValue::Boolean(_) => Self::Boolean,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Float => "float",
            Self::Integer => "integer",
            Self::Unsigned => "unsigned",
            Self::Text => "string",
            Self::Boolean => "boolean",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Tag,
            Self::Float,
            Self::Integer,
            Self::Unsigned,
            Self::Text,
            Self::Boolean,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    fn sql_type(self) -> &'static str {
        match self {
            Self::Tag | Self::Text => "TEXT",
            Self::Float => "REAL",
            Self::Integer | Self::Unsigned | Self::Boolean => "INTEGER",
        }
    }
}

/// A value read back from a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

/// A query's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
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
    /// The statement is wrong, or not a read.
    #[error("{0}")]
    Query(String),
    /// The database name is not usable.
    #[error("{0}")]
    Database(String),
    /// SQLite failed.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Every database of one data directory.
#[derive(Clone)]
pub struct Storage {
    dir: PathBuf,
    open: Arc<Mutex<HashMap<String, Arc<Mutex<Connection>>>>>,
}

/// A database name: it names a file, so it is kept to a safe alphabet.
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

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Storage {
    /// Databases live in `dir`, one `NAME.sqlite` each, made when first written.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            open: Arc::default(),
        })
    }

    fn database(&self, name: &str, create: bool) -> Result<Arc<Mutex<Connection>>, StoreError> {
        check_database_name(name)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = open.get(name) {
            return Ok(db.clone());
        }
        let path = self.dir.join(format!("{name}.sqlite"));
        if !path.exists() {
            if !create {
                return Err(StoreError::Database(format!("no database named {name:?}")));
            }
            // Each database is a file and a connection kept open for good, so a write
            // naming a new one each time would use up the disk and the descriptors;
            // the catalog holds as many.
            if self.databases_on_disk()? >= MAX_DATABASES {
                return Err(StoreError::Database(format!(
                    "db: tsdb holds {MAX_DATABASES} databases already; {name:?} would be one more"
                )));
            }
        }
        let connection = Connection::open(&path)?;
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS _tsdb_columns (
                 table_name TEXT NOT NULL, column_name TEXT NOT NULL, kind TEXT NOT NULL,
                 PRIMARY KEY (table_name, column_name));",
        )?;
        let db = Arc::new(Mutex::new(connection));
        open.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// How many databases `dir` holds (their `NAME.sqlite` files).
    fn databases_on_disk(&self) -> Result<usize, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            StoreError::Database(format!("cannot list {}: {e}", self.dir.display()))
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "sqlite"))
            .count())
    }

    /// Stores `points` in database `name` in one transaction, with `now_ns` for points
    /// without a timestamp; returns them as stored, timestamps filled in.
    pub fn write(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
    ) -> Result<Vec<Point>, StoreError> {
        self.write_batch(name, points, now_ns, false)
            .map(|written| written.points)
    }

    /// As `write`, but a point the table refuses (a field of another type, say) is left
    /// out and listed, and the rest is stored.
    pub fn write_partial(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
    ) -> Result<Written, StoreError> {
        self.write_batch(name, points, now_ns, true)
    }

    fn write_batch(
        &self,
        name: &str,
        points: Vec<Point>,
        now_ns: i64,
        partial: bool,
    ) -> Result<Written, StoreError> {
        let db = self.database(name, true)?;
        let mut connection = db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = connection.transaction()?;
        let mut known: HashMap<String, BTreeMap<String, Kind>> = HashMap::new();
        let mut written = Written::default();
        for (index, mut point) in points.into_iter().enumerate() {
            point.time_ns.get_or_insert(now_ns);
            let columns = match known.get_mut(&point.measurement) {
                Some(columns) => columns,
                None => {
                    let columns = table_columns(&tx, &point.measurement)?;
                    if !columns.is_empty() {
                        time_index(&tx, &point.measurement)?;
                    }
                    known.entry(point.measurement.clone()).or_insert(columns)
                }
            };
            if partial {
                tx.execute_batch("SAVEPOINT point")?;
            }
            match upsert(&tx, &point, columns) {
                Ok(()) => {
                    if partial {
                        tx.execute_batch("RELEASE point")?;
                    }
                    written.points.push(point);
                }
                Err(StoreError::Point { what, .. }) if partial => {
                    tx.execute_batch("ROLLBACK TO point; RELEASE point")?;
                    // The point may have added columns before it failed; they went
                    // with the rollback, so the table is read again.
                    known.remove(&point.measurement);
                    written.refused.push((index, what));
                }
                Err(StoreError::Point { what, .. }) => {
                    return Err(StoreError::Point { index, what });
                }
                Err(other) => return Err(other),
            }
        }
        tx.commit()?;
        Ok(written)
    }

    /// Runs one read-only statement with `params` bound to `?1`, `?2`, ...; at most
    /// `max_rows` rows come back (the rest is an error, not a silent cut).
    pub fn query(
        &self,
        name: &str,
        sql: &str,
        params: Vec<Cell>,
        max_rows: usize,
    ) -> Result<Rows, StoreError> {
        self.read(name, sql, max_rows, |statement| {
            for (i, cell) in params.into_iter().enumerate() {
                statement.raw_bind_parameter(i + 1, value(cell))?;
            }
            Ok(())
        })
    }

    /// As `query`, with `params` bound by name to `$name`: each one the statement names
    /// must be given, and each one given must be named.
    pub fn query_named(
        &self,
        name: &str,
        sql: &str,
        params: Vec<(String, Cell)>,
        max_rows: usize,
    ) -> Result<Rows, StoreError> {
        self.read(name, sql, max_rows, |statement| {
            let given: HashMap<String, Cell> = params.into_iter().collect();
            for i in 1..=statement.parameter_count() {
                let wanted = statement.parameter_name(i).unwrap_or("?").to_owned();
                let Some(cell) = wanted.strip_prefix('$').and_then(|n| given.get(n)) else {
                    return Err(StoreError::Query(format!(
                        "the query uses {wanted} but params gives no value for it"
                    )));
                };
                statement.raw_bind_parameter(i, value(cell.clone()))?;
            }
            if let Some(unused) = given.keys().find(|n| {
                statement
                    .parameter_index(&format!("${n}"))
                    .ok()
                    .flatten()
                    .is_none()
            }) {
                return Err(StoreError::Query(format!(
                    "params gives {unused:?} but the query has no ${unused}"
                )));
            }
            Ok(())
        })
    }

    fn read(
        &self,
        name: &str,
        sql: &str,
        max_rows: usize,
        bind: impl FnOnce(&mut rusqlite::Statement<'_>) -> Result<(), StoreError>,
    ) -> Result<Rows, StoreError> {
        let db = self.database(name, false)?;
        let connection = db.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = connection
            .prepare(sql)
            .map_err(|e| StoreError::Query(format!("the statement does not compile: {e}")))?;
        if !statement.readonly() {
            return Err(StoreError::Query(
                "a query may only read; write with line protocol".into(),
            ));
        }
        let names: Vec<String> = statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        bind(&mut statement)?;
        let mut rows = statement.raw_query();
        let mut out = Rows {
            names: names.clone(),
            rows: Vec::new(),
        };
        while let Some(row) = rows.next().map_err(|e| StoreError::Query(e.to_string()))? {
            if out.rows.len() == max_rows {
                return Err(StoreError::Query(format!(
                    "the query returns more than {max_rows} rows; narrow it (LIMIT, WHERE time > ...)"
                )));
            }
            let mut cells = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Integer(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.rows.push(cells);
        }
        Ok(out)
    }
}

fn value(cell: Cell) -> rusqlite::types::Value {
    match cell {
        Cell::Null => rusqlite::types::Value::Null,
        Cell::Integer(i) => rusqlite::types::Value::Integer(i),
        Cell::Real(r) => rusqlite::types::Value::Real(r),
        Cell::Text(t) => rusqlite::types::Value::Text(t),
    }
}

/// The index that finds a series' point at a time, for last write wins.
fn time_index(tx: &rusqlite::Transaction<'_>, table: &str) -> Result<(), StoreError> {
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (time)",
        quoted(&format!("_tsdb_time_{table}")),
        quoted(table)
    ))?;
    Ok(())
}

/// The kinds of a table's columns, as recorded.
fn table_columns(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
) -> Result<BTreeMap<String, Kind>, StoreError> {
    let mut statement =
        tx.prepare("SELECT column_name, kind FROM _tsdb_columns WHERE table_name = ?1")?;
    let rows = statement.query_map([table], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut columns = BTreeMap::new();
    for row in rows {
        let (name, kind) = row?;
        if let Some(kind) = Kind::from_name(&kind) {
            columns.insert(name, kind);
        }
    }
    Ok(columns)
}

/// Stores `point`: its fields replace those of the stored point of the same series and
/// time (a NULL tag is an absent one, so `IS` compares them), or it is a new row.
fn upsert(
    tx: &rusqlite::Transaction<'_>,
    point: &Point,
    columns: &mut BTreeMap<String, Kind>,
) -> Result<(), StoreError> {
    let table = &point.measurement;
    if table.starts_with("_tsdb") || table.starts_with("sqlite_") {
        return Err(StoreError::Point {
            index: 0,
            what: format!("the measurement name {table:?} is reserved"),
        });
    }
    if columns.is_empty() {
        let exists: Option<String> = tx
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            tx.execute_batch(&format!(
                "CREATE TABLE {} (time INTEGER NOT NULL)",
                quoted(table)
            ))?;
            time_index(tx, table)?;
        }
    }
    let wanted = point
        .tags
        .keys()
        .map(|k| (k, Kind::Tag))
        .chain(point.fields.iter().map(|(k, v)| (k, Kind::of(v))));
    for (column, kind) in wanted {
        if column == "time" {
            return Err(StoreError::Point {
                index: 0,
                what: "\"time\" is the timestamp's column; name the tag or field otherwise".into(),
            });
        }
        match columns.get(column) {
            Some(have) if *have == kind => {}
            Some(have) => {
                return Err(StoreError::Point {
                    index: 0,
                    what: format!(
                        "{table}.{column} is a {} column; this point gives it a {}",
                        have.name(),
                        kind.name()
                    ),
                });
            }
            None => {
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quoted(table),
                    quoted(column),
                    kind.sql_type()
                ))?;
                tx.execute(
                    "INSERT INTO _tsdb_columns (table_name, column_name, kind) VALUES (?1, ?2, ?3)",
                    [table.as_str(), column.as_str(), kind.name()],
                )?;
                columns.insert(column.clone(), kind);
            }
        }
    }
    let time = point.time_ns.unwrap_or(0);
    let mut fields: Vec<(String, rusqlite::types::Value)> = Vec::with_capacity(point.fields.len());
    for (k, v) in &point.fields {
        fields.push((
            quoted(k),
            match v {
                FieldValue::Float(f) => (*f).into(),
                FieldValue::Integer(i) => (*i).into(),
                FieldValue::Unsigned(u) => i64::try_from(*u)
                    .map_err(|_| StoreError::Point {
                        index: 0,
                        what: format!("{u}u is too large to store (at most {})", i64::MAX),
                    })?
                    .into(),
                FieldValue::Text(t) => t.clone().into(),
                FieldValue::Boolean(b) => i64::from(*b).into(),
            },
        ));
    }
    let tags: Vec<(&String, rusqlite::types::Value)> = columns
        .iter()
        .filter(|(_, kind)| **kind == Kind::Tag)
        .map(|(name, _)| {
            let value = point
                .tags
                .get(name)
                .map_or(rusqlite::types::Value::Null, |v| v.clone().into());
            (name, value)
        })
        .collect();
    let set: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{name} = ?{}", i + 1))
        .collect();
    let mut matches = vec![format!("time = ?{}", fields.len() + 1)];
    matches.extend(
        tags.iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{} IS ?{}", quoted(name), fields.len() + 2 + i)),
    );
    let mut values: Vec<rusqlite::types::Value> = fields.iter().map(|(_, v)| v.clone()).collect();
    values.push(time.into());
    values.extend(tags.iter().map(|(_, v)| v.clone()));
    // Cached: a batch stores many points of the same shape.
    let replaced = tx
        .prepare_cached(&format!(
            "UPDATE {} SET {} WHERE {}",
            quoted(table),
            set.join(", "),
            matches.join(" AND ")
        ))?
        .execute(params_from_iter(values))?;
    if replaced > 0 {
        return Ok(());
    }
    let mut names = vec!["time".to_owned()];
    let mut values: Vec<rusqlite::types::Value> = vec![time.into()];
    for (k, v) in &point.tags {
        names.push(quoted(k));
        values.push(v.clone().into());
    }
    for (name, value) in fields {
        names.push(name);
        values.push(value);
    }
    let marks: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
    tx.prepare_cached(&format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quoted(table),
        names.join(", "),
        marks.join(", ")
    ))?
    .execute(params_from_iter(values))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{Precision, parse};

    #[test]
    fn a_write_past_the_most_databases_is_refused_naming_db() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // Files stand for the databases: opening a thousand would only be slower.
        for i in 0..MAX_DATABASES {
            std::fs::write(dir.path().join(format!("db{i}.sqlite")), "").expect("write");
        }
        let storage = Storage::new(dir.path()).expect("storage");
        let points = || parse("cpu value=1 1", Precision::Seconds).expect("a point");
        let err = storage
            .write("one_more", points(), 0)
            .expect_err("one database too many");
        assert!(err.to_string().starts_with("db: "), "{err}");
        assert!(!dir.path().join("one_more.sqlite").exists());
        storage
            .write("db7", points(), 0)
            .expect("a database that exists is written");
    }
}
