//! A write's rows on their way to a trigger's plugin: shared by every trigger the write
//! fires, joined with the writes queued behind it into one call (`Batch::join`), and
//! sent in the form the plugin's process reads — the messages (`WriteBatch.tables`), or
//! InfluxDB 3's `table_batches` ready for Python as a pickle (`pickle.rs`, made ahead of
//! the call by `ahead.rs`) or as JSON (`json.rs`, for a runner that predates the
//! pickle).

pub mod ahead;
pub mod json;
pub mod pickle;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prost::Message;

use crate::api::{Point, TableBatch, TriggerResult, WriteBatch};

/// One table's points of one write. Every trigger the write fires holds the same one,
/// and its pickle is made once, by the first delivery that sends it so.
#[derive(Debug)]
pub struct WrittenTable {
    pub name: String,
    pub points: Vec<Point>,
    pickle: OnceLock<Vec<u8>>,
    encoded_len: OnceLock<usize>,
}

impl WrittenTable {
    pub fn new(name: String, points: Vec<Point>) -> Self {
        WrittenTable {
            name,
            points,
            pickle: OnceLock::new(),
            encoded_len: OnceLock::new(),
        }
    }

    /// Its points' length as messages, counted once.
    fn encoded_len(&self) -> usize {
        *self.encoded_len.get_or_init(|| {
            TableBatch {
                table: self.name.clone(),
                points: Vec::new(),
            }
            .encoded_len()
                + self
                    .points
                    .iter()
                    .map(|p| {
                        let len = p.encoded_len();
                        1 + prost::length_delimiter_len(len) + len
                    })
                    .sum::<usize>()
        })
    }

    /// Its rows pickled, if made yet.
    #[cfg(test)]
    pub(crate) fn pickled(&self) -> Option<&[u8]> {
        self.pickle.get().map(Vec::as_slice)
    }

    /// Its rows pickled, made by the first who asks (a delivery, or the thread that
    /// pickles ahead); one who asks meanwhile waits for that one.
    pub fn pickle(&self) -> &[u8] {
        self.pickle.get_or_init(|| pickle::rows(&self.points))
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
/// of the writes it carries. Cheap to clone: the points are shared.
#[derive(Clone, Debug)]
pub struct Batch {
    pub head: WriteBatch,
    /// Each write's tables in the order of the writes; a table may come once per write.
    pub tables: Vec<Arc<WrittenTable>>,
    /// The writes it carries: 1, or more once joined.
    pub writes: u64,
}

impl Batch {
    /// The batch of one write, numbered `head.sequence`.
    pub fn new(head: WriteBatch, tables: Vec<Arc<WrittenTable>>) -> Self {
        Batch {
            head,
            tables,
            writes: 1,
        }
    }

    /// The number of its first write (`head.sequence` is its last's).
    pub fn first_sequence(&self) -> u64 {
        (self.head.sequence + 1).saturating_sub(self.writes)
    }

    /// About the bytes its rows take sent as `form` (the pickle's length, or the
    /// messages'; JSON is near the messages).
    pub fn sent_len(&self, form: RowsForm) -> usize {
        self.tables
            .iter()
            .map(|t| match form {
                RowsForm::Pickle => t.pickle().len(),
                RowsForm::Messages | RowsForm::Json => t.encoded_len(),
            })
            .sum()
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.points.len()).sum()
    }

    /// Takes the writes of `next`, the batch numbered after this one's last, into this
    /// one: a table's rows come in the order of the writes, as the rows of one table
    /// (InfluxDB 3 hands a plugin the writes of one WAL flush so, in one call).
    pub fn join(&mut self, next: Batch) {
        self.head.sequence = next.head.sequence;
        self.tables.extend(next.tables);
        self.writes += next.writes;
    }

    /// Each table once, in the order they first came, with its pieces in order.
    fn by_name(&self) -> Vec<(&str, Vec<&WrittenTable>)> {
        let mut named: Vec<(&str, Vec<&WrittenTable>)> = Vec::new();
        for table in &self.tables {
            let table: &WrittenTable = table;
            match named.iter_mut().find(|(name, _)| *name == table.name) {
                Some((_, pieces)) => pieces.push(table),
                None => named.push((&table.name, vec![table])),
            }
        }
        named
    }

    /// The call that sends this batch to a process reading `form`: the rows in that
    /// form only.
    pub fn sent_as(&self, form: RowsForm) -> WriteBatch {
        let mut sent = self.head.clone();
        let tables = self.by_name();
        match form {
            RowsForm::Messages => {
                sent.tables = tables
                    .into_iter()
                    .map(|(name, pieces)| TableBatch {
                        table: name.to_owned(),
                        points: pieces
                            .into_iter()
                            .flat_map(|t| t.points.iter().cloned())
                            .collect(),
                    })
                    .collect();
            }
            RowsForm::Json => {
                sent.table_batches_json =
                    json::table_batches_json(tables.into_iter().map(|(name, pieces)| {
                        (name, pieces.into_iter().map(|t| &t.points[..]).collect())
                    }))
                    .into_bytes();
            }
            RowsForm::Pickle => {
                sent.table_batches_pickle = pickle::list(
                    tables
                        .into_iter()
                        .map(|(name, pieces)| (name, pieces.into_iter().map(|t| t.pickle()))),
                );
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
        Batch::new(
            WriteBatch {
                trigger: "t".into(),
                args: [("a".into(), "1".into())].into(),
                database: "db".into(),
                sequence: 7,
                previous: 6,
                ..WriteBatch::default()
            },
            shared([("cpu".to_owned(), vec![point])].into()),
        )
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
        assert_eq!(
            batch.sent_len(RowsForm::Messages),
            messages.tables[0].encoded_len()
        );
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
    fn joined_writes_give_each_table_once_with_its_rows_in_the_order_of_the_writes() {
        let point = |t: i64| Point {
            time_ns: t,
            ..Point::default()
        };
        let mut joined = batch();
        let second = Batch::new(
            WriteBatch {
                sequence: 8,
                ..joined.head.clone()
            },
            shared(
                [
                    ("cpu".to_owned(), vec![point(6), point(7)]),
                    ("mem".to_owned(), vec![point(8)]),
                ]
                .into(),
            ),
        );
        joined.join(second);
        assert_eq!((joined.head.sequence, joined.head.previous), (8, 6));
        assert_eq!(joined.first_sequence(), 7);
        assert_eq!((joined.writes, joined.rows()), (2, 4));
        let messages = joined.sent_as(RowsForm::Messages);
        let tables: Vec<(&str, Vec<i64>)> = messages
            .tables
            .iter()
            .map(|t| {
                (
                    t.table.as_str(),
                    t.points.iter().map(|p| p.time_ns).collect(),
                )
            })
            .collect();
        assert_eq!(tables, [("cpu", vec![5, 6, 7]), ("mem", vec![8])]);
        let json = joined.sent_as(RowsForm::Json);
        assert_eq!(
            String::from_utf8_lossy(&json.table_batches_json),
            "[{\"table_name\":\"cpu\",\"rows\":[{\"time\":5},{\"time\":6},{\"time\":7}]},\
             {\"table_name\":\"mem\",\"rows\":[{\"time\":8}]}]"
        );
        // The pickle's reading is checked against Python in pickle.rs; here, that it
        // holds each table's name once.
        let pickled = joined.sent_as(RowsForm::Pickle).table_batches_pickle;
        let count = |name: &[u8]| pickled.windows(name.len()).filter(|w| *w == name).count();
        assert_eq!((count(b"cpu"), count(b"mem")), (1, 1));
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
