//! `repeat`, `lpad` and `rpad` bounded by the bytes a query may return: each is told how
//! long its answer is, so one call could otherwise allocate gigabytes (at planning, too,
//! where a constant call is folded) before any bound on the answer sees a batch.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// The functions, bounded, to register over DataFusion's own.
pub fn bounded(max_bytes: usize) -> Vec<ScalarUDF> {
    use datafusion::functions::{string, unicode};
    [
        (string::repeat(), Size::Repeat),
        (unicode::lpad(), Size::Pad),
        (unicode::rpad(), Size::Pad),
    ]
    .into_iter()
    .map(|(inner, size)| {
        ScalarUDF::new_from_impl(Bounded {
            inner,
            size,
            max_bytes,
        })
    })
    .collect()
}

/// How a function's answer grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Size {
    /// `repeat(s, n)`: `n` times the bytes of `s`.
    Repeat,
    /// `lpad(s, n[, fill])`: `n` characters, each up to 4 bytes.
    Pad,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    size: Size,
    max_bytes: usize,
}

/// An argument's value per row, as a count: a string's bytes, an integer, 0 for NULL.
enum PerRow {
    Same(u64),
    Each(Vec<u64>),
}

fn per_row(value: &ColumnarValue, measure_string: bool) -> PerRow {
    let of_scalar = |s: &ScalarValue| -> u64 {
        match s {
            ScalarValue::Utf8(Some(t))
            | ScalarValue::LargeUtf8(Some(t))
            | ScalarValue::Utf8View(Some(t)) => t.len() as u64,
            ScalarValue::Int64(Some(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    };
    match value {
        ColumnarValue::Scalar(s) => PerRow::Same(of_scalar(s)),
        ColumnarValue::Array(a) if measure_string => {
            let lengths: Vec<u64> = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().iter().map(len).collect(),
                DataType::LargeUtf8 => a.as_string::<i64>().iter().map(len).collect(),
                DataType::Utf8View => a.as_string_view().iter().map(len).collect(),
                _ => vec![0; a.len()],
            };
            PerRow::Each(lengths)
        }
        ColumnarValue::Array(a) => match a.as_primitive_opt::<Int64Type>() {
            Some(counts) => PerRow::Each(
                counts
                    .iter()
                    .map(|n| n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
                    .collect(),
            ),
            None => PerRow::Same(0),
        },
    }
}

fn len(s: Option<&str>) -> u64 {
    s.map_or(0, |s| s.len() as u64)
}

/// The most bytes `sizes[0] × sizes[1]` summed over `rows` rows may come to.
fn product(a: &PerRow, b: &PerRow, rows: usize) -> u64 {
    match (a, b) {
        (PerRow::Same(x), PerRow::Same(y)) => x.saturating_mul(*y).saturating_mul(rows as u64),
        (PerRow::Same(x), PerRow::Each(ys)) | (PerRow::Each(ys), PerRow::Same(x)) => ys
            .iter()
            .fold(0u64, |sum, y| sum.saturating_add(x.saturating_mul(*y))),
        (PerRow::Each(xs), PerRow::Each(ys)) => xs
            .iter()
            .zip(ys)
            .fold(0u64, |sum, (x, y)| sum.saturating_add(x.saturating_mul(*y))),
    }
}

impl Bounded {
    fn answer_bytes(&self, args: &ScalarFunctionArgs) -> u64 {
        let (Some(text), Some(count)) = (args.args.first(), args.args.get(1)) else {
            return 0;
        };
        let count = per_row(count, false);
        match self.size {
            Size::Repeat => product(&per_row(text, true), &count, args.number_rows),
            Size::Pad => product(&PerRow::Same(4), &count, args.number_rows),
        }
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.answer_bytes(&args);
        if bytes > self.max_bytes as u64 {
            return Err(DataFusionError::Execution(format!(
                "{}(...) would make {bytes} bytes, more than the {} bytes a query may return (max_result_bytes)",
                self.name(),
                self.max_bytes
            )));
        }
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
