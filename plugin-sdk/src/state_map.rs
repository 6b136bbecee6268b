//! A key-value map that keeps track of what changed since each snapshot, so that a
//! plugin gets incremental snapshots (and the short handover pause they buy) without
//! writing any change tracking of its own.
//!
//! The map is persistent (`imbl::OrdMap`): a snapshot takes a copy of its root, which
//! costs the same for ten entries as for ten million, and writers carry on at once
//! while the copy is encoded. Keys changed after the latest cursor are kept in a set,
//! so a delta holds their values as of the next cursor, taken under the same lock.
//! Only the latest cursor is followed: a snapshot asked since any other one is whole.

mod codec;

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
pub use imbl::OrdMap;

use crate::StateImage;
pub use codec::{DecodeError, decode_delta, decode_full, encode_delta, encode_full};

/// A map whose snapshots can be deltas. One value serves every call: its methods take
/// `&self` and lock for as long as one map operation.
pub struct StateMap<K: Ord + Clone, V: Clone> {
    inner: Mutex<Inner<K, V>>,
    /// Makes this map's cursors its own: a cursor from another process (or an earlier
    /// map in this one) never matches, so it gets a whole state back.
    epoch: u64,
}

struct Inner<K, V> {
    map: OrdMap<K, V>,
    /// Keys written or removed since the latest cursor, while one is out.
    changed: BTreeSet<K>,
    /// How many cursors this map has handed out; 0: none yet, so nothing is tracked.
    issued: u64,
}

/// What [`StateMap::image_since`] took: the whole map or the entries that changed
/// (`None` for a key removed), with the cursors a [`StateImage`] carries.
pub struct Image<K, V> {
    /// The whole map, or the changes.
    pub changes: Changes<K, V>,
    /// For a delta: the cursor it follows.
    pub base_cursor: Bytes,
    /// The cursor the image is consistent as of.
    pub cursor: Bytes,
}

/// The content of an [`Image`].
pub enum Changes<K, V> {
    /// Every entry, as of the cursor.
    Full(OrdMap<K, V>),
    /// Every key changed since the base cursor, in key order, with its value as of the
    /// cursor (`None`: removed).
    Delta(Vec<(K, Option<V>)>),
}

impl<K, V> Image<K, V> {
    /// Encodes the image in the plugin's own format: `full` for a whole map, `delta`
    /// for the changes.
    pub fn encode(
        self,
        full: impl FnOnce(&OrdMap<K, V>) -> Vec<u8>,
        delta: impl FnOnce(&[(K, Option<V>)]) -> Vec<u8>,
    ) -> StateImage {
        let (data, is_delta) = match &self.changes {
            Changes::Full(map) => (full(map), false),
            Changes::Delta(changes) => (delta(changes), true),
        };
        StateImage {
            data: data.into(),
            delta: is_delta,
            base_cursor: if is_delta {
                self.base_cursor
            } else {
                Bytes::new()
            },
            cursor: self.cursor,
        }
    }
}

impl<K: Ord + Clone, V: Clone> Default for StateMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone, V: Clone> StateMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        let mut epoch = [0u8; 8];
        // Without the OS's randomness, the time and pid still tell maps apart.
        if getrandom::fill(&mut epoch).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            epoch = (now ^ u64::from(std::process::id()) << 32).to_le_bytes();
        }
        Self {
            inner: Mutex::new(Inner {
                map: OrdMap::new(),
                changed: BTreeSet::new(),
                issued: 0,
            }),
            epoch: u64::from_le_bytes(epoch),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // Every change under the lock is one map operation and one set insert, which
        // leave both whole even if a panic interrupts between them (the key is then
        // sent again in the next delta, which is harmless).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor(&self, n: u64) -> Bytes {
        let mut c = Vec::with_capacity(16);
        c.extend_from_slice(&self.epoch.to_le_bytes());
        c.extend_from_slice(&n.to_le_bytes());
        c.into()
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.lock().map.get(key).cloned()
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let mut inner = self.lock();
        if inner.issued > 0 {
            inner.changed.insert(key.clone());
        }
        inner.map.insert(key, value)
    }

    /// Removes `key`; returns the value it had.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut inner = self.lock();
        let (key, value) = inner.map.remove_with_key(key)?;
        if inner.issued > 0 {
            inner.changed.insert(key);
        }
        Some(value)
    }

    /// Sets `key` to `f` of its current value, in one step no other writer can come
    /// between; returns the new value. A counter's increment, say.
    pub fn update(&self, key: K, f: impl FnOnce(Option<&V>) -> V) -> V {
        let mut inner = self.lock();
        let value = f(inner.map.get(&key));
        if inner.issued > 0 {
            inner.changed.insert(key.clone());
        }
        inner.map.insert(key, value.clone());
        value
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True if the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }

    /// A consistent copy of the whole map, to read at leisure (it costs one pointer copy).
    pub fn read(&self) -> OrdMap<K, V> {
        self.lock().map.clone()
    }

    /// The map as of a new cursor: the changes since `since` if that is the latest
    /// cursor this map gave, else the whole map. Writers wait only while the root and
    /// the set of changed keys are taken.
    pub fn image_since(&self, since: Option<&[u8]>) -> Image<K, V> {
        let (map, changed, base_cursor, cursor) = {
            let mut inner = self.lock();
            let latest = (inner.issued > 0).then(|| self.cursor(inner.issued));
            let follows = matches!((&latest, since), (Some(l), Some(s)) if l[..] == *s);
            inner.issued += 1;
            let changed = std::mem::take(&mut inner.changed);
            let cursor = self.cursor(inner.issued);
            (
                inner.map.clone(),
                follows.then_some(changed),
                latest.unwrap_or_default(),
                cursor,
            )
        };
        let changes = match changed {
            Some(keys) => Changes::Delta(
                keys.into_iter()
                    .map(|k| {
                        let v = map.get(&k).cloned();
                        (k, v)
                    })
                    .collect(),
            ),
            None => Changes::Full(map),
        };
        Image {
            changes,
            base_cursor,
            cursor,
        }
    }

    /// Replaces the whole map (a restore). Cursors given before no longer follow.
    pub fn replace(&self, map: OrdMap<K, V>) {
        let mut inner = self.lock();
        inner.map = map;
        inner.changed.clear();
        // The next snapshot is whole, whatever cursor it is asked since.
        inner.issued = 0;
    }

    /// Applies changes (a delta's): `None` removes the key.
    pub fn apply(&self, changes: impl IntoIterator<Item = (K, Option<V>)>) {
        let mut inner = self.lock();
        for (key, value) in changes {
            if inner.issued > 0 {
                inner.changed.insert(key.clone());
            }
            match value {
                Some(v) => {
                    inner.map.insert(key, v);
                }
                None => {
                    inner.map.remove(&key);
                }
            }
        }
    }
}

/// A map of bytes to bytes in the SDK's own format (docs/incremental-state.md), so a
/// plugin keeping its state in one needs no encoding of its own either.
impl StateMap<Bytes, Bytes> {
    /// [`crate::Plugin::snapshot_since`] for this map.
    pub fn snapshot_since(&self, since: Option<&[u8]>) -> StateImage {
        self.image_since(since).encode(encode_full, encode_delta)
    }

    /// [`crate::Plugin::restore`] for this map: refuses bytes that are not a whole
    /// state in this format (INVALID_ARGUMENT), leaving the map as it was.
    pub fn restore(&self, state: Vec<u8>) -> Result<(), tonic::Status> {
        let map = decode_full(Bytes::from(state))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.replace(map);
        Ok(())
    }

    /// [`crate::Plugin::restore_delta`] for this map: refuses bytes that are not a
    /// delta in this format (INVALID_ARGUMENT), leaving the map as it was.
    pub fn restore_delta(&self, delta: Vec<u8>) -> Result<(), tonic::Status> {
        let changes = decode_delta(Bytes::from(delta))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.apply(changes);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
