//! Where a plugin's calls go right now ([`Route`], swapped whole by its supervisor), and
//! the serving generation as callers see it ([`Live`]): its clients, and the count of
//! calls in flight on it that a handover waits to drain.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::Status;

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

/// What the supervisor can do to a response stream still open when a handover must go
/// on: release its place in the drain and have it end with a status.
pub(crate) struct StreamSlot {
    state: Mutex<SlotState>,
    /// Woken when the host ends the call before its answer came.
    ended: tokio::sync::Notify,
    /// Set once the caller has sent its whole request.
    request_finished: Arc<AtomicBool>,
    /// Set once the answer's body has begun.
    pub(crate) answering: AtomicBool,
}

#[derive(Default)]
struct SlotState {
    /// The call's place in its generation's drain, until the stream ends.
    inflight: Option<InFlight>,
    /// Set when the host ends the stream: the status its caller gets.
    ended: Option<Status>,
    waker: Option<Waker>,
}

impl StreamSlot {
    pub(crate) fn holding(inflight: InFlight, request_finished: Arc<AtomicBool>) -> Self {
        Self {
            state: Mutex::new(SlotState {
                inflight: Some(inflight),
                ..SlotState::default()
            }),
            ended: tokio::sync::Notify::new(),
            request_finished,
            answering: AtomicBool::new(false),
        }
    }

    /// Whether the call is a stream a handover may end: its caller is still sending, or
    /// its answer is under way. A call that has sent everything and waits for its one
    /// answer (a unary call, a finished client stream) is left to finish, like an
    /// `invoke`: ending it would fail a call the plugin may have carried out.
    pub(crate) fn is_streaming(&self) -> bool {
        !self.request_finished.load(Ordering::Relaxed) || self.answering.load(Ordering::Relaxed)
    }

    /// Waits until the host ends the call; the status its caller gets.
    pub(crate) async fn ended(&self) -> Status {
        loop {
            let woken = self.ended.notified();
            if let Some(status) = self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ended
                .take()
            {
                return status;
            }
            woken.await;
        }
    }

    /// Ends the stream with `status`: its place in the drain is given back now (a
    /// caller that never polls again cannot hold a handover up), and its caller gets
    /// `status` at the next poll.
    pub(crate) fn end(&self, status: Status) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.inflight.take().is_none() {
            return; // over already
        }
        state.ended = Some(status);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        // A permit is kept if nobody waits yet; the waiter then finds `ended` set.
        self.ended.notify_one();
    }

    /// The status the host ended the stream with, if it has; else `waker` is woken
    /// when it does.
    pub(crate) fn ended_or_wake(&self, waker: &Waker) -> Option<Status> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ended = state.ended.take();
        if ended.is_none() {
            state.waker = Some(waker.clone());
        }
        ended
    }

    pub(crate) fn release(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inflight = None;
    }
}
