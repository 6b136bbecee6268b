//! A write's rows on their way to a trigger's plugin: shared by every trigger the write
//! fires, and sent in the form the plugin's process reads — the messages
//! (`WriteBatch.tables`), or InfluxDB 3's `table_batches` ready for Python as a pickle
//! (`pickle.rs`) or as JSON (`json.rs`, for a runner that predates the pickle).

pub mod json;
pub mod pickle;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::api::{Point, TableBatch, TriggerResult, WriteBatch};

/// One table's points of one write. Every trigger the write fires holds the same one,
/// and its pickle is made once, by the first delivery that sends it so.
#[derive(Debug)]
pub struct WrittenTable {
    pub name: String,
    pub points: Vec<Point>,
    pickle: OnceLock<Vec<u8>>,
}

impl WrittenTable {
    pub fn new(name: String, points: Vec<Point>) -> Self {
        WrittenTable {
            name,
            points,
            pickle: OnceLock::new(),
        }
    }

    fn pickle(&self) -> &[u8] {
        self.pickle
            .get_or_init(|| pickle::table(&self.name, &self.points))
    }
}

/// A write's tables, each shared from here on.
pub fn shared(tables: BTreeMap<String, Vec<Point>>) -> Vec<Arc<WrittenTable>> {
    tables
        .into_iter()
        .map(|(name, points)| Arc::new(WrittenTable::new(name, points)))
        .collect()
}

/// How a plugin's process reads a write's rows, as its OnWrite answer said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowsForm {
    /// `WriteBatch.tables`: any plugin, and a process that has not answered yet.
    Messages,
    /// `WriteBatch.table_batches_json`.
    Json,
    /// `WriteBatch.table_batches_pickle`, preferred when a process reads both.
    Pickle,
}

impl RowsForm {
    pub fn of(answer: &TriggerResult) -> Self {
        if answer.reads_table_batches_pickle {
            RowsForm::Pickle
        } else if answer.reads_table_batches_json {
            RowsForm::Json
        } else {
            RowsForm::Messages
        }
    }
}

/// One trigger's batch: the call's fields (`head`, its `tables` empty) and the tables
/// of the write it watches. Cheap to clone: the points are shared.
#[derive(Clone, Debug)]
pub struct Batch {
    pub head: WriteBatch,
    pub tables: Vec<Arc<WrittenTable>>,
}

impl Batch {
    /// The call that sends this batch to a process reading `form`: the rows in that
    /// form only.
    pub fn sent_as(&self, form: RowsForm) -> WriteBatch {
        let mut sent = self.head.clone();
        match form {
            RowsForm::Messages => {
                sent.tables = self
                    .tables
                    .iter()
                    .map(|t| TableBatch {
                        table: t.name.clone(),
                        points: t.points.clone(),
                    })
                    .collect();
            }
            RowsForm::Json => {
                sent.table_batches_json = json::table_batches_json(
                    self.tables.iter().map(|t| (t.name.as_str(), &t.points[..])),
                )
                .into_bytes();
            }
            RowsForm::Pickle => {
                sent.table_batches_pickle = pickle::list(self.tables.iter().map(|t| t.pickle()));
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        let point = Point {
            time_ns: 5,
            ..Point::default()
        };
        Batch {
            head: WriteBatch {
                trigger: "t".into(),
                args: [("a".into(), "1".into())].into(),
                database: "db".into(),
                sequence: 7,
                previous: 6,
                ..WriteBatch::default()
            },
            tables: shared([("cpu".to_owned(), vec![point])].into()),
        }
    }

    #[test]
    fn each_form_carries_the_call_and_the_rows_in_that_form_only() {
        let batch = batch();
        let messages = batch.sent_as(RowsForm::Messages);
        assert_eq!(
            messages.tables,
            vec![TableBatch {
                table: "cpu".into(),
                points: batch.tables[0].points.clone(),
            }]
        );
        assert!(messages.table_batches_json.is_empty() && messages.table_batches_pickle.is_empty());
        let json = batch.sent_as(RowsForm::Json);
        assert_eq!(
            String::from_utf8_lossy(&json.table_batches_json),
            "[{\"table_name\":\"cpu\",\"rows\":[{\"time\":5}]}]"
        );
        assert!(json.tables.is_empty() && json.table_batches_pickle.is_empty());
        let pickled = batch.sent_as(RowsForm::Pickle);
        assert!(pickled.tables.is_empty() && pickled.table_batches_json.is_empty());
        assert_eq!(pickled.table_batches_pickle[..2], [0x80, 4]);
        for sent in [messages, json, pickled] {
            let head = WriteBatch {
                tables: Vec::new(),
                table_batches_json: Vec::new(),
                table_batches_pickle: Vec::new(),
                ..sent
            };
            assert_eq!(head, batch.head);
        }
    }

    #[test]
    fn a_table_is_pickled_once_for_every_trigger() {
        let batch = batch();
        let again = batch.clone();
        let first = batch.sent_as(RowsForm::Pickle);
        let second = again.sent_as(RowsForm::Pickle);
        assert_eq!(first.table_batches_pickle, second.table_batches_pickle);
        let made = batch.tables[0].pickle.get().map(|p| p.as_ptr());
        assert_eq!(made, again.tables[0].pickle.get().map(|p| p.as_ptr()));
    }

    #[test]
    fn the_answer_picks_the_form() {
        let answer = |json, pickle| TriggerResult {
            reads_table_batches_json: json,
            reads_table_batches_pickle: pickle,
            ..TriggerResult::default()
        };
        assert_eq!(RowsForm::of(&answer(false, false)), RowsForm::Messages);
        assert_eq!(RowsForm::of(&answer(true, false)), RowsForm::Json);
        assert_eq!(RowsForm::of(&answer(true, true)), RowsForm::Pickle);
        assert_eq!(RowsForm::of(&answer(false, true)), RowsForm::Pickle);
    }
}
