//! One table as queries see it: the Parquet files of past snapshots, the rows being
//! persisted, and the rows written since, as one DataFusion table. Layers whose times
//! are disjoint cannot hold the same row and are read as they are; where a newer layer's
//! times overlap an older one's (a late write), the overlapping layers are merged first,
//! so that the newest value of each field wins, as it does on write.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::buffer::Buffer;
use super::persist;
use super::schema::TableSchema;

/// A persisted Parquet file of one table. Once a snapshot has replaced it, it is marked
/// obsolete and removed when the last query reading it lets go.
#[derive(Debug)]
pub struct ParquetFile {
    pub path: PathBuf,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub obsolete: AtomicBool,
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// One layer of a table, oldest first.
#[derive(Debug, Clone)]
pub enum Layer {
    File(Arc<ParquetFile>),
    Rows {
        batch: RecordBatch,
        min_time: i64,
        max_time: i64,
    },
}

impl Layer {
    fn range(&self) -> (i64, i64) {
        match self {
            Self::File(f) => (f.min_time, f.max_time),
            Self::Rows {
                min_time, max_time, ..
            } => (*min_time, *max_time),
        }
    }
}

/// Which layers share times with another: only they can hold the same row.
pub fn overlapping(layers: &[Layer]) -> Vec<bool> {
    let mut marked = vec![false; layers.len()];
    for (i, a) in layers.iter().enumerate() {
        for (j, b) in layers.iter().enumerate().skip(i + 1) {
            let ((a0, a1), (b0, b1)) = (a.range(), b.range());
            if a0 <= b1 && b0 <= a1 {
                marked[i] = true;
                marked[j] = true;
            }
        }
    }
    marked
}

/// Merges `layers` (oldest first) into one buffer: each row's fields from the newest
/// layer that has them.
pub fn merge(layers: &[Layer], schema: &TableSchema) -> Result<Buffer, String> {
    let mut merged = Buffer::default();
    for layer in layers {
        match layer {
            Layer::File(f) => {
                for batch in persist::read(&f.path)? {
                    merged.upsert_batch(&batch, schema);
                }
            }
            Layer::Rows { batch, .. } => merged.upsert_batch(batch, schema),
        }
    }
    Ok(merged)
}

/// A table at the moment a query began.
#[derive(Debug)]
pub struct TableView {
    pub name: String,
    pub schema: TableSchema,
    pub layers: Vec<Layer>,
}

#[tonic::async_trait]
impl TableProvider for TableView {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema.arrow();
        let overlaps = overlapping(&self.layers);
        let mut files = Vec::new();
        let mut batches = Vec::new();
        let mut to_merge = Vec::new();
        for (layer, overlaps) in self.layers.iter().zip(overlaps) {
            match layer {
                _ if overlaps => to_merge.push(layer.clone()),
                Layer::File(f) => files.push(f.clone()),
                Layer::Rows { batch, .. } => batches.push(conform(batch, &schema)?),
            }
        }
        if !to_merge.is_empty() {
            let table_schema = self.schema.clone();
            let merged = tokio::task::spawn_blocking(move || {
                merge(&to_merge, &table_schema).map(|b| b.batch(&table_schema))
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::Execution(format!("table {}: {e}", self.name)))?;
            batches.push(merged);
        }
        let mut plans = Vec::new();
        if !files.is_empty() {
            let urls = files
                .iter()
                .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
                .collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema.clone());
            let listing = ListingTable::try_new(config)?;
            plans.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !batches.is_empty() || plans.is_empty() {
            let memory = MemTable::try_new(schema, vec![batches])?;
            plans.push(memory.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}

/// `batch` with the table's columns of now: rows frozen for a snapshot keep the schema
/// they were frozen with while the table may grow new columns, which they lack (null).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => column.clone(),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Marks `files` replaced: each is removed once no query reads it.
pub fn retire(files: &[Arc<ParquetFile>]) {
    for f in files {
        f.obsolete.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::Kind;
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use datafusion::prelude::SessionContext;

    /// Rows frozen for a snapshot, then a write adding a column: a query must read the
    /// frozen rows under the grown schema (it failed "Mismatch between schema and
    /// batches" before `conform`).
    #[tokio::test]
    async fn frozen_rows_are_read_under_a_schema_grown_since() {
        let mut old = TableSchema::default();
        old.columns.insert("v".into(), Kind::Integer);
        let frozen = RecordBatch::try_new(
            old.arrow(),
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![1, 2])),
                Arc::new(Int64Array::from(vec![10, 20])),
            ],
        )
        .expect("a batch");
        let mut grown = old.clone();
        grown.columns.insert("note".into(), Kind::Text);
        let view = TableView {
            name: "m".into(),
            schema: grown,
            layers: vec![Layer::Rows {
                batch: frozen,
                min_time: 1,
                max_time: 2,
            }],
        };
        let ctx = SessionContext::new();
        ctx.register_table("m", Arc::new(view)).expect("registered");
        let batches = ctx
            .sql("SELECT v, note FROM m ORDER BY time")
            .await
            .expect("planned")
            .collect()
            .await
            .expect("answered");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        assert_eq!(batches[0].column(1).null_count(), batches[0].num_rows());
    }
}
