//! The rows written since the last snapshot, in memory: one row per series and time
//! (a point with the tags and time of a stored row replaces the fields it names: last
//! write wins), turned into one Arrow batch for queries and snapshots.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::Int32Type;

use super::schema::{Kind, TIME, TableSchema};
use crate::line_protocol::FieldValue;

/// One column's values, `None` where a row has none.
#[derive(Debug)]
enum Column {
    Tag {
        keys: Vec<Option<i32>>,
        values: Vec<Arc<str>>,
        ids: HashMap<Arc<str>, i32>,
    },
    Float(Vec<Option<f64>>),
    Integer(Vec<Option<i64>>),
    Unsigned(Vec<Option<u64>>),
    Text(Vec<Option<String>>),
    Boolean(Vec<Option<bool>>),
}

impl Column {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Tag => Self::Tag {
                keys: Vec::new(),
                values: Vec::new(),
                ids: HashMap::new(),
            },
            Kind::Float => Self::Float(Vec::new()),
            Kind::Integer => Self::Integer(Vec::new()),
            Kind::Unsigned => Self::Unsigned(Vec::new()),
            Kind::Text => Self::Text(Vec::new()),
            Kind::Boolean => Self::Boolean(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Tag { keys, .. } => keys.len(),
            Self::Float(v) => v.len(),
            Self::Integer(v) => v.len(),
            Self::Unsigned(v) => v.len(),
            Self::Text(v) => v.len(),
            Self::Boolean(v) => v.len(),
        }
    }

    /// Pads with nulls to `rows` rows.
    fn pad(&mut self, rows: usize) {
        match self {
            Self::Tag { keys, .. } => keys.resize(rows, None),
            Self::Float(v) => v.resize(rows, None),
            Self::Integer(v) => v.resize(rows, None),
            Self::Unsigned(v) => v.resize(rows, None),
            Self::Text(v) => v.resize(rows, None),
            Self::Boolean(v) => v.resize(rows, None),
        }
    }

    fn set_tag(&mut self, row: usize, value: &str) {
        if self.len() <= row {
            self.pad(row + 1);
        }
        if let Self::Tag { keys, values, ids } = self {
            let id = match ids.get(value) {
                Some(id) => *id,
                None => {
                    // At most one value per row, and a buffer is snapshotted long before
                    // 2^31 rows; saturating keeps a bug from wrapping into another value.
                    let id = i32::try_from(values.len()).unwrap_or(i32::MAX);
                    let value: Arc<str> = value.into();
                    values.push(value.clone());
                    ids.insert(value, id);
                    id
                }
            };
            keys[row] = Some(id);
        }
    }

    /// Sets a field; the kind was checked against the schema before the write was
    /// accepted, so a mismatch cannot happen and would be ignored.
    fn set(&mut self, row: usize, value: &FieldValue) {
        if self.len() <= row {
            self.pad(row + 1);
        }
        match (self, value) {
            (Self::Float(v), FieldValue::Float(x)) => v[row] = Some(*x),
            (Self::Integer(v), FieldValue::Integer(x)) => v[row] = Some(*x),
            (Self::Unsigned(v), FieldValue::Unsigned(x)) => v[row] = Some(*x),
            (Self::Text(v), FieldValue::Text(x)) => v[row] = Some(x.clone()),
            (Self::Boolean(v), FieldValue::Boolean(x)) => v[row] = Some(*x),
            _ => {}
        }
    }

    fn array(&self, rows: usize) -> ArrayRef {
        let padded = |n: usize| rows.saturating_sub(n);
        match self {
            Self::Tag { keys, values, .. } => {
                let keys: Int32Array = keys
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(None, padded(keys.len())))
                    .collect();
                let values = StringArray::from_iter_values(values.iter().map(|v| &**v));
                match DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)) {
                    Ok(a) => Arc::new(a),
                    // Every key indexes `values` by construction.
                    Err(_) => arrow::array::new_null_array(&Kind::Tag.data_type(), rows),
                }
            }
            Self::Float(v) => Arc::new(Float64Array::from_iter(
                v.iter()
                    .copied()
                    .chain(std::iter::repeat_n(None, padded(v.len()))),
            )),
            Self::Integer(v) => Arc::new(Int64Array::from_iter(
                v.iter()
                    .copied()
                    .chain(std::iter::repeat_n(None, padded(v.len()))),
            )),
            Self::Unsigned(v) => Arc::new(UInt64Array::from_iter(
                v.iter()
                    .copied()
                    .chain(std::iter::repeat_n(None, padded(v.len()))),
            )),
            Self::Text(v) => Arc::new(StringArray::from_iter(
                v.iter()
                    .map(Option::as_deref)
                    .chain(std::iter::repeat_n(None, padded(v.len()))),
            )),
            Self::Boolean(v) => Arc::new(BooleanArray::from_iter(
                v.iter()
                    .copied()
                    .chain(std::iter::repeat_n(None, padded(v.len()))),
            )),
        }
    }
}

/// One table's rows since the last snapshot.
#[derive(Debug, Default)]
pub struct Buffer {
    series: HashMap<Box<str>, u32>,
    rows_at: HashMap<(u32, i64), u32>,
    time: Vec<i64>,
    columns: BTreeMap<String, Column>,
    min_time: i64,
    max_time: i64,
    /// The batch queries read, made again after each change.
    batch: Mutex<Option<RecordBatch>>,
}

/// A series' key: its tags, each length-prefixed so that no tag value can pose as a
/// boundary.
fn series_key<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut key = String::new();
    for (k, v) in tags {
        key.push_str(&format!("{}:{k}{}:{v}", k.len(), v.len()));
    }
    key
}

impl Buffer {
    pub fn rows(&self) -> usize {
        self.time.len()
    }

    /// The earliest and latest time held, if any row is.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (!self.time.is_empty()).then_some((self.min_time, self.max_time))
    }

    /// Stores a point whose columns the schema already holds with their kinds.
    pub fn upsert<'a>(
        &mut self,
        tags: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        fields: impl Iterator<Item = (&'a str, &'a FieldValue)>,
        time: i64,
        schema: &TableSchema,
    ) {
        let key = series_key(tags.clone());
        let next_series = u32::try_from(self.series.len()).unwrap_or(u32::MAX);
        let series = *self
            .series
            .entry(key.into_boxed_str())
            .or_insert(next_series);
        let row = match self.rows_at.get(&(series, time)) {
            Some(row) => *row as usize,
            None => {
                let row = self.time.len();
                if row == 0 {
                    (self.min_time, self.max_time) = (time, time);
                } else {
                    self.min_time = self.min_time.min(time);
                    self.max_time = self.max_time.max(time);
                }
                self.time.push(time);
                self.rows_at
                    .insert((series, time), u32::try_from(row).unwrap_or(u32::MAX));
                for (name, value) in tags {
                    self.column(name, Kind::Tag).set_tag(row, value);
                }
                row
            }
        };
        for (name, value) in fields {
            let kind = schema.columns.get(name).copied().unwrap_or(Kind::of(value));
            self.column(name, kind).set(row, value);
        }
        *self.batch.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Stores each row of `batch` (a persisted file's, or another buffer's) as a point
    /// with the tags and fields it holds.
    pub fn upsert_batch(&mut self, batch: &RecordBatch, schema: &TableSchema) {
        let Some(time) = batch
            .column_by_name(TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return;
        };
        let mut tags: Vec<(String, Vec<Option<String>>)> = Vec::new();
        let mut fields: Vec<(String, Vec<Option<FieldValue>>)> = Vec::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if field.name() == TIME {
                continue;
            }
            match schema.columns.get(field.name()) {
                Some(Kind::Tag) => tags.push((field.name().clone(), tag_values(column))),
                Some(kind) => fields.push((field.name().clone(), field_values(column, *kind))),
                None => {}
            }
        }
        for row in 0..batch.num_rows() {
            let row_tags = tags
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v[row].as_deref()?)));
            let row_fields = fields
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v[row].as_ref()?)));
            self.upsert(row_tags, row_fields, time.value(row), schema);
        }
    }

    fn column(&mut self, name: &str, kind: Kind) -> &mut Column {
        self.columns
            .entry(name.to_owned())
            .or_insert_with(|| Column::new(kind))
    }

    /// The rows as one batch of `schema` (columns this buffer never saw are null).
    pub fn batch(&self, schema: &TableSchema) -> RecordBatch {
        let mut cached = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let arrow_schema = schema.arrow();
        if let Some(batch) = cached.as_ref().filter(|b| b.schema() == arrow_schema) {
            return batch.clone();
        }
        let rows = self.time.len();
        let arrays: Vec<ArrayRef> = arrow_schema
            .fields()
            .iter()
            .map(|field| {
                if field.name() == TIME {
                    return Arc::new(TimestampNanosecondArray::from(self.time.clone())) as ArrayRef;
                }
                match self.columns.get(field.name()) {
                    Some(column) => column.array(rows),
                    None => arrow::array::new_null_array(field.data_type(), rows),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(arrow_schema.clone(), arrays)
            .unwrap_or_else(|_| RecordBatch::new_empty(arrow_schema));
        *cached = Some(batch.clone());
        batch
    }
}

/// A tag column's values, whatever string encoding the file used.
fn tag_values(column: &ArrayRef) -> Vec<Option<String>> {
    let as_text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
        .ok()
        .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned());
    match as_text {
        Some(text) => text.iter().map(|v| v.map(str::to_owned)).collect(),
        None => vec![None; column.len()],
    }
}

/// A field column's values as line protocol's types.
fn field_values(column: &ArrayRef, kind: Kind) -> Vec<Option<FieldValue>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    let n = column.len();
    let values: Option<Vec<Option<FieldValue>>> = match kind {
        Kind::Float => column
            .as_primitive_opt::<Float64Type>()
            .map(|a| a.iter().map(|v| v.map(FieldValue::Float)).collect()),
        Kind::Integer => column
            .as_primitive_opt::<Int64Type>()
            .map(|a| a.iter().map(|v| v.map(FieldValue::Integer)).collect()),
        Kind::Unsigned => column
            .as_primitive_opt::<UInt64Type>()
            .map(|a| a.iter().map(|v| v.map(FieldValue::Unsigned)).collect()),
        Kind::Boolean => column
            .as_boolean_opt()
            .map(|a| a.iter().map(|v| v.map(FieldValue::Boolean)).collect()),
        Kind::Text => tag_values(column)
            .into_iter()
            .map(|v| v.map(FieldValue::Text))
            .collect::<Vec<_>>()
            .into(),
        Kind::Tag => None,
    };
    values.unwrap_or_else(|| vec![None; n])
}
