//! InfluxDB 3's process-wide plugin cache (`cache.put(..., use_global=True)`), which
//! there every trigger shares because every trigger runs in the database's process.
//! Here each trigger has a process of its own, so the shared part lives in the
//! database: `tsdb.engine.v1.SharedCache` on the host-services socket. In memory only,
//! as InfluxDB keeps it; bounded in key, value and total size, since any plugin can fill
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_host::PluginIdentity;
use tonic::{Request, Response, Status};

use crate::api::shared_cache_server::SharedCache;
use crate::api::{CacheDeleted, CacheKey, CachePut, CachePutResponse, CacheValue};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most bytes of keys and values together.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

struct Entry {
    value: Vec<u8>,
    deadline: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|d| now < d)
    }
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Store {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= key.len() + entry.value.len();
        Some(entry)
    }

    /// Drops every expired entry: only when the store is full, so a get or put stays
    /// O(1) otherwise.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

/// The `SharedCache` service; clones share one store.
#[derive(Clone, Default)]
pub struct SharedCacheService {
    store: Arc<Mutex<Store>>,
}

fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("cache key: empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "cache key: {} bytes, over the shared cache's {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

impl SharedCacheService {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut store = self.store();
        match store.entries.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                store.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), Status> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(format!(
                "cache value of {key:?}: {} bytes, over the shared cache's {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        let now = Instant::now();
        let mut store = self.store();
        let old = store.remove(&key);
        let size = key.len() + value.len();
        if store.bytes + size > MAX_TOTAL_BYTES {
            store.sweep(now);
        }
        if store.bytes + size > MAX_TOTAL_BYTES {
            let held = store.bytes;
            if let Some(old) = old {
                store.bytes += key.len() + old.value.len();
                store.entries.insert(key.clone(), old);
            }
            return Err(Status::resource_exhausted(format!(
                "cache value of {key:?}: the shared cache holds {held} bytes; {size} more would \
                 pass its {MAX_TOTAL_BYTES}"
            )));
        }
        store.bytes += size;
        let deadline = ttl.and_then(|t| now.checked_add(t));
        store.entries.insert(key, Entry { value, deadline });
        Ok(())
    }

    fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        self.store().remove(key).is_some_and(|e| e.live(now))
    }
}

#[tonic::async_trait]
impl SharedCache for SharedCacheService {
    async fn get(&self, request: Request<CacheKey>) -> Result<Response<CacheValue>, Status> {
        PluginIdentity::of(&request)?;
        let key = request.into_inner().key;
        check_key(&key)?;
        Ok(Response::new(match SharedCacheService::get(self, &key) {
            Some(value) => CacheValue { found: true, value },
            None => CacheValue::default(),
        }))
    }

    async fn put(&self, request: Request<CachePut>) -> Result<Response<CachePutResponse>, Status> {
        PluginIdentity::of(&request)?;
        let CachePut { key, value, ttl_ms } = request.into_inner();
        check_key(&key)?;
        let ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        SharedCacheService::put(self, key, value, ttl)?;
        Ok(Response::new(CachePutResponse {}))
    }

    async fn delete(&self, request: Request<CacheKey>) -> Result<Response<CacheDeleted>, Status> {
        PluginIdentity::of(&request)?;
        let key = request.into_inner().key;
        check_key(&key)?;
        Ok(Response::new(CacheDeleted {
            existed: SharedCacheService::delete(self, &key),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_bounded_and_a_refused_put_keeps_the_old_value() {
        let cache = SharedCacheService::default();
        let big = vec![0u8; MAX_VALUE_BYTES];
        let mut n = 0;
        while cache.put(format!("k{n}"), big.clone(), None).is_ok() {
            n += 1;
            assert!(n < 100, "the total bound never refused");
        }
        assert_eq!(n, 63, "64 MiB holds 63 values of 1 MiB with their keys");
        let refused = cache
            .put("k0".into(), vec![1u8; MAX_VALUE_BYTES], None)
            .map(|_| ());
        // Replacing a value with one of the same size fits.
        assert!(refused.is_ok(), "{refused:?}");
        let err = cache
            .put("new".into(), big.clone(), None)
            .expect_err("past the total");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("64"), "{}", err.message());
        assert_eq!(cache.get("k0").map(|v| v[0]), Some(1));
        assert!(cache.delete("k0"));
        assert!(!cache.delete("k0"));
        assert!(cache.put("new".into(), big, None).is_ok());
    }

    #[test]
    fn an_expired_entry_is_gone_and_makes_room() {
        let cache = SharedCacheService::default();
        cache
            .put("short".into(), vec![1], Some(Duration::from_nanos(1)))
            .expect("put");
        let until = Instant::now() + Duration::from_secs(5);
        while cache.get("short").is_some() {
            assert!(Instant::now() < until, "never expired");
            std::thread::yield_now();
        }
        assert!(!cache.delete("short"));
        assert_eq!(cache.store().bytes, 0);
    }
}
