//! A query's answer cell by cell, as the HTTP formats and the plugin API carry it: Arrow's
//! many types folded into the few a client sees (every timestamp in nanoseconds, tags
//! as their text, anything else as Arrow prints it).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::QueryOutput;

/// One value of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Unsigned(u64),
    Real(f64),
    Text(String),
    Boolean(bool),
    /// Nanoseconds since the epoch, UTC.
    Time(i64),
}

/// An answer as names and rows of cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// How one column's values become cells.
enum Reader {
    Integer(ArrayRef),
    Unsigned(ArrayRef),
    Real(ArrayRef),
    Boolean(ArrayRef),
    Text(ArrayRef),
    Time(ArrayRef),
    Printed(ArrayRef),
}

fn reader(column: &ArrayRef) -> Reader {
    let cast = |to: &DataType| arrow::compute::cast(column, to).ok();
    let printed = || Reader::Printed(column.clone());
    match column.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            cast(&DataType::Int64).map_or_else(printed, Reader::Integer)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            cast(&DataType::UInt64).map_or_else(printed, Reader::Unsigned)
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            cast(&DataType::Float64).map_or_else(printed, Reader::Real)
        }
        DataType::Boolean => Reader::Boolean(column.clone()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            cast(&DataType::Utf8).map_or_else(printed, Reader::Text)
        }
        DataType::Timestamp(_, _) => cast(&DataType::Timestamp(TimeUnit::Nanosecond, None))
            .map_or_else(printed, Reader::Time),
        DataType::Dictionary(_, value) => match cast(value) {
            Some(values) => reader(&values),
            None => printed(),
        },
        _ => printed(),
    }
}

fn cell(reader: &Reader, row: usize) -> Cell {
    let array = match reader {
        Reader::Integer(a)
        | Reader::Unsigned(a)
        | Reader::Real(a)
        | Reader::Boolean(a)
        | Reader::Text(a)
        | Reader::Time(a)
        | Reader::Printed(a) => a,
    };
    if array.is_null(row) {
        return Cell::Null;
    }
    match reader {
        Reader::Integer(a) => Cell::Integer(a.as_primitive::<Int64Type>().value(row)),
        Reader::Unsigned(a) => Cell::Unsigned(a.as_primitive::<UInt64Type>().value(row)),
        Reader::Real(a) => Cell::Real(a.as_primitive::<Float64Type>().value(row)),
        Reader::Boolean(a) => Cell::Boolean(a.as_boolean().value(row)),
        Reader::Text(a) => Cell::Text(a.as_string::<i32>().value(row).to_owned()),
        Reader::Time(a) => Cell::Time(a.as_primitive::<TimestampNanosecondType>().value(row)),
        Reader::Printed(a) => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(a.as_ref(), &options) {
                Ok(f) => Cell::Text(f.value(row).to_string()),
                Err(_) => Cell::Null,
            }
        }
    }
}

/// Every row of `output`.
pub fn rows(output: &QueryOutput) -> Rows {
    let names = output
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = Vec::with_capacity(output.rows());
    for batch in &output.batches {
        let readers: Vec<Reader> = batch.columns().iter().map(reader).collect();
        for row in 0..batch.num_rows() {
            rows.push(readers.iter().map(|r| cell(r, row)).collect());
        }
    }
    Rows { names, rows }
}
