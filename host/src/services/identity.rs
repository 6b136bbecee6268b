//! Who is calling the host services: each running generation's launch token, the
//! plugin it names, and the uid its processes run as.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use baton_proto::TOKEN_METADATA_KEY;
use tonic::{Request, Status};

use super::ancestry::Process;
use crate::io::log_limit::LogLimiter;

/// Which plugin, and which generation of it, made a call to the host socket. The auth
/// layer puts it in every request's extensions before any service sees the request.
///
/// ```no_run
/// # use baton_host::PluginIdentity;
/// # async fn query(request: tonic::Request<String>) -> Result<tonic::Response<String>, tonic::Status> {
/// let caller = PluginIdentity::of(&request)?;
/// tracing::info!(plugin = %caller.name, generation = caller.generation, "query");
/// # Ok(tonic::Response::new(String::new())) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// The plugin's configured name.
    pub name: Arc<str>,
    /// The generation (process) that made the call.
    pub generation: u64,
}

impl PluginIdentity {
    /// The caller of `request`. Fails only for a request that did not come through the
    /// host socket, such as a service that is also served somewhere else.
    pub fn of<T>(request: &Request<T>) -> Result<&Self, Status> {
        request.extensions().get::<Self>().ok_or_else(|| {
            Status::unauthenticated("this call did not come through a baton host-services socket")
        })
    }
}

/// The launch tokens of the running generations, and whose they are.
///
/// Tokens are looked up in a `HashMap`, not compared one by one: the map's hash is keyed
/// per process (SipHash with a random key), so lookup time says nothing useful about a
/// guess, and a token is 256 random bits that only the host and its child ever see.
#[derive(Clone, Default)]
pub struct Registry {
    tokens: Arc<RwLock<HashMap<String, Admitted>>>,
}

/// What the host knows about one running generation's token.
struct Admitted {
    identity: PluginIdentity,
    /// The uid its processes run as.
    uid: u32,
    /// The budget its `Log` calls spend.
    log: LogLimiter,
    /// Its first process, the host's child, once it runs: what its processes descend
    /// from. Held with its start time, since the pid alone outlives the process: once
    /// the child is reaped (before this admission drops) a new child of the host, a
    /// neighbour's, may be given the same pid.
    root: Option<Process>,
}

impl Registry {
    /// Lets `token` call the host services as `identity`, from processes running as
    /// `uid`, until the returned admission is dropped (when its generation has ended);
    /// its `Log` calls spend `log`.
    pub(crate) fn admit(
        &self,
        token: &str,
        identity: PluginIdentity,
        uid: u32,
        log: LogLimiter,
    ) -> Admission {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.to_owned(),
                Admitted {
                    identity,
                    uid,
                    log,
                    root: None,
                },
            );
        Admission {
            registry: self.clone(),
            token: token.to_owned(),
        }
    }

    fn identify(&self, token: &str) -> Option<(PluginIdentity, LogLimiter)> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .map(|a| (a.identity.clone(), a.log.clone()))
    }

    /// Whether some running generation runs as `uid`: nobody else has any business
    /// connecting to the host services.
    pub(crate) fn admits_uid(&self, uid: u32) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|a| a.uid == uid)
    }

    /// The plugin process `pid` belongs to, by its ancestry (see [`super::ancestry`]).
    pub(crate) fn owner_of(&self, pid: u32) -> Option<Arc<str>> {
        let root = super::ancestry::host_child_above(pid)?;
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            // The pid and its start time: the process itself, not a later one with its pid.
            .find(|a| a.root == Some(root))
            .map(|a| a.identity.name.clone())
    }

    /// The auth check in front of every service on the host socket.
    pub(super) fn authenticate(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = match request.metadata().get(TOKEN_METADATA_KEY) {
            None => {
                return Err(Status::unauthenticated(format!(
                    "missing {TOKEN_METADATA_KEY} metadata: the host services answer only this \
                     host's plugins, which send their BATON_PLUGIN_TOKEN"
                )));
            }
            Some(token) => token.to_str().ok().and_then(|t| self.identify(t)),
        };
        let (identity, log) = identity.ok_or_else(|| {
            Status::unauthenticated(format!(
                "unknown {TOKEN_METADATA_KEY}: no running plugin of this host holds it \
                 (a token ends with its process)"
            ))
        })?;
        if let Some(peer) = request.extensions().get::<crate::io::accept::Peer>() {
            peer.authenticated();
        }
        request.extensions_mut().insert(identity);
        request.extensions_mut().insert(log);
        Ok(request)
    }
}

/// A generation's right to call the host services; revoked when dropped.
pub(crate) struct Admission {
    registry: Registry,
    token: String,
}

impl Admission {
    /// Records the generation's first process (the host's child), from which each of its
    /// processes descends.
    /// Called while the child is not yet reaped, so `pid` is still its own.
    pub(crate) fn rooted_at(&self, pid: u32) {
        self.root(super::ancestry::process(pid));
    }

    fn root(&self, root: Option<Process>) {
        if let Some(admitted) = self
            .registry
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.token)
        {
            admitted.root = root;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::test_limiter;

    fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> tonic::Code {
        r.expect_err("should be refused").code()
    }

    #[test]
    fn tokens_identify_until_their_generation_ends() {
        let registry = Registry::default();
        let who = PluginIdentity {
            name: Arc::from("notes"),
            generation: 3,
        };
        let admission = registry.admit("t0k3n", who.clone(), 0, test_limiter());
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, "t0k3n".parse().expect("metadata"));
        let admitted = registry.authenticate(request).expect("a known token");
        assert_eq!(PluginIdentity::of(&admitted).expect("identity"), &who);

        assert_eq!(
            code(registry.authenticate(Request::new(()))),
            tonic::Code::Unauthenticated
        );
        drop(admission);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, "t0k3n".parse().expect("metadata"));
        assert_eq!(
            code(registry.authenticate(request)),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_process_given_a_reaped_roots_pid_is_not_that_plugins() {
        let registry = Registry::default();
        let identity = |name: &str| PluginIdentity {
            name: Arc::from(name),
            generation: 1,
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let now = super::super::ancestry::process(child.id()).expect("the child runs");
        // Plugin old's root had this pid before: reaped, its admission not yet dropped.
        let old = registry.admit("old", identity("old"), 0, test_limiter());
        old.root(Some(Process {
            pid: now.pid,
            started: now.started.saturating_sub(1),
        }));
        assert_eq!(registry.owner_of(now.pid), None, "charged to old");
        let new = registry.admit("new", identity("new"), 0, test_limiter());
        new.rooted_at(child.id());
        assert_eq!(registry.owner_of(now.pid).as_deref(), Some("new"));
        let _ = child.kill();
        let _ = child.wait();
    }
}
