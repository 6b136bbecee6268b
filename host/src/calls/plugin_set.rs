//! [`PluginSet`]: the plugins a host runs, by name, shared by everything that looks one
//! up per call (the control API, the daemon's forwarding, the resource monitor). A
//! config reload adds and removes plugins while they run; a lookup sees the set as
//! it was at one moment, never half a change.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tonic::Status;

use crate::calls::handle::PluginHandle;

/// See the module's documentation. Cheap to clone; every clone sees every change.
#[derive(Clone, Debug, Default)]
pub struct PluginSet {
    plugins: Arc<RwLock<Arc<BTreeMap<String, PluginHandle>>>>,
}

impl PluginSet {
    /// The plugin named `name`, if the host runs one.
    pub fn get(&self, name: &str) -> Option<PluginHandle> {
        self.now().get(name).cloned()
    }

    /// The plugin named `name`, or NOT_FOUND naming the plugins there are (the control
    /// API's answer to a name it does not know).
    pub(crate) fn find(&self, name: &str) -> Result<PluginHandle, Status> {
        self.get(name).ok_or_else(|| {
            Status::not_found(format!(
                "no plugin named {} in this host (it has: {})",
                crate::io::printable::quoted(name, 64),
                self.names().join(", ")
            ))
        })
    }

    /// Every plugin, by name, as the set is now.
    pub fn now(&self) -> Arc<BTreeMap<String, PluginHandle>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The names, for messages that list what there is.
    pub fn names(&self) -> Vec<String> {
        self.now().keys().cloned().collect()
    }

    pub(crate) fn insert(&self, name: &str, handle: PluginHandle) {
        self.change(|plugins| {
            plugins.insert(name.to_owned(), handle);
        });
    }

    pub(crate) fn remove(&self, name: &str) -> Option<PluginHandle> {
        let mut removed = None;
        self.change(|plugins| removed = plugins.remove(name));
        removed
    }

    fn change(&self, f: impl FnOnce(&mut BTreeMap<String, PluginHandle>)) {
        let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::clone(&plugins);
        f(&mut next);
        *plugins = Arc::new(next);
    }
}
