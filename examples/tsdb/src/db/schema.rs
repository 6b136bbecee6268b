//! A table's columns as InfluxDB 3 lays them out: `time` as Timestamp(Nanosecond), each
//! tag a Dictionary(Int32, Utf8), each field Float64, Int64, UInt64, Boolean or Utf8.
//! A column's kind is fixed by its first write; the schema only grows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::line_protocol::FieldValue;

/// The timestamp's column.
pub const TIME: &str = "time";

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tag,
    Float,
    Integer,
    Unsigned,
    Text,
    Boolean,
}

impl Kind {
    pub fn of(value: &FieldValue) -> Self {
        match value {
            FieldValue::Float(_) => Self::Float,
            FieldValue::Integer(_) => Self::Integer,
            FieldValue::Unsigned(_) => Self::Unsigned,
            FieldValue::Text(_) => Self::Text,
            FieldValue::Boolean(_) => Self::Boolean,
        }
    }

    /// As line protocol's documentation names the types, for errors a writer reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Float => "float",
            Self::Integer => "integer",
            Self::Unsigned => "unsigned integer",
            Self::Text => "string",
            Self::Boolean => "boolean",
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            Self::Tag => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            Self::Float => DataType::Float64,
            Self::Integer => DataType::Int64,
            Self::Unsigned => DataType::UInt64,
            Self::Text => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
        }
    }

    /// The kind an Arrow column of a persisted file holds.
    pub fn from_data_type(data_type: &DataType) -> Option<Self> {
        [
            Self::Tag,
            Self::Float,
            Self::Integer,
            Self::Unsigned,
            Self::Text,
            Self::Boolean,
        ]
        .into_iter()
        .find(|k| &k.data_type() == data_type)
    }
}

pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

/// A table's columns other than `time`, by name (Arrow's order is by name, as
/// InfluxDB 3 orders `SELECT *`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSchema {
    pub columns: BTreeMap<String, Kind>,
}

impl TableSchema {
    pub fn arrow(&self) -> SchemaRef {
        let mut fields: Vec<(&str, Field)> = self
            .columns
            .iter()
            .map(|(name, kind)| (name.as_str(), Field::new(name, kind.data_type(), true)))
            .collect();
        fields.push((TIME, Field::new(TIME, time_type(), false)));
        fields.sort_by(|a, b| a.0.cmp(b.0));
        Arc::new(Schema::new(
            fields.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
        ))
    }

    /// The tag columns, by name.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|(_, k)| **k == Kind::Tag)
            .map(|(n, _)| n.as_str())
    }

    /// What adding `column` of `kind` would do: `Ok(true)` when it is new, `Ok(false)` when
    /// it is there already, `Err` naming both kinds when it is there as another kind.
    pub fn check(&self, table: &str, column: &str, kind: Kind) -> Result<bool, String> {
        if column == TIME {
            return Err(format!(
                "{table}: \"time\" is the timestamp's column; name the tag or field otherwise"
            ));
        }
        match self.columns.get(column) {
            None => Ok(true),
            Some(have) if *have == kind => Ok(false),
            Some(have) => Err(format!(
                "column {table}.{column} is {} column; this line gives it {}",
                with_article(have.name()),
                with_article(kind.name())
            )),
        }
    }
}

/// "a float", "an integer".
fn with_article(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}
