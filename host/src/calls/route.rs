//! Where a plugin's calls go right now ([`Route`], swapped whole by its supervisor), and
//! the serving generation as callers see it ([`Live`]): its clients, and the count of
//! calls in flight on it that a handover waits to drain.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::Status;

use crate::calls::channel::StreamSlot;
use crate::launch::{Generation, TokenService};

/// Where calls to a plugin go right now. Replaced as a whole by the supervisor.
#[derive(Clone)]
pub(crate) enum Route {
    /// The first process is starting: calls wait.
    Starting,
    /// The plugin's binary is not there yet (the daemon started before the first
    /// build): calls wait for it, and the reason says so if they time out.
    Waiting { reason: Arc<str> },
    /// Calls go to this generation.
    Serving(Arc<Live>),
    /// A handover is moving state between generations: calls wait, briefly.
    Held,
    /// The process died and a new one is coming: calls wait.
    Restarting { reason: Arc<str> },
    /// Calls fail at once with this reason: a crash loop, or stopped by an operator.
    Refusing { reason: Arc<str> },
    /// The host is stopping the plugin: calls fail at once.
    Stopped,
}

/// The serving generation, as callers need it.
pub(crate) struct Live {
    pub(crate) generation: u64,
    pub(crate) pid: u32,
    /// For calls to its application services.
    pub(crate) transport: TokenService<crate::launch::UnixClient>,
    /// The application services its `Describe` lists: all the daemon forwards to it
    /// (with reflection), whatever else its socket serves.
    pub(crate) services: BTreeSet<String>,
    pub(crate) exited: watch::Receiver<Option<String>>,
    /// Calls sent to this generation and not yet answered.
    inflight: AtomicUsize,
    /// Woken when `inflight` drops to zero.
    idle: Notify,
    /// Response streams of application-service calls still open here.
    streams: Mutex<Vec<Weak<StreamSlot>>>,
}

impl Live {
    /// The route's view of a generation that starts serving.
    pub(crate) fn of(generation: &Generation) -> Self {
        Self {
            generation: generation.number,
            pid: generation.pid,
            transport: generation.transport.clone(),
            services: generation.describe.services.iter().cloned().collect(),
            exited: generation.exited.clone(),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            streams: Mutex::new(Vec::new()),
        }
    }

    /// Keeps `slot` where [`end_streams`](Self::end_streams) finds it.
    pub(crate) fn register_stream(&self, slot: &Arc<StreamSlot>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|s| s.strong_count() > 0);
        streams.push(Arc::downgrade(slot));
    }

    /// Ends every stream still open here with `status`, giving back their places in
    /// the drain: for a handover that has waited long enough for them. Calls that only
    /// wait for their one answer are left to finish. Returns how many it ended.
    pub(crate) fn end_streams(&self, status: &Status) -> usize {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = 0;
        streams.retain(|slot| match slot.upgrade() {
            Some(slot) if slot.is_streaming() => {
                slot.end(status.clone());
                ended += 1;
                false
            }
            Some(_) => true,
            None => false,
        });
        ended
    }

    /// Counts a call in. Called only while the route is borrowed, so once the
    /// supervisor has replaced the route no new call can start on this generation.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Waits until no call is in flight here, giving open response streams `streams`
    /// to end by themselves before ending them with UNAVAILABLE and `why` (they would
    /// otherwise hold the state in place for as long as they stay open).
    pub(crate) async fn drained_ending_streams(&self, streams: Duration, why: &str) {
        if tokio::time::timeout(streams, self.drained()).await.is_err() {
            let ended = self.end_streams(&Status::unavailable(why.to_owned()));
            if ended > 0 {
                tracing::info!(
                    generation = self.generation,
                    ended,
                    "open streams ended: {why}"
                );
            }
            self.drained().await;
        }
    }

    /// Waits until no call is in flight here. The caller has already taken this
    /// generation out of the route, so the count can only fall.
    pub(crate) async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inflight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// One call in flight on a generation; counted out when dropped.
pub(crate) struct InFlight(Arc<Live>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts the call out, keeping the generation's details for the reply.
    pub(crate) fn leave(self) -> Arc<Live> {
        self.0.clone()
    }

    /// The generation, without counting the call out.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.0.clone()
    }
}

impl std::ops::Deref for InFlight {
    type Target = Live;
    fn deref(&self) -> &Live {
        &self.0
    }
}
