//! Each plugin's key-value store in the host: scoped to the plugin's name, kept across
//! its reloads and restarts, bounded in key, value and total size.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tonic::Status;

/// Size limits of each plugin's key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes. Default 1 KiB.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values together that one plugin may keep. Default 64 MiB.
    pub max_total_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_total_bytes: 64 << 20,
        }
    }
}

/// One plugin's keys and values.
#[derive(Default)]
struct Store {
    entries: BTreeMap<String, Bytes>,
    /// Bytes of keys and values, for `max_total_bytes`.
    bytes: usize,
}

/// Every plugin's key-value store, by plugin name, so a new generation sees what the
/// old one wrote. In memory: it lasts as long as the host process.
pub(crate) struct Kv {
    limits: KvLimits,
    plugins: Mutex<HashMap<Arc<str>, Store>>,
}

/// A key as error messages show it: long keys are cut.
pub(super) fn shown(key: &str) -> String {
    let cut: String = key.chars().take(64).collect();
    if cut.len() < key.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

impl Kv {
    pub(crate) fn new(limits: KvLimits) -> Self {
        Self {
            limits,
            plugins: Mutex::new(HashMap::new()),
        }
    }

    fn plugins(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Store>> {
        // Every update below is complete before the lock is released, so a poisoned
        // lock still guards a consistent map.
        self.plugins.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_key(&self, plugin: &str, key: &str) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the key is empty"
            )));
        }
        let max = self.limits.max_key_bytes;
        if key.len() > max {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the key {} is {} bytes, over the limit of {max} bytes (max_key_bytes)",
                shown(key),
                key.len()
            )));
        }
        Ok(())
    }

    pub(super) fn get(&self, plugin: &str, key: &str) -> Result<Option<Bytes>, Status> {
        self.check_key(plugin, key)?;
        Ok(self
            .plugins()
            .get(plugin)
            .and_then(|s| s.entries.get(key))
            .cloned())
    }

    pub(super) fn put(&self, plugin: &Arc<str>, key: String, value: Bytes) -> Result<(), Status> {
        self.check_key(plugin, &key)?;
        let max = self.limits.max_value_bytes;
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the value for {} is {} bytes, over the limit of {max} bytes (max_value_bytes)",
                shown(&key),
                value.len()
            )));
        }
        let mut plugins = self.plugins();
        let store = plugins.entry(plugin.clone()).or_default();
        let replaced = store.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let total = store.bytes - replaced + key.len() + value.len();
        let max = self.limits.max_total_bytes;
        if total > max {
            return Err(Status::resource_exhausted(format!(
                "key-value store of plugin {plugin}: storing {} would make it {total} bytes, over \
                 the limit of {max} bytes (max_total_bytes); delete keys first",
                shown(&key)
            )));
        }
        store.bytes = total;
        store.entries.insert(key, value);
        Ok(())
    }

    pub(super) fn delete(&self, plugin: &str, key: &str) -> Result<bool, Status> {
        self.check_key(plugin, key)?;
        let mut plugins = self.plugins();
        let Some(store) = plugins.get_mut(plugin) else {
            return Ok(false);
        };
        match store.entries.remove(key) {
            Some(value) => {
                store.bytes -= key.len() + value.len();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `limit` keys starting with `prefix` and after `start_after`, and whether
    /// more follow.
    pub(super) fn list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let plugins = self.plugins();
        let Some(store) = plugins.get(plugin) else {
            return (Vec::new(), false);
        };
        let from = if start_after >= prefix {
            Bound::Excluded(start_after)
        } else {
            Bound::Included(prefix)
        };
        let mut keys = store
            .entries
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix));
        let page: Vec<String> = keys.by_ref().take(limit).cloned().collect();
        let more = keys.next().is_some();
        (page, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> tonic::Code {
        r.expect_err("should be refused").code()
    }

    #[test]
    fn kv_limits_are_enforced_and_named() {
        let kv = Kv::new(KvLimits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_total_bytes: 40,
        });
        let p: Arc<str> = Arc::from("notes");
        let put = |k: &str, v: &[u8]| kv.put(&p, k.to_owned(), Bytes::copy_from_slice(v));

        let err = put("", b"x").expect_err("empty key");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("plugin notes"), "{}", err.message());

        let err = put("123456789", b"x").expect_err("long key");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("max_key_bytes"), "{}", err.message());
        assert!(
            err.message().contains("limit of 8 bytes"),
            "{}",
            err.message()
        );
        assert_eq!(
            code(kv.get("notes", "123456789")),
            tonic::Code::InvalidArgument
        );

        let err = put("k", &[0; 17]).expect_err("big value");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("max_value_bytes"),
            "{}",
            err.message()
        );

        // 2 x (1 + 16) = 34 bytes fit; a third entry of 17 does not.
        put("a", &[1; 16]).expect("fits");
        put("b", &[2; 16]).expect("fits");
        let err = put("c", &[3; 16]).expect_err("over the total");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("max_total_bytes"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("limit of 40 bytes"),
            "{}",
            err.message()
        );
        // Replacing a value counts the new size, not both.
        put("a", &[4; 10]).expect("a smaller value for a");
        put("c", &[3; 5]).expect("fits now");
        assert_eq!(
            kv.get("notes", "a").expect("get").as_deref(),
            Some(&[4; 10][..])
        );
        assert!(kv.delete("notes", "b").expect("delete"));
        assert!(!kv.delete("notes", "b").expect("delete again"));
        put("d", &[5; 16]).expect("room again after the delete");
        // Another plugin has a store of its own.
        assert_eq!(kv.get("other", "a").expect("get"), None);
    }

    #[test]
    fn kv_lists_by_prefix_in_pages() {
        let kv = Kv::new(KvLimits::default());
        let p: Arc<str> = Arc::from("notes");
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            kv.put(&p, k.into(), Bytes::new()).expect("put");
        }
        assert_eq!(
            kv.list("notes", "b/", "", 2),
            (vec!["b/1".into(), "b/2".into()], true)
        );
        assert_eq!(
            kv.list("notes", "b/", "b/2", 2),
            (vec!["b/3".into()], false)
        );
        assert_eq!(kv.list("notes", "", "b/3", 10), (vec!["c".into()], false));
        assert_eq!(kv.list("notes", "z", "", 10), (vec![], false));
        assert_eq!(kv.list("nobody", "", "", 10), (vec![], false));
    }
}
