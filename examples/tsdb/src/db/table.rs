//! One table as queries see it: the Parquet files of past snapshots, the rows being
//! persisted, and the rows written since, as one DataFusion table. Layers whose times
//! are disjoint cannot hold the same row and are read as they are; where a newer layer's
//! times overlap an older one's (a late write), the overlapping layers are merged first,
//! so that the newest value of each field wins, as it does on write.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::RecordBatch;
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
                Layer::Rows { batch, .. } => batches.push(batch.clone()),
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

/// Marks `files` replaced: each is removed once no query reads it.
pub fn retire(files: &[Arc<ParquetFile>]) {
    for f in files {
        f.obsolete.store(true, Ordering::Release);
    }
}
