//! Pickling a write's tables ahead of their delivery, on a thread of its own, for the
//! triggers whose process reads pickles. A trigger's calls follow one another, so a
//! table pickled by the delivery itself lengthens every call by that much, and the
//! table's points, written long before when batches queue, are no longer in the CPU's
//! caches (a pickle took 3–4x longer so). Pickled here just after the write, the points
//! are warm and the work runs beside the call in flight: the delivery finds the pickle
//! made, or waits for the one being made.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use super::WrittenTable;

/// Writes waiting for the thread; past this, a write's tables are left to the delivery.
const WAITING: usize = 256;

/// The pickling thread, started by the first write it is given.
#[derive(Default)]
pub struct Ahead {
    queue: OnceLock<Option<SyncSender<Vec<Arc<WrittenTable>>>>>,
}

impl Ahead {
    /// Has `tables` pickled soon, unless the thread is behind (or could not start):
    /// the write never waits for it.
    pub fn pickle(&self, tables: Vec<Arc<WrittenTable>>) {
        let queue = self.queue.get_or_init(|| {
            let (queue, writes) = sync_channel::<Vec<Arc<WrittenTable>>>(WAITING);
            let started = std::thread::Builder::new()
                .name("tsdb-pickle".into())
                .spawn(move || {
                    // Ends when the engine, and with it the sender, is gone.
                    for tables in writes {
                        for table in tables {
                            table.pickle();
                        }
                    }
                });
            match started {
                Ok(_) => Some(queue),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the thread that pickles writes ahead of their triggers' calls ({e}): each call pickles its own"
                    );
                    None
                }
            }
        });
        if let Some(queue) = queue {
            match queue.try_send(tables) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    tracing::warn!("the thread that pickles writes ahead has ended");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::api::Point;

    #[test]
    fn a_table_given_is_pickled_without_anyone_asking() {
        let ahead = Ahead::default();
        let table = Arc::new(WrittenTable::new(
            "cpu".into(),
            vec![Point {
                time_ns: 1,
                ..Point::default()
            }],
        ));
        ahead.pickle(vec![table.clone()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while table.pickled().is_none() {
            assert!(Instant::now() < deadline, "not pickled within 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            table.pickled(),
            Some(&super::super::pickle::rows(&table.points)[..])
        );
    }
}
