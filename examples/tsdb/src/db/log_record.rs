//! The write-ahead log's records: a write batch (a database's points by table) or a
//! drop (a database, or one table of it, deleted), and how replay applies each.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::table::ParquetFile;
use super::{State, Table, admit_point};
use crate::api;
use crate::line_protocol::{FieldValue, Point};

/// One log record. Its writes are laid out as the plugin API's `WriteBatch` (database
/// 3, tables 4), which is what the log held before drops existed: those logs replay
/// unchanged.
#[derive(Clone, PartialEq, prost::Message)]
struct LogRecord {
    #[prost(string, tag = "3")]
    database: String,
    #[prost(message, repeated, tag = "4")]
    tables: Vec<api::TableBatch>,
    /// The whole database was deleted here.
    #[prost(bool, tag = "100")]
    drop_database: bool,
    /// This table of the database was deleted here.
    #[prost(string, tag = "101")]
    drop_table: String,
}

/// A write batch as the log keeps it.
pub fn encode(database: &str, points: &[Point]) -> Vec<u8> {
    let mut tables: BTreeMap<&str, Vec<api::Point>> = BTreeMap::new();
    for p in points {
        let fields = p
            .fields
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    FieldValue::Float(f) => api::value::Kind::Float(*f),
                    FieldValue::Integer(i) => api::value::Kind::Integer(*i),
                    FieldValue::Unsigned(u) => api::value::Kind::Unsigned(*u),
                    FieldValue::Text(t) => api::value::Kind::Text(t.clone()),
                    FieldValue::Boolean(b) => api::value::Kind::Boolean(*b),
                };
                (k.clone(), api::Value { kind: Some(kind) })
            })
            .collect();
        tables.entry(&p.measurement).or_default().push(api::Point {
            tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            fields,
            time_ns: p.time_ns.unwrap_or(0),
        });
    }
    LogRecord {
        database: database.to_owned(),
        tables: tables
            .into_iter()
            .map(|(table, points)| api::TableBatch {
                table: table.to_owned(),
                points,
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A database, or one table of it, dropped: replay forgets what came before it.
pub fn encode_drop(database: &str, table: Option<&str>) -> Vec<u8> {
    LogRecord {
        database: database.to_owned(),
        drop_database: table.is_none(),
        drop_table: table.unwrap_or_default().to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A logged batch back as points.
fn decode(batch: LogRecord) -> Vec<Point> {
    let mut points = Vec::new();
    for table in batch.tables {
        for p in table.points {
            let fields = p
                .fields
                .into_iter()
                .filter_map(|(k, v)| {
                    let value = match v.kind? {
                        api::value::Kind::Float(f) => FieldValue::Float(f),
                        api::value::Kind::Integer(i) => FieldValue::Integer(i),
                        api::value::Kind::Unsigned(u) => FieldValue::Unsigned(u),
                        api::value::Kind::Text(t) => FieldValue::Text(t),
                        api::value::Kind::Boolean(b) => FieldValue::Boolean(b),
                    };
                    Some((k, value))
                })
                .collect();
            points.push(Point {
                measurement: table.table.clone(),
                tags: p.tags.into_iter().collect(),
                fields,
                time_ns: Some(p.time_ns),
                line: 0,
            });
        }
    }
    points
}

/// Applies a replayed record: a batch is admitted again, since after a restart the
/// schemas come from the files alone.
pub fn replay(state: &mut State, record: &[u8]) -> Result<(), prost::DecodeError> {
    let batch = LogRecord::decode(record)?;
    if batch.drop_database || !batch.drop_table.is_empty() {
        // The files stay on disk until a snapshot's manifest no longer names them
        // (then the next start removes them): the manifest on disk still does.
        let table = (!batch.drop_table.is_empty()).then_some(batch.drop_table.as_str());
        drop_from(state, &batch.database, table);
        return Ok(());
    }
    let database_name = batch.database.clone();
    let points = decode(batch);
    let database = state.databases.entry(database_name.clone()).or_default();
    let mut admitted = Vec::with_capacity(points.len());
    let mut new_tables = 0;
    for point in points {
        // Acknowledged once, so kept whatever `max_tables` says now.
        match admit_point(database, &point, &mut new_tables, usize::MAX) {
            Ok(()) => admitted.push(point),
            Err(e) => tracing::warn!("log replay, database {database_name}: {e}; point left out"),
        }
    }
    apply(state, &database_name, &admitted);
    Ok(())
}

/// Removes a database, or one of its tables, from `state`: its Parquet files (to be
/// retired by the caller, once the manifest no longer names them) and whether it was
/// there.
pub fn drop_from(
    state: &mut State,
    database: &str,
    table: Option<&str>,
) -> (bool, Vec<Arc<ParquetFile>>) {
    let tables: Vec<Table> = match table {
        None => match state.databases.remove(database) {
            Some(d) => d.tables.into_values().collect(),
            None => return (false, Vec::new()),
        },
        Some(name) => match state
            .databases
            .get_mut(database)
            .and_then(|d| d.tables.remove(name))
        {
            Some(t) => vec![t],
            None => return (false, Vec::new()),
        },
    };
    let mut files = Vec::new();
    for t in tables {
        state.buffered_rows = state.buffered_rows.saturating_sub(t.buffer.rows());
        files.extend(t.files);
    }
    (true, files)
}

/// Puts admitted points into their tables' buffers.
pub fn apply(state: &mut State, database: &str, points: &[Point]) {
    let database = state.databases.entry(database.to_owned()).or_default();
    let mut added = 0usize;
    for p in points {
        let table = database.tables.entry(p.measurement.clone()).or_default();
        let before = table.buffer.rows();
        table.buffer.upsert(
            p.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            p.fields.iter().map(|(k, v)| (k.as_str(), v)),
            p.time_ns.unwrap_or(0),
            &table.schema,
        );
        added += table.buffer.rows() - before;
    }
    state.buffered_rows += added;
}
